"""A fingerprint of an error message: the message with its variable parts taken out.

"timeout connecting to 10.0.0.7:5432" and "timeout connecting to 10.0.0.8:5432" are
one cause; grouping dead letters by the exact text would split them into thousands of
groups of one. Numbers, addresses, ids, hex digests and quoted values are replaced by
placeholders; what stays is the shape of the message.
"""

from __future__ import annotations

import hashlib
import re

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
        "<uuid>",
    ),
    (re.compile(r"[^\s@()<>\[\]'\",;:]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?|\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)

#: Messages are cut here first: a fingerprint must be cheap for 100,000 letters.
MAX_TEXT = 500


def shape(text: str | None) -> str:
    """The message with its variable parts replaced by placeholders."""
    out = (text or "")[:MAX_TEXT]
    for pattern, placeholder in _PATTERNS:
        out = pattern.sub(placeholder, out)
    return out.strip()


def fingerprint(task: str | None, kind: str, text: str | None) -> str:
    """A short stable key for (task, error type, message shape)."""
    key = "\x00".join((task or "", kind, shape(text)))
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
