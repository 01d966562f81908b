"""The transcription section: provider, local model, per-process and cluster bounds, finalizing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.parsing import (
    Secret,
    SettingsError,
    float_above,
    int_at_least,
    one_of,
    parse_http_url,
    parse_opt_str,
    parse_secret,
    parse_str,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class TranscriptionSettings(SettingsSection):
    """The speech-to-text provider, its bounds and finalization."""

    transcriber: Literal["local", "openai"] = setting(
        "TRANSCRIBER", one_of("local", "openai"), "local", "speech-to-text provider"
    )
    transcriber_url: str | None = setting(
        "TRANSCRIBER_URL", parse_http_url, None,
        "base URL of an OpenAI-compatible transcription API",
    )
    transcriber_api_key: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "TRANSCRIBER_API_KEY", parse_secret, Secret(""), "API key of the transcription API",
        secret=True,
    )

    # Transcription pipeline (transcription/): provider details, bounds, finalization
    transcriber_model: str = setting(
        "TRANSCRIBER_MODEL", parse_str, "whisper-1", "model name sent to the OpenAI-compatible API"
    )
    transcriber_timeout_s: float = setting(
        "TRANSCRIBER_TIMEOUT_S", float_above(0), 300.0, "timeout of one transcription request"
    )
    transcriber_http_retries: int = setting(
        "TRANSCRIBER_HTTP_RETRIES", int_at_least(0), 3,
        "retries of one transcription request after a 429 or 5xx (Retry-After honoured)",
    )
    transcriber_retry_after_max_s: float = setting(
        "TRANSCRIBER_RETRY_AFTER_MAX_S", float_above(0), 60.0,
        "longest Retry-After waited for; a longer one ends the attempt (the event is retried)",
    )
    transcription_language: str | None = setting(
        "TRANSCRIPTION_LANGUAGE", parse_opt_str, None,
        "language code for every transcription (unset: the project's language)",
    )
    whisper_model_dir: str | None = setting(
        "WHISPER_MODEL_DIR", parse_opt_str, None,
        "faster-whisper model directory (unset: the Whisper base model from the speech extra)",
    )
    whisper_cache_dir: str | None = setting(
        "WHISPER_CACHE_DIR", parse_opt_str, None,
        "where the packaged model is assembled (unset: ~/.cache/echo-gateway/whisper-base)",
    )
    whisper_threads: int = setting(
        "WHISPER_THREADS", int_at_least(1), 1,
        "local transcriptions running at once in one process (each is CPU-bound)",
    )
    whisper_cpu_threads: int = setting(
        "WHISPER_CPU_THREADS", int_at_least(0), 0,
        "CPU threads of one local transcription (0: CTranslate2's default)",
    )
    transcription_concurrency: int = setting(
        "TRANSCRIPTION_CONCURRENCY", int_at_least(1), 4,
        "transcription events one worker process handles at once",
    )
    transcription_max_concurrent_process: int = setting(
        "TRANSCRIPTION_MAX_CONCURRENT_PROCESS", int_at_least(1), 4,
        "transcription provider calls in flight in one process",
    )
    transcription_max_concurrent_calls: int = setting(
        "TRANSCRIPTION_MAX_CONCURRENT_CALLS", int_at_least(1), 8,
        "transcription provider calls in flight across every process (Redis-backed)",
    )
    transcription_lease_s: float = setting(
        "TRANSCRIPTION_LEASE_S", float_above(0), 60.0,
        "lease of a transcription call permit (renewed while the call runs)",
    )
    transcription_max_bytes: int = setting(
        "TRANSCRIPTION_MAX_BYTES", int_at_least(1), 200 * 1024 * 1024,
        "largest audio object fetched for transcription (a larger one fails the chunk)",
    )
    transcription_max_attempts: int = setting(
        "TRANSCRIPTION_MAX_ATTEMPTS", int_at_least(1), 5,
        "started attempts of one chunk's event that crashed or raised an unexpected error before "
        "the chunk is marked failed (transient errors have TRANSCRIPTION_RETRY_WINDOW_S)",
    )
    # 600 s: longer than a routine outage (a restarting S3 node, a provider's brief 5xx
    # spell, a network blip of a minute or two), short enough that one chunk cannot hold its
    # conversation's finalization back for long.
    transcription_retry_window_s: float = setting(
        "TRANSCRIPTION_RETRY_WINDOW_S", float_above(0), 600.0,
        "how long transient errors (S3 or the transcription provider unreachable, 5xx, "
        "timeouts) are retried, from the first, before the chunk is marked failed",
    )
    transcription_retry_max_delay_s: float = setting(
        "TRANSCRIPTION_RETRY_MAX_DELAY_S", float_above(0), 60.0,
        "longest wait between two tries after a transient error (back-off from 1 s, doubling)",
    )
    transcription_min_duration_s: float = setting(
        "TRANSCRIPTION_MIN_DURATION_S", float_above(0), 0.3,
        "audio shorter than this fails the chunk as too short",
    )
    finalization_claim_s: float = setting(
        "FINALIZATION_CLAIM_S", float_above(0), 120.0,
        "how long a finalizer's claim keeps other finalizers of the conversation away",
    )

    def _check_combinations(self) -> None:
        super()._check_combinations()
        if self.transcriber == "openai" and not self.transcriber_url:
            raise SettingsError("TRANSCRIBER_URL", "required when TRANSCRIBER=openai")
