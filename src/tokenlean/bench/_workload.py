"""The bundled benchmark workload: a support copilot, generated from a seed.

A long, stable policy and tool schemas; a document collection of product facts; many users,
each over several sessions, asking about those facts (the popular products come up again and
again, in two wordings, across users), about their own details and about the product they
bought (two hops: the purchase stated in the conversation, then that product's documentation).
Facts change over time: a user's delivery city moves between sessions, and part of the
documentation is updated halfway through the run; the latest value must win. Every question has
a gold answer (the value in force when it is asked) and the ids of the evidence that supports it.

Users are concurrent: the run is a sequence of *waves*, and each wave holds at most one
question per user (users start up to two waves apart), which is what lets requests from
different users be batched together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Question", "Session", "Workload", "generate_workload"]

_PRODUCTS = [
    "Aurora router",
    "Nimbus camera",
    "Pulse earbuds",
    "Atlas laptop",
    "Echo speaker",
    "Orbit watch",
    "Vega tablet",
    "Lumen lamp",
    "Terra drone",
    "Nova phone",
    "Iris monitor",
    "Zephyr fan",
]
_POPULAR = 6  # the first products are asked about most
_FILLER = [
    "it is sold in every region through the online store and selected partners",
    "the box contains the device, a quick start guide and the regulatory leaflet",
    "clean it with a dry cloth and keep it away from heat sources and liquids",
    "it meets the applicable safety, radio and environmental regulations",
    "compatible accessories are listed on the product page and sold separately",
    "support is available by chat and email in the customer's language",
    "orders leave the warehouse within one business day of payment",
    "the device and its packaging can be recycled at any collection point",
]
_TOPICS = [
    "overview",
    "packaging",
    "care",
    "compliance",
    "accessories",
    "support",
    "shipping",
    "recycling",
]
_CITIES = ["Lyon", "Oslo", "Porto", "Kyoto", "Quebec", "Recife", "Gdansk", "Tartu"]
# attribute: (statement, question, paraphrase, question about the purchased product, values)
_ATTRIBUTES = {
    "warranty": (
        "The {p} comes with a warranty of {v} months.",
        "How long is the warranty on the {p}?",
        "What warranty period does the {p} have?",
        "How long is the warranty on the product I bought?",
        [12, 18, 24, 36],
    ),
    "battery": (
        "The battery of the {p} lasts {v} hours on a full charge.",
        "How many hours does the {p} battery last?",
        "What is the battery life of the {p}?",
        "How long does the battery of the product I bought last?",
        [6, 9, 14, 20, 30],
    ),
    "return": (
        "Returns of the {p} are accepted within {v} days of delivery.",
        "How many days do I have to return the {p}?",
        "What is the return window for the {p}?",
        "How many days do I have to return the product I bought?",
        [14, 30, 45, 60],
    ),
    "charging": (
        "The {p} charges fully in {v} minutes.",
        "How long does the {p} take to charge?",
        "How many minutes does a full charge of the {p} take?",
        "How long does the product I bought take to charge?",
        [45, 60, 90, 120],
    ),
}


@dataclass(frozen=True)
class Question:
    """A question with its gold answer and evidence (document ids or statement ids).

    ``fact`` is ``"<product> <attribute>"``, ``"purchase <attribute>"`` (two hops) or
    ``"delivery city"``; ``wave`` is when it is asked; ``hops`` is 2 for the purchase questions.
    """

    id: str
    text: str
    answer: str
    fact: str
    evidence: tuple[str, ...]
    wave: int = 0
    hops: int = 1


@dataclass
class Session:
    """One user session: turns stating facts, then questions."""

    user: str
    number: int
    statements: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass
class Workload:
    """The generated workload; ``updates`` maps a wave to the documents replaced before it."""

    policy: str
    tools: list[dict[str, object]]
    documents: list[dict[str, str]]
    sessions: list[Session]
    updates: dict[int, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def questions(self) -> int:
        return sum(len(s.questions) for s in self.sessions)

    def waves(self) -> list[list[tuple[Session, Question]]]:
        """The questions grouped by wave, in user order within a wave."""
        by_wave: dict[int, list[tuple[Session, Question]]] = {}
        for session in self.sessions:
            for question in session.questions:
                by_wave.setdefault(question.wave, []).append((session, question))
        last = max(by_wave, default=-1)
        return [by_wave.get(w, []) for w in range(last + 1)]


def _policy() -> str:
    rules = [
        "Always answer with the exact figure from the product documentation.",
        "Never guess: if the documentation does not say, say you do not know.",
        "Use the customer's latest stated delivery city, not an older one.",
        "When the customer refers to the product they bought, use the purchase they stated.",
        "Keep answers to one sentence.",
    ]
    return "You are the support copilot of Northwind Devices.\n\n" + "\n".join(
        f"- {rule} (section {i // len(rules) + 1})" for i, rule in enumerate(rules * 20)
    )


def _tools() -> list[dict[str, object]]:
    def tool(name: str, description: str, argument: str) -> dict[str, object]:
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {argument: {"type": "string", "description": f"The {argument}."}},
                    "required": [argument],
                },
            },
        }

    return [
        tool("lookup_order", "Find an order by its number.", "order"),
        tool("open_return", "Open a return for an order.", "order"),
        tool("update_address", "Change the delivery city of the customer.", "city"),
    ]


def generate_workload(
    *,
    users: int = 12,
    sessions_per_user: int = 2,
    questions_per_session: int = 5,
    updated_facts: int = 3,
    seed: int = 7,
) -> Workload:
    """A reproducible workload (the same arguments give the same workload).

    Each session states a delivery city and a purchase, then asks ``questions_per_session``
    questions: product facts, one about the purchased product (when there are at least three
    questions) and, last, the delivery city. ``updated_facts`` product facts change halfway.
    """
    rng = random.Random(seed)
    documents: list[dict[str, str]] = []
    values: dict[tuple[str, str], int] = {}
    fillers: dict[str, str] = {}
    for product in _PRODUCTS:
        for attribute, (template, *_rest, choices) in _ATTRIBUTES.items():
            doc_id = f"doc-{product.split()[0].lower()}-{attribute}"
            fillers[doc_id] = " ".join(
                f"{product} {topic}: {rng.choice(_FILLER)}." for topic in _TOPICS
            )
            values[(product, attribute)] = rng.choice(choices)
            text = f"{fillers[doc_id]} {template.format(p=product, v=values[(product, attribute)])}"
            documents.append({"id": doc_id, "text": text})

    waves = sessions_per_user * questions_per_session + 2
    update_wave = waves // 2
    new_values: dict[tuple[str, str], int] = {}
    updated: list[dict[str, str]] = []
    for product, attribute in rng.sample(
        [(p, a) for p in _PRODUCTS[:_POPULAR] for a in _ATTRIBUTES], updated_facts
    ):
        template, *_rest, choices = _ATTRIBUTES[attribute]
        value = rng.choice([c for c in choices if c != values[(product, attribute)]])
        new_values[(product, attribute)] = value
        doc_id = f"doc-{product.split()[0].lower()}-{attribute}"
        text = f"{fillers[doc_id]} {template.format(p=product, v=value)}"
        updated.append({"id": doc_id, "text": text})

    def value_at(product: str, attribute: str, wave: int) -> str:
        if wave >= update_wave and (product, attribute) in new_values:
            return str(new_values[(product, attribute)])
        return str(values[(product, attribute)])

    def doc_of(product: str, attribute: str) -> str:
        return f"doc-{product.split()[0].lower()}-{attribute}"

    sessions = []
    for user_index in range(users):
        user = f"user{user_index}"
        city = rng.choice(_CITIES)
        offset = user_index % 3
        for number in range(sessions_per_user):
            session = Session(user, number)
            if number == 0 or rng.random() < 0.6:  # the delivery city changes over time
                city = rng.choice([c for c in _CITIES if c != city])
            bought = rng.choice(_PRODUCTS)
            session.statements.append(f"Please deliver my orders to {city} from now on.")
            session.statements.append(f"I bought the {bought} last week.")
            for q in range(questions_per_session):
                wave = offset + number * questions_per_session + q
                qid = f"{user}-s{number}-q{q}"
                if q == questions_per_session - 1:
                    session.questions.append(
                        Question(
                            qid,
                            "Which city should my order be delivered to?",
                            city,
                            "delivery city",
                            (f"{user}:s{number}:city",),
                            wave=wave,
                        )
                    )
                    continue
                attribute = rng.choice(list(_ATTRIBUTES))
                _template, ask, paraphrase, about_purchase, _choices = _ATTRIBUTES[attribute]
                if q == questions_per_session - 2 and questions_per_session >= 3:
                    session.questions.append(
                        Question(
                            qid,
                            about_purchase,
                            value_at(bought, attribute, wave),
                            f"purchase {attribute}",
                            (f"{user}:s{number}:purchase", doc_of(bought, attribute)),
                            wave=wave,
                            hops=2,
                        )
                    )
                    continue
                product = rng.choice(_PRODUCTS[:_POPULAR])
                text = (ask if rng.random() < 0.5 else paraphrase).format(p=product)
                session.questions.append(
                    Question(
                        qid,
                        text,
                        value_at(product, attribute, wave),
                        f"{product} {attribute}",
                        (doc_of(product, attribute),),
                        wave=wave,
                    )
                )
            sessions.append(session)
    return Workload(_policy(), _tools(), documents, sessions, {update_wave: updated})
