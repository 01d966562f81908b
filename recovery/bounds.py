"""How long a chunk may stay in each non-terminal state before the sweeper calls it stuck.

Each bound is what the stage itself allows, from the settings that drive it, so a chunk
past it cannot still be on its way:

* ``pending_verification``: the verifier's not-found checks (``UPLOAD_VERIFY_DELAYS_S``
  in all), its S3 error window (``UPLOAD_VERIFY_ERROR_WINDOW_S``), and one stream lease
  per delivery (``STREAM_MAX_DELIVERIES`` + 1, the upload group's own last attempt);
* ``uploaded`` (waiting for a transcription start): the transient retry window
  (``TRANSCRIPTION_RETRY_WINDOW_S``) and one lease per started attempt
  (``TRANSCRIPTION_MAX_ATTEMPTS`` + 1);
* ``transcribing``: the same window, and per attempt a lease plus a provider call
  (``TRANSCRIBER_TIMEOUT_S``).
"""

from __future__ import annotations

from config import Settings

NON_TERMINAL = ("pending_verification", "uploaded", "transcribing")


def chunk_stage_bounds_s(settings: Settings) -> dict[str, float]:
    """State -> the longest a chunk may stay in it (seconds since its last transition)."""
    lease_s = settings.stream_lease_s
    attempts = settings.transcription_max_attempts + 1
    return {
        "pending_verification": sum(settings.upload_verify_delays_s)
        + settings.upload_verify_error_window_s + lease_s * (settings.stream_max_deliveries + 1),
        "uploaded": settings.transcription_retry_window_s + lease_s * attempts,
        "transcribing": settings.transcription_retry_window_s
        + (lease_s + settings.transcriber_timeout_s) * attempts,
    }
