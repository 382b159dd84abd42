"""tokenlean: spend fewer LLM tokens for the same answers.

The framework-agnostic core: token counting, prompt canonicalization, prompt plans with
provider prefix-cache hints, and local embeddings. It never imports LangChain or LlamaIndex;
their adapters live in separate distributions.
"""

from tokenlean._batching.batch_files import (
    read_anthropic_batch_results,
    read_openai_batch_results,
    write_anthropic_batch,
    write_openai_batch,
)
from tokenlean._batching.executors import CallableExecutor, EmbeddingExecutor, SimulatedChatAPI
from tokenlean._batching.scheduler import (
    BatchExecutor,
    BatchKey,
    BatchMetrics,
    LatencyClass,
    MicroBatcher,
    SyncMicroBatcher,
)
from tokenlean._cache.acceptance import AcceptanceSnapshot, AcceptanceState
from tokenlean._cache.compare import Splitter, TemplateSplitter, last_user_turn
from tokenlean._cache.completion import CacheLookup, CompletionCache, replay_stream
from tokenlean._cache.judge import (
    AnswerJudge,
    DefaultAnswerJudge,
    PromptAnswerJudge,
    answer_text,
    equal_answers,
)
from tokenlean._cache.memory_store import MemoryStore
from tokenlean._cache.options import CallOptions, cache_options
from tokenlean._cache.policy import CachePolicy, VerifierConfig
from tokenlean._cache.redis_store import RedisStore
from tokenlean._cache.request import CacheRequest
from tokenlean._cache.retrieval_cache import RetrievalCache, canonical_query
from tokenlean._cache.sqlite_store import SQLiteStore
from tokenlean._cache.stats import CacheStats, LayerStats
from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.uri import open_store
from tokenlean._cache.verifier import (
    PAIR_FEATURES,
    QueryFeatures,
    extract_features,
    pair_features,
    verify_candidate,
)
from tokenlean._canonical import CanonicalizeOptions, canonical_json, canonicalize_text, fingerprint
from tokenlean._config import FrozenModel, TokenleanSettings, load_settings
from tokenlean._embeddings import (
    Embedder,
    FrameworkEmbedder,
    SentenceTransformerEmbedder,
    as_embedder,
    bundled_model_path,
    default_embedder,
)
from tokenlean._errors import (
    BatchClosedError,
    BatchError,
    BatchQueueFullError,
    ConfigurationError,
    CorruptedStoreError,
    EmbeddingError,
    ForeignStoreError,
    InputDecodeError,
    InputTooLargeError,
    InvalidInputError,
    MalformedRequestError,
    MissingDependencyError,
    NotSerializableError,
    StoreBackendError,
    StoreClosedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
    TokenizerUnavailableError,
    TokenleanError,
)
from tokenlean._input import decode_text, parse_chat_request
from tokenlean._memory.assembly import ContextPack, MemoryBudget, PackItem, check_budget
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._memory.slots import RegexExtractor, SlotChange, SlotExtractor, SlotState
from tokenlean._memory.summary import (
    ExtractiveSummarizer,
    PromptSummarizer,
    RollingSummary,
    Summarizer,
    SummaryItem,
)
from tokenlean._memory.transcript import TranscriptStore, Turn
from tokenlean._memory.transcript_memory import MemoryTranscriptStore
from tokenlean._memory.transcript_redis import RedisTranscriptStore
from tokenlean._memory.transcript_sqlite import SQLiteTranscriptStore
from tokenlean._memory.uri import open_transcript_store
from tokenlean._metrics.calls import CallMetrics, Usage, start_call
from tokenlean._metrics.collector import (
    MetricsCollector,
    MetricsRecorder,
    MetricsSink,
    RequestRecord,
)
from tokenlean._metrics.exporters import OpenTelemetryExporter, PrometheusExporter
from tokenlean._metrics.prices import PRICE_TABLE_AS_OF, Cost, ModelPrice, PriceTable
from tokenlean._metrics.redaction import DEFAULT_PATTERNS, Redactor, hash_label
from tokenlean._metrics.summary import render_summary
from tokenlean._prompt.plan import PromptPlan, RenderedPrompt, Segment, SegmentKind
from tokenlean._prompt.prefix_cache import (
    AnthropicPrompt,
    CacheBreakpoint,
    anthropic_request,
    openai_prompt_cache_key,
    openai_request,
)
from tokenlean._prompt.providers import PROVIDER_TABLE_AS_OF, PrefixCacheRule, prefix_cache_rule
from tokenlean._prompt.volatile import (
    DEFAULT_DETECTORS,
    MaskedValue,
    MaskResult,
    RegexDetector,
    VolatileDetector,
    VolatileMasker,
    mask_volatile,
)
from tokenlean._redis_client import has_masked_password, mask_password
from tokenlean._retrieval.documents import Chunk, Document, SentenceSplitter, split_sentences
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.packing import DroppedItem, PackedContext, PackedItem, pack_chunks
from tokenlean._retrieval.retriever import BudgetedRetriever
from tokenlean._retrieval.search import (
    CrossEncoderReranker,
    HybridSearcher,
    LexicalSemanticReranker,
    Reranker,
    ScoredChunk,
)
from tokenlean._routing.gates import Gate, LearnedGate, RouteDecision, RuleGate
from tokenlean._routing.router import Router, RouterMetrics
from tokenlean._tokens.calibration import CalibrationStats, UsageCalibration
from tokenlean._tokens.counting import (
    ApproximateCounter,
    CachedTokenCounter,
    HFTokenizerCounter,
    TiktokenCounter,
    TokenCounter,
    count_tokens,
    describe_counter,
    get_token_counter,
)
from tokenlean._tokens.encodings import EncodingChoice, resolve_encoding
from tokenlean._tokens.messages import (
    RequestTokenCount,
    count_message_tokens,
    count_request_tokens,
    count_tool_tokens,
    normalize_role,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DETECTORS",
    "DEFAULT_PATTERNS",
    "PAIR_FEATURES",
    "PRICE_TABLE_AS_OF",
    "PROVIDER_TABLE_AS_OF",
    "AcceptanceSnapshot",
    "AcceptanceState",
    "AnswerJudge",
    "AnthropicPrompt",
    "ApproximateCounter",
    "BatchClosedError",
    "BatchError",
    "BatchExecutor",
    "BatchKey",
    "BatchMetrics",
    "BatchQueueFullError",
    "BudgetedRetriever",
    "CacheBreakpoint",
    "CacheLookup",
    "CachePolicy",
    "CacheRequest",
    "CacheStats",
    "CacheStore",
    "CachedTokenCounter",
    "CalibrationStats",
    "CallMetrics",
    "CallOptions",
    "CallableExecutor",
    "CanonicalizeOptions",
    "Chunk",
    "CompletionCache",
    "ConfigurationError",
    "ContextPack",
    "ConversationMemory",
    "CorruptedStoreError",
    "Cost",
    "CrossEncoderReranker",
    "DefaultAnswerJudge",
    "Document",
    "DroppedItem",
    "Embedder",
    "EmbeddingError",
    "EmbeddingExecutor",
    "EncodingChoice",
    "ExtractiveSummarizer",
    "ForeignStoreError",
    "FrameworkEmbedder",
    "FrozenModel",
    "Gate",
    "HFTokenizerCounter",
    "HybridIndex",
    "HybridSearcher",
    "InputDecodeError",
    "InputTooLargeError",
    "InvalidInputError",
    "LatencyClass",
    "LayerStats",
    "LearnedGate",
    "LexicalSemanticReranker",
    "MalformedRequestError",
    "MaskResult",
    "MaskedValue",
    "MemoryBudget",
    "MemoryStore",
    "MemoryTranscriptStore",
    "MetricsCollector",
    "MetricsRecorder",
    "MetricsSink",
    "MicroBatcher",
    "MissingDependencyError",
    "ModelPrice",
    "NotSerializableError",
    "OpenTelemetryExporter",
    "PackItem",
    "PackedContext",
    "PackedItem",
    "PrefixCacheRule",
    "PriceTable",
    "PrometheusExporter",
    "PromptAnswerJudge",
    "PromptPlan",
    "PromptSummarizer",
    "QueryFeatures",
    "Redactor",
    "RedisStore",
    "RedisTranscriptStore",
    "RegexDetector",
    "RegexExtractor",
    "RenderedPrompt",
    "RequestRecord",
    "RequestTokenCount",
    "Reranker",
    "RetrievalCache",
    "RollingSummary",
    "RouteDecision",
    "Router",
    "RouterMetrics",
    "RuleGate",
    "SQLiteStore",
    "SQLiteTranscriptStore",
    "ScoredChunk",
    "Segment",
    "SegmentKind",
    "Selector",
    "SentenceSplitter",
    "SentenceTransformerEmbedder",
    "SimulatedChatAPI",
    "SlotChange",
    "SlotExtractor",
    "SlotState",
    "Splitter",
    "StoreBackendError",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "StoredEntry",
    "Summarizer",
    "SummaryItem",
    "SyncMicroBatcher",
    "TemplateSplitter",
    "TiktokenCounter",
    "TokenCounter",
    "TokenizerUnavailableError",
    "TokenleanError",
    "TokenleanSettings",
    "TranscriptStore",
    "Turn",
    "Usage",
    "UsageCalibration",
    "VerifierConfig",
    "VolatileDetector",
    "VolatileMasker",
    "answer_text",
    "anthropic_request",
    "as_embedder",
    "bundled_model_path",
    "cache_options",
    "canonical_json",
    "canonical_query",
    "canonicalize_text",
    "check_budget",
    "count_message_tokens",
    "count_request_tokens",
    "count_tokens",
    "count_tool_tokens",
    "decode_text",
    "default_embedder",
    "describe_counter",
    "equal_answers",
    "extract_features",
    "fingerprint",
    "get_token_counter",
    "has_masked_password",
    "hash_label",
    "last_user_turn",
    "load_settings",
    "mask_password",
    "mask_volatile",
    "normalize_role",
    "open_store",
    "open_transcript_store",
    "openai_prompt_cache_key",
    "openai_request",
    "pack_chunks",
    "pair_features",
    "parse_chat_request",
    "prefix_cache_rule",
    "read_anthropic_batch_results",
    "read_openai_batch_results",
    "render_summary",
    "replay_stream",
    "resolve_encoding",
    "split_sentences",
    "start_call",
    "verify_candidate",
    "write_anthropic_batch",
    "write_openai_batch",
]
