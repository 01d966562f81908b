"""When to retry a failed model call, and how long to wait: our one retry policy.

The SDK's own retries are off (``max_retries=0``); this module decides.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime

#: Statuses worth another attempt: timeouts, rate limits, server errors, 529 overloaded.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
#: Statuses that make every process pause (the provider asked the whole account to slow down).
PAUSING_STATUSES = frozenset({429, 529})

_RESET_HEADERS = (
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
)


def should_retry(status: int | None, headers: Mapping[str, str]) -> bool:
    """``x-should-retry`` wins; else retry the statuses above and (status None) network errors."""
    hint = headers.get("x-should-retry", "").strip().lower()
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status is None or status in RETRYABLE_STATUSES or status >= 500


def retry_hint_s(
    headers: Mapping[str, str], *, rate_limited: bool = True, now: datetime | None = None
) -> float | None:
    """The latest wait the provider asks for, in seconds, or None when it gives no hint.

    Reads ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date) and, for
    a rate-limited answer, the ``anthropic-ratelimit-*-reset`` times (RFC 3339);
    takes the latest.
    """
    now = now or datetime.now(UTC)
    hints: list[float] = []
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            hints.append(float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            hints.append(float(raw))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                hints.append((parsed - now).total_seconds())
    for name in _RESET_HEADERS if rate_limited else ():
        value = headers.get(name)
        if not value:
            continue
        try:
            reset = datetime.fromisoformat(value)  # 3.11 reads a trailing "Z"
        except ValueError:
            continue
        if reset.tzinfo is None:
            reset = reset.replace(tzinfo=UTC)
        hints.append((reset - now).total_seconds())
    valid = [h for h in hints if not math.isnan(h) and h >= 0]  # drop NaN and times past
    return max(valid) if valid else None


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Full-jitter exponential back-off for retry number ``attempt`` (0-based)."""
    return random.uniform(0, min(cap_s, base_s * 2**attempt))
