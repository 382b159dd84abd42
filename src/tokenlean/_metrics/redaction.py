"""Redaction of secrets and personal data before anything reaches logs, labels or spans.

:class:`Redactor` replaces emails, phone numbers, payment card numbers (Luhn-checked), API keys
and bearer tokens, JWTs and IBANs with typed placeholders; add your own patterns. Identifiers
used as metric labels (tenants, users) are hashed with :func:`hash_label`: an HMAC keyed with the
deployment's metrics secret (``TOKENLEAN_METRICS_SECRET``), so whoever reads the metrics cannot
confirm a guessed identifier (an email) by hashing it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Mapping

from tokenlean._config import current_settings

__all__ = ["DEFAULT_PATTERNS", "Redactor", "hash_label"]

DEFAULT_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b",
    "api_key": r"\b(?:sk|pk|rk)-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}\b|\bAKIA[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}\b|\bAIza[0-9A-Za-z_-]{30,}\b",
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}",
    "iban": r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}(?:\s?[A-Z0-9]{1,3})?\b",
    "card": r"\b\d(?:[ -]?\d){12,18}\b",
    "phone": r"(?<![\w+])\+?\d[\d\s().-]{7,}\d\b",
}


def _luhn(digits: str) -> bool:
    total, double = 0, False
    for char in reversed(digits):
        n = int(char)
        if double:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
        double = not double
    return total % 10 == 0


class Redactor:
    """Replaces sensitive values with ``[kind]``.

    Example:
        >>> Redactor().redact("mail ada@example.com, card 4111 1111 1111 1111")
        'mail [email], card [card]'
    """

    def __init__(self, patterns: Mapping[str, str] | None = None, *, extend: bool = True) -> None:
        merged = {**(DEFAULT_PATTERNS if extend or patterns is None else {}), **(patterns or {})}
        self.patterns = [(kind, re.compile(p)) for kind, p in merged.items()]

    def redact(self, text: str) -> str:
        for kind, pattern in self.patterns:
            if kind == "card":
                text = pattern.sub(
                    lambda m: (
                        "[card]"
                        if _luhn(re.sub(r"\D", "", m.group()))
                        and 13 <= len(re.sub(r"\D", "", m.group())) <= 19
                        else m.group()
                    ),
                    text,
                )
            else:
                text = pattern.sub(f"[{kind}]", text)
        return text


logger = logging.getLogger("tokenlean.metrics")
_process_key_lock = threading.Lock()
_process_key: bytes | None = None


def metrics_key() -> bytes:
    """The key of hashed metric labels: the ``metrics_secret`` setting
    (``TOKENLEAN_METRICS_SECRET``), or else a random key made once per process, with a warning
    (once) that labels will not match across processes and restarts."""
    configured = current_settings().metrics_secret
    if configured is not None:
        return configured.get_secret_value().encode("utf-8")
    global _process_key
    with _process_key_lock:
        if _process_key is None:
            _process_key = secrets.token_bytes(32)
            logger.warning(
                "tokenlean: TOKENLEAN_METRICS_SECRET is not set; tenant labels in metrics are "
                "keyed with a random key of this process, so they will not match those of other "
                "processes or of this one after a restart. Set it (16 characters or more, the "
                "same for the whole deployment) for stable labels."
            )
        return _process_key


def hash_label(value: str, salt: str = "tokenlean", *, key: bytes | None = None) -> str:
    """A short hash of an identifier, for metric labels: HMAC-SHA256 of ``salt:value`` under
    ``key`` (default: :func:`metrics_key`, the deployment's metrics secret), so a label cannot
    be confirmed by hashing a guessed identifier without the key. ``salt`` separates families of
    labels. Stable for as long as the key is.

    Example:
        >>> hash_label("ada@example.com", key=b"a deployment's own secret") == hash_label(
        ...     "ada@example.com", key=b"a deployment's own secret")
        True
        >>> len(hash_label("ada@example.com", key=b"a deployment's own secret"))
        12
    """
    mac = hmac.new(metrics_key() if key is None else key, digestmod=hashlib.sha256)
    mac.update(f"{salt}:{value}".encode())
    return mac.hexdigest()[:12]
