"""The bundled benchmark workload: a support copilot, generated from a seed.

A long, stable policy and tool schemas; a document collection of product facts; users over
several sessions asking about those facts (with repeated and paraphrased questions across users)
and about their own details, which change over time (the latest value must win). Every question
has a gold answer and the ids of the evidence (documents or turns) that support it.
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
]
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
_CITIES = ["Lyon", "Oslo", "Porto", "Kyoto", "Quebec", "Recife", "Gdansk", "Tartu"]
_ATTRIBUTES = {
    "warranty": (
        "The {p} comes with a warranty of {v} months.",
        "How long is the warranty on the {p}?",
        "What warranty period does the {p} have?",
        [12, 18, 24, 36],
    ),
    "battery": (
        "The battery of the {p} lasts {v} hours on a full charge.",
        "How many hours does the {p} battery last?",
        "What is the battery life of the {p}?",
        [6, 9, 14, 20, 30],
    ),
    "return": (
        "Returns of the {p} are accepted within {v} days of delivery.",
        "How many days do I have to return the {p}?",
        "What is the return window for the {p}?",
        [14, 30, 45, 60],
    ),
}


@dataclass(frozen=True)
class Question:
    """A question with its gold answer and evidence (document ids or ``turn:<n>`` ids)."""

    id: str
    text: str
    answer: str
    fact: str
    evidence: tuple[str, ...]
    easy: bool = True


@dataclass
class Session:
    """One user session: turns stating facts, then questions."""

    user: str
    number: int
    statements: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass
class Workload:
    policy: str
    tools: list[dict[str, object]]
    documents: list[dict[str, str]]
    sessions: list[Session]

    @property
    def questions(self) -> int:
        return sum(len(s.questions) for s in self.sessions)


def generate_workload(
    *, users: int = 12, sessions_per_user: int = 2, questions_per_session: int = 5, seed: int = 7
) -> Workload:
    """A reproducible workload (the same seed gives the same workload)."""
    rng = random.Random(seed)
    rules = [
        "Always answer with the exact figure from the product documentation.",
        "Never guess: if the documentation does not say, say you do not know.",
        "Use the customer's latest stated delivery city, not an older one.",
        "Keep answers to one sentence.",
    ]
    policy = "You are the support copilot of Northwind Devices.\n\n" + "\n".join(
        f"- {rule} (section {i // len(rules) + 1})" for i, rule in enumerate(rules * 25)
    )
    tools: list[dict[str, object]] = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order.",
                "parameters": {
                    "type": "object",
                    "properties": {"order": {"type": "string", "description": "The order number."}},
                },
            },
        }
    ]
    documents: list[dict[str, str]] = []
    facts: dict[tuple[str, str], tuple[str, str]] = {}
    for product in _PRODUCTS:
        for attribute, (template, *_rest, values) in _ATTRIBUTES.items():
            value = rng.choice(values)
            doc_id = f"doc-{product.split()[0].lower()}-{attribute}"
            filler = (
                " ".join(
                    f"{product} {topic}: {rng.choice(_FILLER)}."
                    for topic in (
                        "overview",
                        "packaging",
                        "care",
                        "compliance",
                        "accessories",
                        "support",
                        "shipping",
                        "recycling",
                    )
                )
                + " "
            )
            documents.append({"id": doc_id, "text": filler + template.format(p=product, v=value)})
            facts[(product, attribute)] = (str(value), doc_id)
    sessions = []
    for user_index in range(users):
        user = f"user{user_index}"
        city = rng.choice(_CITIES)
        for number in range(sessions_per_user):
            session = Session(user, number)
            if number == 0 or rng.random() < 0.6:  # the delivery city changes over time
                city = rng.choice([c for c in _CITIES if c != city])
            session.statements.append(f"Please deliver my orders to {city} from now on.")
            for q in range(questions_per_session):
                if q == questions_per_session - 1:
                    session.questions.append(
                        Question(
                            f"{user}-s{number}-q{q}",
                            "Which city should my order be delivered to?",
                            city,
                            "delivery city",
                            (f"{user}:s{number}:statement",),
                            easy=True,
                        )
                    )
                    continue
                product = rng.choice(_PRODUCTS[:6])  # popular products repeat across users
                attribute = rng.choice(list(_ATTRIBUTES))
                _template, ask, paraphrase, _values = _ATTRIBUTES[attribute]
                answer, doc_id = facts[(product, attribute)]
                text = (ask if rng.random() < 0.5 else paraphrase).format(p=product)
                session.questions.append(
                    Question(
                        f"{user}-s{number}-q{q}",
                        text,
                        answer,
                        f"{product} {attribute}",
                        (doc_id,),
                        easy=attribute != "return",
                    )
                )
            sessions.append(session)
    return Workload(policy, tools, documents, sessions)
