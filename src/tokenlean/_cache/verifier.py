"""The semantic cache's second stage: reject near neighbours that say something different.

Embedding similarity is high for sentences on the same topic even when they ask different things
("refund within 30 days" against "within 14 days", "is it covered" against "is it not
covered"). The verifier compares cheap, explainable features of the two texts and rejects the
candidate when their numbers, negations, lengths or key terms (and optionally named entities)
differ. The rules and their defaults were selected by a search over half of the MRPC corpus and
validated on the other half.

Features are extracted once when an entry is written and stored with it (never the raw text), so
verifying a candidate costs microseconds. What is stored is keyed: every number, key term and
entity is replaced by a keyed hash (BLAKE2b, keyed with the store's secret:
:meth:`QueryFeatures.keyed`), so a card
number or a name in a query is not in the store file in clear. Every check compares sets by
equality (differences, intersections, unions) and counts, so keyed features give exactly the
verdicts and pair features that clear ones give. Entries written before keying (clear features)
are keyed when read (:func:`stored_features`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenlean._cache.policy import VerifierConfig

__all__ = [
    "PAIR_FEATURES",
    "QueryFeatures",
    "extract_features",
    "pair_features",
    "stored_features",
    "verify_candidate",
]

_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
}  # fmt: skip
_NEGATION = re.compile(
    r"\b(?:not|no|never|without|none|nobody|nothing|neither|nor|cannot|nowhere)\b"
    r"|n['\u2019]t\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*|\d+(?:[.,]\d+)*")
_NEGATION_WORDS = frozenset(
    "not no never without none nobody nothing neither nor cannot nowhere".split()  # noqa: SIM905
)
_STOPWORDS = frozenset(
    """a an the and or but if then than so as of at by for from in into on onto to with within
    upon about above below over under between among through during before after since until up
    down out off again further is am are was were be been being have has had having do does did
    doing will would shall should can could may might must i me my mine we us our ours you your
    yours he him his she her hers it its they them their theirs this that these those there here
    who whom whose which what when where why how all any both each few more most other some such
    only own same too very just also s t d ll m re ve said says say told according mr mrs ms dr
    yesterday today""".split()  # noqa: SIM905
)
_TERM_PREFIX = 5  # key terms compare on their first five letters: a cheap, robust stemmer
_KEYED_BYTES = 8  # of a keyed feature: 64 bits, no collision between two texts in practice


def _normalize_number(token: str) -> str:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")  # 1,000 -> 1000
    if re.fullmatch(r"\d+\.\d+", token):
        token = token.rstrip("0").rstrip(".")  # 3.50 -> 3.5
    return token


@dataclass(frozen=True)
class QueryFeatures:
    """What the verifier compares.

    Attributes:
        numbers: normalized numbers, digits and number words alike.
        negations: count of negation cues.
        terms: key (non-stopword) terms, as five-letter prefixes.
        entities: capitalized words not opening a sentence, lowercased.
        tokens: word count.
        is_keyed: True when numbers, terms and entities are keyed hashes (see :meth:`keyed`).
    """

    numbers: frozenset[str]
    negations: int
    terms: frozenset[str]
    entities: frozenset[str]
    tokens: int
    is_keyed: bool = False

    def keyed(self, secret: bytes) -> QueryFeatures:
        """These features with every number, term and entity replaced by its keyed hash
        (BLAKE2b keyed with ``secret``, the store's; 64 bits): what a cache stores. Two keyed
        features under one secret compare exactly as their clear forms do.

        Example:
            >>> a = extract_features("Refund card 4111111111111111 for Ada Lovelace?")
            >>> b = extract_features("Refund card 4111111111111112 for Ada Lovelace?")
            >>> secret = b"0123456789abcdef"
            >>> "4111111111111111" in a.keyed(secret).to_json()
            False
            >>> bool((pair_features(0.9, a, b) == pair_features(
            ...     0.9, a.keyed(secret), b.keyed(secret))).all())
            True
        """
        if self.is_keyed:
            return self
        if len(secret) > 64:  # BLAKE2b takes keys of up to 64 bytes
            secret = hashlib.sha512(secret).digest()

        def key(kind: bytes, values: frozenset[str]) -> frozenset[str]:
            return frozenset(
                hashlib.blake2b(
                    value.encode("utf-8", "surrogatepass"),
                    key=secret,
                    person=kind,
                    digest_size=_KEYED_BYTES,
                ).hexdigest()
                for value in values
            )

        return QueryFeatures(
            key(b"tokenlean-number", self.numbers), self.negations,
            key(b"tokenlean-term", self.terms), key(b"tokenlean-entity", self.entities),
            self.tokens, is_keyed=True,
        )  # fmt: skip

    def to_json(self) -> str:
        """Serialize for storage next to a cache entry."""
        data: dict[str, object] = {
            "n": sorted(self.numbers),
            "neg": self.negations,
            "t": sorted(self.terms),
            "e": sorted(self.entities),
            "k": self.tokens,
        }
        if self.is_keyed:
            data["h"] = 1
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str) -> QueryFeatures:
        """Read features stored with :meth:`to_json`."""
        raw = json.loads(data)
        return cls(
            frozenset(raw["n"]),
            int(raw["neg"]),
            frozenset(raw["t"]),
            frozenset(raw["e"]),
            int(raw["k"]),
            is_keyed=bool(raw.get("h", 0)),
        )


def stored_features(data: str, secret: bytes) -> QueryFeatures:
    """Keyed features from what a cache entry stores: keyed features as they are, and the clear
    features of entries written by earlier versions keyed now, so both compare with a query's
    keyed features."""
    return QueryFeatures.from_json(data).keyed(secret)


def extract_features(text: str) -> QueryFeatures:
    """Features of a query text.

    Example:
        >>> f = extract_features("Can I return the Nimbus camera after thirty days?")
        >>> sorted(f.numbers), f.negations, sorted(f.entities), f.tokens
        (['30'], 0, ['nimbus'], 9)
    """
    numbers = {_normalize_number(m.group()) for m in _NUMBER.finditer(text)}
    lowered_words = re.findall(r"[a-z]+", text.lower())
    numbers |= {_NUMBER_WORDS[w] for w in lowered_words if w in _NUMBER_WORDS}
    tokens = _TOKEN.findall(text)
    terms = {
        t.lower()[:_TERM_PREFIX]
        for t in tokens
        if len(t) > 1
        and not t[0].isdigit()
        and t.lower() not in _STOPWORDS
        and t.lower() not in _NEGATION_WORDS
    }
    entities = {
        token.lower()
        for index, token in enumerate(tokens)
        if token[0].isupper()
        and len(token) > 1
        and token.lower() not in _STOPWORDS
        and index > 0
        and not re.search(r"[.!?]\s*$", text[: text.find(token)])
    }
    return QueryFeatures(
        frozenset(numbers), len(_NEGATION.findall(text)), frozenset(terms), frozenset(entities),
        len(tokens),
    )  # fmt: skip


def verify_candidate(
    query: QueryFeatures, candidate: QueryFeatures, config: VerifierConfig
) -> str | None:
    """Why ``candidate`` must not answer ``query``, or None when it may.

    Example:
        >>> a = extract_features("Is the refund window 30 days for the router?")
        >>> b = extract_features("Is the refund window 14 days for the router?")
        >>> verify_candidate(a, b, VerifierConfig())
        'numbers differ'
    """
    limit = config.max_number_differences
    if limit is not None and len(query.numbers ^ candidate.numbers) > limit:
        return "numbers differ"
    if config.negation and query.negations != candidate.negations:
        return "negation differs"
    if config.entities and query.entities != candidate.entities:
        return "named entities differ"
    shorter, longer = sorted((query.tokens, candidate.tokens))
    if shorter < config.min_length_ratio * longer:
        return "lengths differ"
    small, large = sorted((query.terms, candidate.terms), key=len)
    shared = len(small & large)
    if shared < config.min_coverage_shorter * len(small) or (
        shared < config.min_coverage_longer * len(large)
    ):
        return "key terms differ"
    return None


PAIR_FEATURES = (
    "cosine",
    "numbers_differing",
    "negation_differs",
    "entities_differing",
    "length_ratio",
    "coverage_shorter",
    "coverage_longer",
)
"""What the error-bounded acceptance model sees of a candidate: similarity and the verifier's
checks as graded inputs rather than vetoes."""


def pair_features(
    cosine: float, query: QueryFeatures, candidate: QueryFeatures
) -> npt.NDArray[np.float32]:
    """The :data:`PAIR_FEATURES` of a query and a candidate entry, all in [0, 1] but cosine.

    Example:
        >>> a = extract_features("Is the refund window 30 days?")
        >>> b = extract_features("Is the refund window 14 days?")
        >>> [round(float(v), 2) for v in pair_features(0.9, a, b)]
        [0.9, 0.67, 0.0, 0.0, 1.0, 1.0, 1.0]
    """
    numbers = min(len(query.numbers ^ candidate.numbers), 3) / 3
    union = query.entities | candidate.entities
    entities = len(query.entities ^ candidate.entities) / len(union) if union else 0.0
    shorter, longer = sorted((query.tokens, candidate.tokens))
    small, large = sorted((query.terms, candidate.terms), key=len)
    shared = len(small & large)
    return np.array(
        [
            cosine,
            numbers,
            float(query.negations != candidate.negations),
            entities,
            shorter / longer if longer else 1.0,
            shared / len(small) if small else 1.0,
            shared / len(large) if large else 1.0,
        ],
        dtype=np.float32,
    )
