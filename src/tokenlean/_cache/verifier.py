"""The semantic cache's second stage: reject near neighbours that say something different.

Embedding similarity is high for sentences on the same topic even when they ask different things
("refund within 30 days" vs "within 14 days", "is it covered" vs "is it not covered"). The
verifier compares cheap, explainable features of the two texts and rejects the candidate when
their numbers, negation, named entities or key terms differ.

Features are extracted once when an entry is written and stored with it (never the raw text), so
verification costs microseconds per candidate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tokenlean._cache.policy import VerifierConfig

__all__ = ["QueryFeatures", "extract_features", "verify_candidate"]

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:%| percent)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "cannot",
        "without",
        "nowhere",
        "hardly",
    ]
)
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "half": "0.5", "once": "1", "twice": "2", "first": "1st",
    "second": "2nd", "third": "3rd",
}  # fmt: skip
_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "also",
        "said",
        "says",
        "say",
        "told",
        "tell",
        "get",
        "gets",
        "got",
        "may",
        "might",
        "must",
        "shall",
        "us",
        "i'm",
        "it's",
        "i've",
        "i'd",
        "don't",
        "let",
        "please",
        "want",
        "need",
        "know",
        "like",
    ]
)


def _stem(word: str) -> str:
    word = word.lower().strip("'-")
    for suffix in ("ingly", "edly", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _normalize_number(token: str) -> str:
    token = token.replace(" percent", "%").lstrip("+")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?%?", token):
        token = token.replace(",", "")
    if "." in token and not token.endswith("%"):
        token = token.rstrip("0").rstrip(".") if re.fullmatch(r"-?\d+\.\d+", token) else token
    return token


@dataclass(frozen=True)
class QueryFeatures:
    """What the verifier compares: numbers, negation, named entities and key terms."""

    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    terms: frozenset[str]

    def to_json(self) -> str:
        """Serialize for storage next to a cache entry."""
        return json.dumps(
            {
                "n": sorted(self.numbers),
                "neg": self.negated,
                "e": sorted(self.entities),
                "t": sorted(self.terms),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str) -> QueryFeatures:
        """Read features stored with :meth:`to_json`."""
        raw = json.loads(data)
        return cls(frozenset(raw["n"]), bool(raw["neg"]), frozenset(raw["e"]), frozenset(raw["t"]))


def extract_features(text: str) -> QueryFeatures:
    """Features of a query text.

    Example:
        >>> f = extract_features("Can I return the Nimbus camera after 30 days?")
        >>> sorted(f.numbers), f.negated, sorted(f.entities)
        (['30'], False, ['nimbus'])
    """
    numbers = {_normalize_number(m.group()) for m in _NUMBER.finditer(text)}
    words = _WORD.findall(text)
    lowered = [w.lower() for w in words]
    numbers |= {_NUMBER_WORDS[w] for w in lowered if w in _NUMBER_WORDS}
    negated = any(w in _NEGATIONS or w.endswith("n't") for w in lowered)
    entities: set[str] = set()
    sentence_start = True
    for word, low in zip(words, lowered, strict=True):
        is_name = word[0].isupper() and (not sentence_start or (word.isupper() and len(word) > 1))
        if is_name and low not in _STOPWORDS and len(word) > 1:
            entities.add(low)
        sentence_start = False
    for match in re.finditer(r"[.!?]\s+([A-Z][A-Za-z'\-]*)", text):
        sentence_start_word = match.group(1).lower()
        entities.discard(sentence_start_word) if sentence_start_word in _STOPWORDS else None
    terms = {
        _stem(w) for w in lowered if w not in _STOPWORDS and w not in _NEGATIONS and len(w) > 2
    }
    return QueryFeatures(frozenset(numbers), negated, frozenset(entities), frozenset(terms))


def verify_candidate(
    query: QueryFeatures, candidate: QueryFeatures, config: VerifierConfig
) -> str | None:
    """Why ``candidate`` must not answer ``query``, or None when it may.

    Example:
        >>> a = extract_features("Is the refund window 30 days?")
        >>> b = extract_features("Is the refund window 14 days?")
        >>> verify_candidate(a, b, VerifierConfig())
        'numbers differ'
    """
    if config.numbers and query.numbers != candidate.numbers:
        return "numbers differ"
    if config.negation and query.negated != candidate.negated:
        return "negation differs"
    if config.entities and query.entities != candidate.entities:
        return "named entities differ"
    if config.min_term_overlap > 0 and query.terms and candidate.terms:
        shared = len(query.terms & candidate.terms)
        overlap = min(shared / len(query.terms), shared / len(candidate.terms))
        if overlap < config.min_term_overlap:
            return f"key terms overlap {overlap:.2f}"
    return None
