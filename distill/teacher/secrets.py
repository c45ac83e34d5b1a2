"""Keeping API keys out of everything written: ``scrub`` is applied to every error text from an endpoint.

Servers echo the key they were sent, masked or not: OpenAI answers HTTP 401 with "Incorrect API key
provided: sk-SENTI***********0000", proxies put the ``Authorization`` header into their errors. Those texts
become exception messages, which Prefect logs and stores (task states, its database) and the stage writes
into rejects and metrics, so each one is scrubbed where it is made (the transports' errors, the Batch API's
line errors). ``scrub`` replaces the keys this process handed to a client (``remember``), any masked form
(4+ characters, then ``***``, and the tail), ``sk-...`` keys and ``Bearer`` tokens with ``[redacted]``.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
MIN_SECRET = 8  # shorter "keys" (a local server's placeholder such as "x") are not worth hiding, and would
# redact ordinary words
_KNOWN: set[str] = set()  # keys this process handed to a client: the only ones it can recognise unmasked
PATTERNS = re.compile(
    r"(?i:bearer)\s+\S+"  # an Authorization header echoed whole
    r"|\bsk-[\w\-*.]{4,}"  # OpenAI-style keys (sk-..., sk-proj-..., sk-ant-...), masked or not
    r"|[\w\-]{4,}\*{3,}[\w\-]*|\*{3,}[\w\-]+"  # a masked key from any provider: its head and/or tail around
)  # three or more *


def remember(key: str | None) -> None:
    """Register a key about to be handed to a client, so that ``scrub`` removes it wherever it is echoed."""
    if key and len(key) >= MIN_SECRET:
        _KNOWN.add(key)


def scrub(text: str) -> str:
    """``text`` without any remembered key, its masked forms, ``sk-`` keys or ``Bearer`` tokens."""
    for key in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(key, REDACTED)
    return PATTERNS.sub(REDACTED, text)
