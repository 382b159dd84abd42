"""The error-bounded semantic cache through LangChain: RAG prompts, the chain cache, feedback."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import Generation
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.context import collect_runs
from langchain_tokenlean import TokenleanCache, TokenleanChainCache

from tokenlean import (
    CachePolicy,
    CompletionCache,
    ConfigurationError,
    Embedder,
    InvalidInputError,
    default_embedder,
    last_user_turn,
)
from tokenlean.testing import HashingEmbedder

pytestmark = pytest.mark.filterwarnings("ignore:The function `load` is in beta")

# LangChain's common RAG prompt (hub "rlm/rag-prompt"): one human message, question and context.
RAG_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "human",
            "You are an assistant for question-answering tasks. Use the following pieces of "
            "retrieved context to answer the question. If you don't know the answer, just say "
            "that you don't know. Use three sentences maximum and keep the answer concise.\n"
            "Question: {question} \nContext: {context} \nAnswer:",
        )
    ]
)
POLICY = (
    "Refunds are paid within 14 days of receiving the returned item. Return shipping is free "
    "for members; everyone else pays a flat fee of 5 euros. Gift cards cannot be returned or "
    "refunded. Items must be returned within 30 days of delivery, unused and in their box."
)
OUTLET_POLICY = "Outlet purchases are refunded as store credit within 30 days."
WARM_UP = [  # the route's first requests teach the template splitter the prompt's scaffolding
    ("What are the opening hours of the Lyon shop?", "The Lyon shop opens 9 to 6.", "9 to 6."),
    ("Do gift cards expire?", "Gift cards never expire.", "They never expire."),
    ("Where do parcels ship from?", "Parcels ship from the Leeds warehouse.", "From Leeds."),
    ("How fast does support answer?", "Support answers within one working day.", "In a day."),
]
QUESTIONS = [  # different questions over the one shared POLICY context
    ("How long does a refund take?", "Refunds are paid within 14 days."),
    ("Who pays for return shipping?", "Members ship returns for free."),
    ("Can I return a gift card?", "No, gift cards cannot be returned."),
]
REFUND_PARAPHRASES = [
    "How long do refunds take?",
    "How long will my refund take?",
    "How many days does a refund take?",
]


class MemoEmbedder:
    """The real embedder, remembering each text's vector so two tests calibrate for the price
    of one."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_name = getattr(inner, "model_name", None) or type(inner).__qualname__
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [text for text in dict.fromkeys(texts) if text not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self._vectors[text] for text in texts])


@pytest.fixture(scope="module")
def real_embedder() -> MemoEmbedder:
    return MemoEmbedder(default_embedder())


def paraphrase_pairs() -> list[tuple[str, str, bool]]:
    """Labelled support questions: rewordings of one request (same answer), and requests that
    differ in their verb only (different answers: the hard negatives)."""
    verbs = [("cancel", "renew"), ("delete", "create"), ("track", "return"),
             ("change", "verify"), ("upgrade", "downgrade"), ("pause", "resume"),
             ("share", "hide"), ("export", "import")]  # fmt: skip
    objects = ["subscription", "account", "order", "parcel", "invoice", "booking",
               "membership", "profile"]  # fmt: skip
    wordings = [("How do I {v} my {o}?", "How can I {v} my {o}?"),
                ("Can I {v} my {o}?", "Is it possible to {v} my {o}?"),
                ("Where do I {v} my {o}?", "Where can I {v} my {o}?"),
                ("I want to {v} my {o}.", "I would like to {v} my {o}.")]  # fmt: skip
    same, different = [], []
    for i, ((verb, opposite), obj) in enumerate(itertools.product(verbs, objects)):
        (a, b), (c, d) = wordings[i % 4], wordings[(i + 1) % 4]
        same.append((a.format(v=verb, o=obj), b.format(v=verb, o=obj), True))
        same.append((c.format(v=opposite, o=obj), d.format(v=opposite, o=obj), True))
        different.append((a.format(v=verb, o=obj), b.format(v=opposite, o=obj), False))
    return same + different


def calibrated(embedder: Embedder) -> CompletionCache:
    """A default error-bounded semantic cache given offline evidence, so it serves from the
    start."""
    cache = CompletionCache(policy=CachePolicy.semantic(), embedder=embedder, seed=0)
    cache.calibrate(paraphrase_pairs())
    assert cache.acceptance()["serving"]
    return cache


def plumbing_cache() -> CompletionCache:
    """An error-bounded cache on the hashing fake, calibrated until exploration is rare."""
    cache = CompletionCache(
        policy=CachePolicy.semantic(compare=last_user_turn), embedder=HashingEmbedder(), seed=0
    )
    cache.calibrate(
        [(f"where is parcel {i} now", f"where is parcel {i} now please", True) for i in range(400)]
    )
    assert cache.acceptance()["serving"]
    return cache


def marker(message: Any) -> dict[str, Any]:
    return dict(message.response_metadata.get("tokenlean_cache") or {})


# ------------------------------------------------------------------ RAG, end to end


@pytest.mark.slow
def test_rag_questions_over_one_context_never_hit_each_other_but_a_paraphrase_does(
    real_embedder: MemoEmbedder,
) -> None:
    """Through TokenleanCache, different questions over a shared context reach the model,
    while a paraphrase of an earlier question is served from the semantic layer."""
    answers = [a for *_, a in WARM_UP] + [a for _, a in QUESTIONS] + ["Outlet: 30 days."]
    model = FakeListChatModel(
        responses=answers + [QUESTIONS[0][1]] * len(REFUND_PARAPHRASES),
        cache=TokenleanCache(calibrated(real_embedder)),
    )
    chain = RAG_PROMPT | model
    for question, context, answer in WARM_UP:
        assert chain.invoke({"question": question, "context": context}).content == answer
    for question, answer in QUESTIONS:
        reply = chain.invoke({"question": question, "context": POLICY})
        assert reply.content == answer
        assert not marker(reply)
    other = chain.invoke({"question": QUESTIONS[0][0], "context": OUTLET_POLICY})
    assert other.content == "Outlet: 30 days."
    assert not marker(other)
    replies = [chain.invoke({"question": q, "context": POLICY}) for q in REFUND_PARAPHRASES]
    assert all(reply.content == QUESTIONS[0][1] for reply in replies)
    assert any(marker(reply).get("layer") == "semantic" for reply in replies)


@pytest.mark.slow
def test_the_chain_cache_compares_the_question_and_matches_other_inputs_exactly(
    real_embedder: MemoEmbedder,
) -> None:
    """TokenleanChainCache on "question": other questions over one context miss, the same
    question over another context misses, and a paraphrase hits."""
    answers = [a for _, a in QUESTIONS] + ["Outlet: 30 days."]
    model = FakeListChatModel(responses=answers + [QUESTIONS[0][1]] * len(REFUND_PARAPHRASES))
    cached = TokenleanChainCache(
        RAG_PROMPT | model, cache=calibrated(real_embedder), question_key="question", name="rag"
    )
    for question, answer in QUESTIONS:
        assert cached.invoke({"question": question, "context": POLICY}).content == answer
        assert cached.last_lookup is not None
        assert not cached.last_lookup.hit
    other = cached.invoke({"question": QUESTIONS[0][0], "context": OUTLET_POLICY})
    assert other.content == "Outlet: 30 days."
    layers = []
    for question in REFUND_PARAPHRASES:
        assert cached.invoke({"question": question, "context": POLICY}).content == QUESTIONS[0][1]
        layers.append(cached.last_lookup.layer if cached.last_lookup.hit else None)  # type: ignore[union-attr]
    assert "semantic" in layers


# ------------------------------------------------------------------ feedback on TokenleanCache


def test_feedback_on_a_hit_message_removes_its_entry_and_counts_as_evidence() -> None:
    """A thumbs-down on a served message deletes the entry (the next call reaches the model)
    and adds one row of evidence."""
    cache = plumbing_cache()
    adapter = TokenleanCache(cache)
    model = FakeListChatModel(responses=["In transit.", "At the depot."], cache=adapter)
    model.invoke("where is my parcel now")
    hit = model.invoke("where is my parcel now please")
    assert hit.content == "In transit."
    assert marker(hit)["layer"] == "semantic"
    assert marker(hit)["lookup_id"]
    before = cache.acceptance()["evidence"]
    assert adapter.feedback(hit, correct=False) is True
    assert cache.acceptance()["evidence"] == before + 1
    assert cache.acceptance()["evidence_wrong"] == 1
    assert model.invoke("where is my parcel now please").content == "At the depot."


def test_feedback_needs_the_marker_of_a_semantic_hit() -> None:
    """A message the cache did not serve, or served as an exact hit, is refused."""
    adapter = TokenleanCache(plumbing_cache())
    with pytest.raises(InvalidInputError, match="marker"):
        adapter.feedback(AIMessage("a fresh answer"), correct=False)
    with pytest.raises(InvalidInputError, match="marker"):
        adapter.feedback(Generation(text="a fresh answer"), correct=False)
    model = FakeListChatModel(responses=["In transit."], cache=adapter)
    model.invoke("where is my parcel now")
    exact = model.invoke("where is my parcel now")
    assert marker(exact)["layer"] == "exact"
    with pytest.raises(InvalidInputError, match="exact"):
        adapter.feedback(exact, correct=False)


def test_a_plain_text_semantic_hit_carries_its_marker_in_generation_info() -> None:
    """An LLM's Generation served semantically is marked and accepted by feedback; an exact
    hit is returned exactly as it was stored."""
    cache = plumbing_cache()
    adapter = TokenleanCache(cache)
    adapter.update("where is my parcel now", "fake-llm", [Generation(text="In transit.")])
    assert adapter.lookup("where is my parcel now", "fake-llm") == [Generation(text="In transit.")]
    (hit,) = adapter.lookup("where is my parcel now please", "fake-llm") or []
    assert hit.text == "In transit."
    info = (hit.generation_info or {})["tokenlean_cache"]
    assert info["layer"] == "semantic"
    assert info["lookup_id"]
    before = cache.acceptance()["evidence"]
    assert adapter.feedback(hit, correct=True) is True
    assert cache.acceptance()["evidence"] == before + 1
    assert adapter.feedback(info["lookup_id"], correct=False) is True  # a lookup id works too
    assert adapter.lookup("where is my parcel now please", "fake-llm") is None


async def test_afeedback_removes_a_wrong_entry_from_async_code() -> None:
    """afeedback on a hit from ainvoke removes the entry like feedback."""
    adapter = TokenleanCache(plumbing_cache())
    model = FakeListChatModel(responses=["In transit.", "At the depot."], cache=adapter)
    await model.ainvoke("where is my parcel now")
    hit = await model.ainvoke("where is my parcel now please")
    assert marker(hit)["layer"] == "semantic"
    assert await adapter.afeedback(hit, correct=False) is True
    assert (await model.ainvoke("where is my parcel now please")).content == "At the depot."


# ------------------------------------------------------------------ TokenleanChainCache


def counting_chain(calls: list[dict[str, Any]], output: Any = None) -> RunnableLambda[Any, Any]:
    """A chain that records its inputs and answers with ``output`` (default: an AIMessage)."""

    def run(inputs: dict[str, Any]) -> Any:
        calls.append(inputs)
        if output is not None:
            return output
        return AIMessage(f"answer {len(calls)}", usage_metadata={
            "input_tokens": 10, "output_tokens": 2, "total_tokens": 12})  # fmt: skip

    return RunnableLambda(run)


def test_chain_cache_feedback_on_inputs_removes_the_served_entry() -> None:
    """feedback(inputs) reaches the semantic hit last served for those inputs; inputs whose
    last answer came from the chain give False."""
    cache = plumbing_cache()
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=cache, name="parcels")
    first = {"question": "where is my parcel now", "context": "order 7"}
    paraphrase = {"question": "where is my parcel now please", "context": "order 7"}
    assert cached.invoke(first).content == "answer 1"
    hit = cached.invoke(paraphrase)
    assert hit.content == "answer 1"
    assert marker(hit)["layer"] == "semantic"
    assert hit.usage_metadata["total_tokens"] == 0  # type: ignore[index]
    assert cached.feedback(first, correct=False) is False  # answered by the chain
    before = cache.acceptance()["evidence"]
    assert cached.feedback(paraphrase, correct=False) is True
    assert cache.acceptance()["evidence"] == before + 1
    assert cached.invoke(paraphrase).content == "answer 2"
    assert cached.feedback(paraphrase, correct=False) is False  # nothing served since


@pytest.mark.parametrize(
    "output",
    ["a plain string", {"answer": "yes", "sources": [1, 2], "lc": 3}, AIMessage("a message")],
    ids=["str", "dict", "message"],
)
def test_chain_cache_round_trips_str_dict_and_message_outputs(output: Any) -> None:
    """A cached output comes back equal to the chain's, and the chain runs once."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls, output), cache=CompletionCache(), name="c")
    inputs = {"question": "q", "context": ["doc one", "doc two"]}
    assert cached.invoke(inputs) == output
    again = cached.invoke(inputs)
    assert len(calls) == 1
    if isinstance(output, AIMessage):
        assert again.content == output.content
        assert marker(again)["layer"] == "exact"
    else:
        assert again == output


def test_a_missing_question_key_is_a_configuration_error_naming_it() -> None:
    """Inputs without the question key are refused before the chain runs."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=CompletionCache(), name="c",
                                 question_key="query")  # fmt: skip
    with pytest.raises(ConfigurationError, match="'query'"):
        cached.invoke({"question": "where is my parcel"})
    with pytest.raises(InvalidInputError):
        cached.invoke({"query": ["not", "a", "string"]})
    assert calls == []


def test_unserializable_inputs_or_outputs_are_not_cached_and_never_fail_the_call() -> None:
    """An input or output with no serialized form sends every call to the chain."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=CompletionCache(), name="c")
    handle = object()
    cached.invoke({"question": "q", "handle": handle})
    cached.invoke({"question": "q", "handle": handle})
    assert len(calls) == 2
    opaque = TokenleanChainCache(counting_chain(calls, output=object()), cache=CompletionCache(),
                                 name="o")  # fmt: skip
    opaque.invoke({"question": "q"})
    opaque.invoke({"question": "q"})
    assert len(calls) == 4


def test_bypass_metadata_skips_the_cache() -> None:
    """A call marked {"tokenlean_cache": "bypass"} neither reads nor writes the cache."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=CompletionCache(), name="c")
    bypass = {"metadata": {"tokenlean_cache": "bypass"}}
    cached.invoke({"question": "q"}, config=bypass)  # type: ignore[arg-type]
    cached.invoke({"question": "q"}, config=bypass)  # type: ignore[arg-type]
    assert len(calls) == 2
    cached.invoke({"question": "q"})
    assert cached.invoke({"question": "q"}).content == "answer 3"


async def test_ainvoke_uses_the_cache() -> None:
    """ainvoke stores the chain's output and answers the repeat from the cache."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=CompletionCache(), name="c")
    first = await cached.ainvoke({"question": "q", "context": "c"})
    again = await cached.ainvoke({"question": "q", "context": "c"})
    assert first.content == again.content == "answer 1"
    assert len(calls) == 1


def test_the_chain_runs_as_a_child_of_the_wrapper_and_not_at_all_on_a_hit() -> None:
    """Tracing shows the chain's run under the wrapper's on a miss and no chain run on a hit."""
    calls: list[dict[str, Any]] = []
    cached = TokenleanChainCache(counting_chain(calls), cache=CompletionCache(), name="faq")
    with collect_runs() as runs:
        cached.invoke({"question": "q"})
        cached.invoke({"question": "q"})
    miss, hit = runs.traced_runs
    assert miss.name == hit.name == "faq"
    assert [run.name for run in miss.child_runs] == ["run"]
    assert hit.child_runs == []


def test_a_chat_model_can_judge_answers_for_the_cache() -> None:
    """LangChainAnswerJudge asks the model; yes, no and anything else map to True, False, None."""
    from langchain_core.language_models import FakeListChatModel
    from langchain_tokenlean import LangChainAnswerJudge

    judge = LangChainAnswerJudge(FakeListChatModel(responses=["Yes.", "no", "Maybe"]))
    assert judge("Refunds take 14 days.", "You get your money back within two weeks.") is True
    assert judge("Refunds take 14 days.", "Refunds are not possible.") is False
    assert judge("Open at nine.", "Closed on Sundays.") is None
    assert judge("Same text.", "same text") is True  # equal texts need no model call
