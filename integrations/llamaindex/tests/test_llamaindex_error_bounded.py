"""The error-bounded semantic cache through LlamaIndex: CachedLLM in a condense-question chat,
CachedQueryEngine over an index, and user feedback on served hits."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.generic_utils import messages_to_history_str
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, LLMMetadata
from llama_index.core.base.response.schema import Response
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine import CondenseQuestionChatEngine
from llama_index.core.chat_engine.condense_question import DEFAULT_TEMPLATE
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from llama_index.llms.tokenlean import CachedLLM
from llama_index.query_engine.tokenlean import CachedQueryEngine

from tokenlean import CachePolicy, CompletionCache, InvalidInputError, last_user_turn
from tokenlean.testing import HashingEmbedder

# ---------------------------------------------------------------------------- evidence

TOPICS = [
    "the refund", "my order", "the invoice", "my subscription", "the warranty", "the delivery",
    "my password", "the discount code", "my account", "the return label", "the gift card",
    "my reservation", "the repair", "my membership", "the exchange", "the installation",
    "my booking", "the replacement", "my loyalty points", "the price match",
]  # fmt: skip

# Each intent has two phrasings with one meaning; different intents ask different things.
INTENTS = [
    ("How long does {} take?", "How much time does {} take?"),
    ("Can I cancel {}?", "Is it possible to cancel {}?"),
    ("How do I change {}?", "How can I change {}?"),
    ("Where can I find {}?", "Where do I find {}?"),
    ("Who do I contact about {}?", "Who should I contact about {}?"),
]


def paraphrase_examples() -> list[tuple[str, str, bool]]:
    """100 labelled pairs of one question in two phrasings, and 20 of two questions on one
    topic."""
    same = [(a.format(t), b.format(t), True) for t in TOPICS for a, b in INTENTS]
    different = [
        (INTENTS[i % 5][0].format(t), INTENTS[(i + 1) % 5][1].format(t), False)
        for i, t in enumerate(TOPICS)
    ]
    return same + different


# ---------------------------------------------------------------------------- fakes


class CondensingLLM(CustomLLM):
    """A fake condense step: rewrites the follow-up of a condense prompt as a standalone
    question, and counts calls."""

    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="condensing-fake")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        follow_up = re.search(r"<Follow Up Message>\n(.*?)\n", prompt)
        assert follow_up is not None
        return CompletionResponse(text=f"About the order in this chat: {follow_up.group(1)}")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError


class RecordingQueryEngine(CustomQueryEngine):
    """Answers every query with a fixed text and records the queries it was asked."""

    queries: list[str] = Field(default_factory=list)

    def custom_query(self, query_str: str) -> str:
        self.queries.append(query_str)
        return f"Answer to: {query_str}"


class WordEmbedding(BaseEmbedding):
    """A LlamaIndex embedding over tokenlean's HashingEmbedder: texts sharing words are close."""

    def _vector(self, text: str) -> list[float]:
        return [float(v) for v in HashingEmbedder(dimension=64).embed([text])[0]]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


def turns(*texts: str) -> list[ChatMessage]:
    roles = ("user", "assistant")
    return [ChatMessage(role=roles[i % 2], content=text) for i, text in enumerate(texts)]


# ---------------------------------------------------------------------------- condense question


SHARED_HISTORY = turns(
    "Hello, I bought a blender from your shop last week and it arrived with a cracked jug.",
    "I am sorry to hear that. I have opened a return for your blender and emailed you a label.",
)
WARM_UP = [
    (turns("My new headphones stopped charging after two days of normal use.",
           "That sounds like a faulty battery. I have logged a warranty claim for them."),
     "How long does the warranty take?"),
    (turns("I was charged twice for the same pair of running shoes this morning.",
           "Thank you for telling us. I can see both charges and will reverse one of them."),
     "Can I cancel the invoice?"),
    (turns("The sofa I ordered was supposed to arrive on Monday and it is still not here.",
           "I checked with the carrier: your sofa is at the depot and out for delivery soon."),
     "Where can I find the delivery?"),
    (turns("I would like to move my dinner booking for four people to a later evening.",
           "Certainly. I found your booking and can offer Thursday or Friday at eight."),
     "How do I change my booking?"),
]  # fmt: skip
FOLLOW_UPS = [
    "How long does the refund take?",
    "Can I cancel the return label?",
    "Where can I find the return label?",
    "Who do I contact about the refund?",
    "How do I change the exchange?",
]


def test_follow_ups_over_one_chat_history_never_hit_each_other_but_a_paraphrase_does() -> None:
    """Through CondenseQuestionChatEngine, different follow-ups over one shared history each
    reach the condense LLM although their whole prompts look alike, while a paraphrase of an
    earlier follow-up is served from the semantic layer."""
    pytest.importorskip("sentence_transformers")
    cache = CompletionCache(policy=CachePolicy.semantic(), seed=0)
    assert cache.calibrate(paraphrase_examples()) >= 80
    assert cache.acceptance()["serving"]
    condense = CondensingLLM()
    answers = RecordingQueryEngine()
    chat = CondenseQuestionChatEngine.from_defaults(
        query_engine=answers, llm=CachedLLM(condense, cache)
    )
    for history, question in WARM_UP:  # the splitter learns the condense prompt's template
        chat.chat(question, chat_history=history)

    for question in FOLLOW_UPS:
        chat.chat(question, chat_history=SHARED_HISTORY)
    assert condense.calls == len(WARM_UP) + len(FOLLOW_UPS)
    assert answers.queries[-len(FOLLOW_UPS) :] == [
        f"About the order in this chat: {q}" for q in FOLLOW_UPS
    ]

    chat.chat("How much time does the refund take?", chat_history=SHARED_HISTORY)
    assert condense.calls == len(WARM_UP) + len(FOLLOW_UPS)
    assert answers.queries[-1] == "About the order in this chat: How long does the refund take?"
    assert cache.stats().layers["semantic"].hits == 1

    # Compared whole, two follow-ups' prompts are closer than the cut: they would have hit.
    acceptance = cache.acceptance()
    assert not acceptance["fitted"]  # so the cut is a cosine
    history = messages_to_history_str(SHARED_HISTORY)
    prompts = [DEFAULT_TEMPLATE.format(chat_history=history, question=q) for q in FOLLOW_UPS[:2]]
    vectors = cache.embedder.embed(prompts)
    assert float(vectors[0] @ vectors[1]) > acceptance["cut"]


# ---------------------------------------------------------------------------- query engine


@pytest.fixture
def index() -> VectorStoreIndex:
    documents = [
        Document(text="Refunds are paid back within 14 days of the return.", id_="refunds"),
        Document(text="Shipping is free for orders over 50 euros.", id_="shipping"),
    ]
    return VectorStoreIndex.from_documents(documents, embed_model=WordEmbedding())


def cached_engine(index: VectorStoreIndex) -> CachedQueryEngine:
    cache = CompletionCache(policy=CachePolicy.semantic(), embedder=HashingEmbedder())
    return CachedQueryEngine.from_index(index, cache, llm=MockLLM(), similarity_top_k=1)


def served(response: Any) -> bool:
    return "tokenlean_cache" in (response.metadata or {})


def sources(response: Any) -> list[tuple[str, str | None, str, float | None]]:
    return [
        (n.node.node_id, n.node.ref_doc_id, n.node.get_content(), n.score)
        for n in response.source_nodes
    ]


def test_a_repeated_query_is_answered_from_the_cache_with_its_sources(
    index: VectorStoreIndex,
) -> None:
    """The same question is served with its text, metadata and source nodes; another misses."""
    engine = cached_engine(index)
    first = engine.query("How long until refunds are paid?")
    second = engine.query("How long until refunds are paid?")
    assert not served(first)
    assert second.metadata["tokenlean_cache"]["layer"] == "exact"
    assert second.response == first.response
    assert first.metadata.items() <= second.metadata.items()
    assert sources(second) == sources(first)
    assert sources(second)[0][1] == "refunds"
    assert not served(engine.query("Is shipping free?"))


def test_the_same_documents_indexed_again_keep_the_index_version(tmp_path: Any) -> None:
    """An index rebuilt from the same documents (a restart, a replica: its nodes get new random
    ids) has the same version, so a persistent cache answers; a changed document changes it."""

    def build(refund_days: int) -> VectorStoreIndex:
        documents = [
            Document(text=f"Refunds are paid back within {refund_days} days.", id_="refunds"),
            Document(text="Shipping is free for orders over 50 euros.", id_="shipping"),
        ]
        return VectorStoreIndex.from_documents(documents, embed_model=WordEmbedding())

    path = f"sqlite:///{tmp_path}/cache.db"
    first = CachedQueryEngine.from_index(build(14), CompletionCache(path), llm=MockLLM())
    first.query("How long until refunds are paid?")
    first.cache.close()
    again = CachedQueryEngine.from_index(build(14), CompletionCache(path), llm=MockLLM())
    assert again.index_version == first.index_version
    assert served(again.query("How long until refunds are paid?"))
    again.cache.close()
    changed = CachedQueryEngine.from_index(build(30), CompletionCache(path), llm=MockLLM())
    assert changed.index_version != first.index_version
    assert not served(changed.query("How long until refunds are paid?"))
    changed.cache.close()


def test_invalidating_a_document_drops_every_answer_that_cited_it(
    index: VectorStoreIndex,
) -> None:
    """invalidate_document removes the answers citing that document and keeps the others."""
    engine = cached_engine(index)
    engine.query("How long until refunds are paid?")
    engine.query("Is shipping free?")
    assert engine.invalidate_document("refunds") == 1
    assert not served(engine.query("How long until refunds are paid?"))
    assert served(engine.query("Is shipping free?"))


def test_a_changed_index_version_misses(index: VectorStoreIndex) -> None:
    """A new version (given, or an index's changed documents) never sees older answers."""
    version = {"now": "v1"}
    engine = CachedQueryEngine(RecordingQueryEngine(), index_version=lambda: version["now"])
    engine.query("Is shipping free?")
    version["now"] = "v2"
    assert not served(engine.query("Is shipping free?"))
    version["now"] = "v1"
    assert served(engine.query("Is shipping free?"))

    from_index = cached_engine(index)
    from_index.query("Is shipping free?")
    index.insert(Document(text="Express shipping costs 9 euros.", id_="express"))
    assert not served(from_index.query("Is shipping free?"))


class DatedSourceEngine(CustomQueryEngine):
    """Cites one source node whose metadata holds a datetime, which has no JSON form."""

    def custom_query(self, query_str: str) -> Response:
        node = TextNode(text="Refunds take 14 days.", metadata={"seen": datetime(2025, 1, 1)})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="refunds")
        return Response("14 days.", source_nodes=[NodeWithScore(node=node, score=0.9)])


def test_an_answer_whose_sources_do_not_serialize_is_cached_without_them() -> None:
    """The text is served from the cache with no source nodes, and its document tag is kept."""
    engine = CachedQueryEngine(DatedSourceEngine())
    engine.query("How long do refunds take?")
    hit = engine.query("How long do refunds take?")
    assert (hit.response, hit.source_nodes, served(hit)) == ("14 days.", [], True)
    assert engine.invalidate_document("refunds") == 1


def test_aquery_is_answered_from_the_cache_after_a_first_aquery() -> None:
    """The async path stores on a miss and serves the repeat without the wrapped engine."""
    answers = RecordingQueryEngine()
    engine = CachedQueryEngine(answers, index_version="v1")

    async def run() -> list[Any]:
        return [await engine.aquery("Is shipping free?") for _ in range(2)]

    first, second = asyncio.run(run())
    assert answers.queries == ["Is shipping free?"]
    assert second.response == first.response
    assert served(second)


# ---------------------------------------------------------------------------- feedback


QUESTION = "Who do I contact about the refund?"
PARAPHRASE = "Who should I contact about the refund?"


def calibrated_cache(**policy: Any) -> CompletionCache:
    cache = CompletionCache(
        policy=CachePolicy.semantic(**policy), embedder=HashingEmbedder(), seed=0
    )
    cache.calibrate(paraphrase_examples())
    return cache


def test_wrong_feedback_on_a_query_engine_hit_removes_it_and_counts_as_evidence() -> None:
    """A thumbs-down on a semantic hit deletes the entry and adds one wrong row of evidence."""
    cache = calibrated_cache()
    answers = RecordingQueryEngine()
    engine = CachedQueryEngine(answers, cache, index_version="v1")
    engine.query(QUESTION)
    hit = engine.query(PARAPHRASE)
    assert hit.metadata["tokenlean_cache"]["layer"] == "semantic"
    before = cache.acceptance()
    assert engine.feedback(hit, correct=False) is True
    after = cache.acceptance()
    assert after["evidence"] == before["evidence"] + 1
    assert after["evidence_wrong"] == before["evidence_wrong"] + 1
    assert not served(engine.query(PARAPHRASE))
    assert answers.queries[-1] == PARAPHRASE


def test_feedback_on_a_cached_llm_hit_is_evidence_and_a_wrong_one_removes_it() -> None:
    """A thumbs-up keeps the entry; a thumbs-down by lookup id (async) removes it; both are
    evidence."""
    cache = calibrated_cache(compare=last_user_turn)
    llm = CachedLLM(MockLLM(), cache)

    def ask(question: str) -> Any:
        return llm.chat([ChatMessage(role="user", content=question)])

    ask(QUESTION)
    hit = ask(PARAPHRASE)
    assert hit.additional_kwargs["tokenlean_cache"]["layer"] == "semantic"
    start = cache.acceptance()["evidence"]
    assert llm.feedback(hit, correct=True) is True
    again = ask(PARAPHRASE)
    lookup_id = again.additional_kwargs["tokenlean_cache"]["lookup_id"]
    assert asyncio.run(llm.afeedback(lookup_id, correct=False)) is True
    assert cache.acceptance()["evidence"] == start + 2
    assert "tokenlean_cache" not in ask(PARAPHRASE).additional_kwargs


def test_feedback_on_a_response_the_cache_did_not_serve_semantically_is_refused() -> None:
    """A fresh response has no marker and an exact hit has no lookup id: both raise."""
    llm = CachedLLM(MockLLM())
    fresh = llm.complete("hello")
    exact = llm.complete("hello")
    engine = CachedQueryEngine(RecordingQueryEngine())
    for response, feedback in [(fresh, llm.feedback), (exact, llm.feedback),
                               (engine.query("Is shipping free?"), engine.feedback)]:  # fmt: skip
        with pytest.raises(InvalidInputError):
            feedback(response, correct=False)


def test_an_llm_can_judge_answers_for_the_cache() -> None:
    """LlamaIndexAnswerJudge asks the LLM and reads a yes or a no from its reply."""
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.llms.tokenlean import LlamaIndexAnswerJudge

    class Replies(CustomLLM):
        replies: list[str]

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata()

        @llm_completion_callback()
        def complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponse:
            return CompletionResponse(text=self.replies.pop(0))

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError

    judge = LlamaIndexAnswerJudge(Replies(replies=["yes, the same", "No: different numbers"]))
    assert judge("Refunds take 14 days.", "Two weeks for a refund.") is True
    assert judge("Refunds take 14 days.", "Refunds take 30 days.") is False
