"""Nothing personal in clear at rest: the store file, and the metric labels.

Semantic entries keep verifier features keyed with the store's secret, which compare exactly as
the clear ones did; tenant labels in metrics are keyed with the deployment's metrics secret.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tokenlean as tl
from tokenlean._cache.verifier import stored_features
from tokenlean._metrics import redaction
from tokenlean.testing import HashingEmbedder

MRPC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cache" / "mrpc_pairs.tsv"
CARD = "4111111111111111"
QUESTION = f"Why was the card {CARD} of Ada Lovelace declined at the Nimbus store?"
PARAPHRASE = f"Why did the card {CARD} of Ada Lovelace get declined at the Nimbus store?"
SECRET = b"the store's secret, 32 bytes....."

PAIRS = [
    (
        "Is the refund window 30 days for the router?",
        "Is the refund window 14 days for the router?",
    ),
    ("Is water damage covered?", "Is water damage not covered?"),
    ("Can I return the Nimbus camera after thirty days?", "Can I return it after 30 days?"),
    ("Ship to Lyon by Friday", "Ship to Paris by Friday"),
    ("Transfer 1,000.50 EUR to Ada Lovelace", "Transfer 1000.5 EUR to Ada Lovelace"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("What are the opening hours of the Berlin shop?", "When does the Berlin shop open?"),
    ("", "An empty query against a full one"),
    ("Card 4111 1111 1111 1111 was charged twice", "Card 4111111111111111 was charged twice"),
    ("Neither Alice nor Bob can't log in", "Alice and Bob can log in"),
]


def req(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    )


def store_files(path: Path) -> bytes:
    """Every byte of the database and its -wal and -shm files."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def assert_nothing_personal(data: bytes) -> None:
    for needle in (CARD, "Lovelace", "lovelace", "lovel", "Nimbus", "nimbu", "decli"):
        assert needle.encode() not in data, needle


# ------------------------------------------------------------------ the store file


@pytest.mark.parametrize(
    "policy",
    [
        tl.CachePolicy.semantic(compare=tl.last_user_turn),
        tl.CachePolicy.semantic(threshold=0.7, compare=tl.last_user_turn),
    ],
    ids=["error-bounded", "static"],
)
def test_no_card_number_or_name_in_the_store_files(tmp_path: Path, policy: tl.CachePolicy) -> None:
    """After storing, looking up and learning, the file and its -wal hold no query text."""
    path = tmp_path / "cache.db"
    cache = tl.CompletionCache(
        tl.SQLiteStore(path), policy=policy, embedder=HashingEmbedder(), background_judging=False
    )
    answer = {"content": "Your payment was refused by the bank."}
    if policy.max_error_rate is not None:
        cache.calibrate([(PARAPHRASE, QUESTION, True)])
    cache.store(req(QUESTION), answer, tenant="ada@example.com")
    assert cache.lookup(req(QUESTION), tenant="ada@example.com").hit
    cache.lookup(req(PARAPHRASE), tenant="ada@example.com")  # a miss leaves a pending judgement
    cache.store(req(PARAPHRASE), answer, tenant="ada@example.com")  # judged: evidence
    cache.flush()
    assert (tmp_path / "cache.db-wal").stat().st_size > 0
    assert_nothing_personal(store_files(path))
    cache.close()
    assert_nothing_personal(store_files(path))


def test_entries_with_clear_features_still_load_and_decide_the_same(tmp_path: Path) -> None:
    """Entries written before keying (clear features) answer exactly as keyed ones do."""
    queries = [
        "Is the refund window 30 days for the Nimbus router today?",  # a paraphrase: served
        "Is the refund window 14 days for the Nimbus router?",  # numbers differ: rejected
        "Is the refund window 30 days for the Cirrus router?",  # another name
        "What are the opening hours?",  # unrelated: a miss
    ]
    outcomes = []
    for legacy in (False, True):
        path = tmp_path / f"{legacy}.db"
        policy = tl.CachePolicy.semantic(
            threshold=0.6, compare=tl.last_user_turn, verifier=tl.VerifierConfig(entities=True)
        )
        cache = tl.CompletionCache(tl.SQLiteStore(path), policy=policy, embedder=HashingEmbedder())
        stored = "Is the refund window 30 days for the Nimbus router?"
        cache.store(req(stored), "Yes, 30 days.")
        cache.close()
        if legacy:  # what an earlier version wrote
            conn = sqlite3.connect(path)
            conn.execute(
                "UPDATE tokenlean_entries SET features = ? WHERE layer = 'semantic'",
                (tl.extract_features(stored).to_json(),),
            )
            conn.commit()
            conn.close()
            assert "nimbus" in store_files(path).decode("latin-1")
        cache = tl.CompletionCache(tl.SQLiteStore(path), policy=policy, embedder=HashingEmbedder())
        results = [cache.lookup(req(query)) for query in queries]
        outcomes.append([(r.hit, r.reason, r.similarity) for r in results])
        cache.close()
    assert outcomes[0] == outcomes[1]
    assert [hit for hit, _, _ in outcomes[0]] == [True, False, False, False]
    assert outcomes[0][1][1] == "rejected: numbers differ"


# ------------------------------------------------------------------ keyed features


def _mrpc_pairs() -> list[tuple[str, str]]:
    if not MRPC.exists():
        return []
    with MRPC.open(encoding="utf-8") as file:
        return [
            (row[3], row[4]) for row in csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


def test_keyed_features_give_identical_pair_features_and_verdicts() -> None:
    """Pair features and verifier verdicts are the same, to the bit, on keyed and clear features."""
    pairs = PAIRS + _mrpc_pairs()
    configs = [tl.VerifierConfig(), tl.VerifierConfig.light(), tl.VerifierConfig(entities=True)]
    rng = np.random.default_rng(0)
    for a, b in pairs:
        fa, fb = tl.extract_features(a), tl.extract_features(b)
        ka, kb = fa.keyed(SECRET), fb.keyed(SECRET)
        cosine = float(rng.uniform(0.5, 1.0))
        clear = tl.pair_features(cosine, fa, fb)
        assert np.array_equal(tl.pair_features(cosine, ka, kb), clear), (a, b)
        # as stored (keyed), and as an earlier version stored it (clear, keyed on reading)
        for stored in (kb.to_json(), fb.to_json()):
            assert np.array_equal(
                tl.pair_features(cosine, ka, stored_features(stored, SECRET)), clear
            )
        for config in configs:
            assert tl.verify_candidate(ka, kb, config) == tl.verify_candidate(fa, fb, config)
    assert len(pairs) >= len(PAIRS)


def test_keyed_features_hold_no_clear_term_and_depend_on_the_secret() -> None:
    """Stored features show no number, term or name, and differ between two stores."""
    features = tl.extract_features(QUESTION)
    stored = features.keyed(SECRET).to_json()
    assert_nothing_personal(stored.encode())
    assert stored != features.keyed(b"another store's secret.........").to_json()
    assert features.keyed(SECRET).keyed(SECRET) == features.keyed(SECRET)


# ------------------------------------------------------------------ metric labels


def test_a_guessable_tenant_cannot_be_confirmed_with_the_public_salt() -> None:
    """The label of an email tenant is not the unkeyed hash anyone can compute from a guess."""
    record = tl.MetricsCollector().record_request(
        "gpt-4o-mini", input_tokens=10, output_tokens=2, latency_s=0.1, tenant="ada@example.com"
    )
    assert record.tenant is not None
    guesses = {
        hashlib.sha256(f"{salt}:ada@example.com".encode()).hexdigest()[:12]
        for salt in ("tokenlean", "")
    }
    assert record.tenant not in guesses


def test_labels_are_keyed_and_stable_under_the_deployment_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With TOKENLEAN_METRICS_SECRET set, labels are its HMAC: stable, and differ per secret."""
    monkeypatch.setenv("TOKENLEAN_METRICS_SECRET", "deployment-secret-0001")
    first = tl.MetricsCollector().record_request(
        "m", input_tokens=1, output_tokens=1, latency_s=0.1, tenant="acme"
    )
    expected = hmac.new(b"deployment-secret-0001", b"tokenlean:acme", hashlib.sha256)
    assert first.tenant == expected.hexdigest()[:12]
    assert tl.hash_label("acme") == first.tenant
    monkeypatch.setenv("TOKENLEAN_METRICS_SECRET", "deployment-secret-0002")
    assert tl.hash_label("acme") != first.tenant


def test_a_too_short_metrics_secret_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A guessable secret (under 16 characters) is refused."""
    monkeypatch.setenv("TOKENLEAN_METRICS_SECRET", "short")
    with pytest.raises(tl.ConfigurationError):
        tl.hash_label("acme")


def test_without_a_secret_labels_use_a_random_process_key_and_warn_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Unset, a random key per process keys the labels, with one warning that they won't last."""
    monkeypatch.setattr(redaction, "_process_key", None)
    with caplog.at_level(logging.WARNING, logger="tokenlean.metrics"):
        first = tl.hash_label("acme")
        assert tl.hash_label("acme") == first
    warnings = [r for r in caplog.records if "TOKENLEAN_METRICS_SECRET" in r.getMessage()]
    assert len(warnings) == 1
    monkeypatch.setattr(redaction, "_process_key", None)  # another process
    assert tl.hash_label("acme") != first
