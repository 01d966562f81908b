"""``TRANSCRIBER=openai``: any OpenAI-compatible ``POST /v1/audio/transcriptions``.

Hosted Whisper APIs and self-hosted faster-whisper servers speak the same
multipart form (``file``, ``model``, ``language``, ``response_format=json``)
and answer ``{"text": ...}``. One aiohttp session per process, owned by
:mod:`transcription.lifecycle`.

Retries: 429 and 5xx (and timeouts, connection errors) are tried again up to
``TRANSCRIBER_HTTP_RETRIES`` times, waiting for ``Retry-After`` (seconds or an
HTTP date; ``retry-after-ms`` too) when the server sends it, else an
exponential back-off; a 429 also pauses every process (the cluster bound's
shared pause). The slot of the call bound is released while waiting. When the
retries are spent the error is transient (the stream runtime tries the event
again later). A 400 says the file is unusable (permanent); 401/403/404 are
configuration mistakes an operator can fix, so they stay transient.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from transcription.base import TranscriptResult
from transcription.bound import CallBound
from transcription.errors import (
    NoSpeech,
    TooLarge,
    TooShort,
    TransientTranscriptionError,
    Undecodable,
)
from transcription.metrics import TranscriptionMetrics

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


def retry_after_s(headers: Any, *, now_s: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (delta or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return fallback


class OpenAITranscriber:
    name = "openai"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        model: str,
        bound: CallBound,
        metrics: TranscriptionMetrics,
        timeout_s: float = 300.0,
        retries: int = 3,
        retry_after_max_s: float = 60.0,
    ) -> None:
        base = base_url.rstrip("/")
        self._url = base + ("/audio/transcriptions" if base.endswith("/v1") else
                            "/v1/audio/transcriptions")
        self._session = session
        self._api_key = api_key
        self._model = model
        self._bound = bound
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._retry_after_max_s = retry_after_max_s

    async def transcribe(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        attempt = 0
        while True:
            try:
                return await self._attempt(path, language=language, content_type=content_type)
            except TransientTranscriptionError as exc:
                if attempt >= self._retries:
                    raise
                delay_s = exc.retry_after_s
                if delay_s is None:
                    delay_s = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
                elif delay_s > self._retry_after_max_s:
                    raise  # the runtime's back-off takes it from here
                attempt += 1
                log.info("transcriber_retry", attempt=attempt, delay_s=delay_s, error=str(exc))
                await asyncio.sleep(delay_s)

    async def _attempt(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._bound.slot():
                with path.open("rb") as audio:
                    form = aiohttp.FormData()
                    form.add_field("file", audio, filename=path.name, content_type=content_type)
                    form.add_field("model", self._model)
                    form.add_field("response_format", "json")
                    if language:
                        form.add_field("language", language)
                    try:
                        async with self._session.post(
                            self._url, data=form, headers=headers, timeout=self._timeout
                        ) as resp:
                            try:
                                body: Any = await resp.json(content_type=None)
                            except ValueError:
                                body = None
                            status = resp.status
                            wait_s = retry_after_s(resp.headers)
                    except TimeoutError:
                        outcome = "timeout"
                        raise TransientTranscriptionError("transcription request timed out") from None
                    except aiohttp.ClientError as exc:
                        outcome = "connection_error"
                        raise TransientTranscriptionError(
                            f"transcription request failed: {exc}"
                        ) from None
            if status == 200 and isinstance(body, dict) and isinstance(body.get("text"), str):
                text = body["text"].strip()
                if not text:
                    outcome = "no_speech"
                    raise NoSpeech("no speech recognised")
                duration = body.get("duration")
                return TranscriptResult(
                    text=text, language=body.get("language") or language,
                    duration_s=float(duration) if isinstance(duration, (int, float)) else None,
                    provider=self.name,
                )
            message = _error_message(body, f"HTTP {status}")
            if status in RETRY_STATUSES or status >= 500:
                outcome = "rate_limited" if status == 429 else "server_error"
                self._metrics.retries.labels(str(status)).inc()
                if status == 429 and wait_s:
                    await self._bound.pause_for(min(wait_s, self._retry_after_max_s))
                raise TransientTranscriptionError(
                    f"transcription API answered {status}: {message}", retry_after_s=wait_s
                )
            if status == 200:
                outcome = "bad_response"
                raise TransientTranscriptionError("transcription API answered 200 without text")
            if status == 413:
                outcome = "too_large"
                raise TooLarge(f"the transcription API refused the file as too large: {message}")
            if status in (400, 415, 422):
                outcome = "undecodable"
                if "short" in message.lower():
                    raise TooShort(f"audio too short: {message}")
                raise Undecodable(f"the transcription API cannot use this audio: {message}")
            outcome = "client_error"
            raise TransientTranscriptionError(f"transcription API answered {status}: {message}")
        finally:
            self._metrics.call_seconds.labels(self.name, outcome).observe(
                time.perf_counter() - started
            )
