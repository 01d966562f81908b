"""The bounded LLM client: our one retry loop around one provider attempt.

Each attempt holds a cluster-wide permit only while the request is on the
wire; the permit is given back *before* any back-off sleep, and a 429 or 529
first pushes the shared pause (the latest of the provider's hints), then
releases the permit, so no process starts a call before the pause ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from llm.metrics import LlmMetrics
from llm.providers import AttemptFailed, Completion, LlmRequest, PromptTooLong, Provider
from llm.retry import PAUSING_STATUSES, backoff_s, retry_hint_s, should_retry
from storage.permits import ClusterLimiter, PermitUnavailable

log = structlog.get_logger(__name__)


class LlmCallFailed(Exception):
    """The call failed for good: not retryable, or the deadline passed."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "failed") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    deadline_s: float = 600.0
    attempt_timeout_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    #: When a 429/529 carries no hint, pause the cluster this long at least.
    default_pause_s: float = 1.0


class BoundedLlm:
    """Model calls through ``provider``, at most the limiter's bound at once cluster-wide."""

    def __init__(
        self,
        provider: Provider,
        limiter: ClusterLimiter,
        metrics: LlmMetrics,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.provider = provider
        self._limiter = limiter
        self._metrics = metrics
        self._policy = policy or RetryPolicy()

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def offline(self) -> bool:
        return self.provider.name == "offline"

    async def complete(self, request: LlmRequest) -> Completion:
        """One model call, retried on 429/529/5xx/timeouts until the overall deadline.

        Raises :class:`PromptTooLong` (split and try again) or :class:`LlmCallFailed`.
        """
        policy = self._policy
        deadline = time.monotonic() + policy.deadline_s
        model = self.provider.model
        attempt = 0
        while True:
            try:
                return await self._attempt_with_permit(request, deadline)
            except PromptTooLong:
                raise
            except PermitUnavailable as exc:
                raise LlmCallFailed(str(exc), kind="no_permit") from exc
            except AttemptFailed as exc:
                retryable = should_retry(exc.status, exc.headers)
                if not retryable:
                    raise LlmCallFailed(exc.message, status=exc.status, kind=exc.kind) from exc
                hint_s = retry_hint_s(exc.headers, rate_limited=exc.status == 429)
                delay_s = backoff_s(attempt, base_s=policy.backoff_base_s, cap_s=policy.backoff_cap_s)
                if hint_s is not None:
                    delay_s = max(delay_s, hint_s)
                if time.monotonic() + delay_s > deadline:
                    raise LlmCallFailed(
                        f"gave up after {attempt + 1} attempts: {exc.message}",
                        status=exc.status,
                        kind=exc.kind,
                    ) from exc
                self._metrics.retries.labels(model, exc.kind).inc()
                log.info(
                    "llm_attempt_retry",
                    status=exc.status, kind=exc.kind, attempt=attempt, delay_s=round(delay_s, 3),
                )
                attempt += 1
                # The permit is already released: we never sleep holding one.
                await asyncio.sleep(delay_s)

    async def _attempt_with_permit(self, request: LlmRequest, deadline: float) -> Completion:
        model = self.provider.model
        async with self._limiter.permit(deadline) as permit:
            timeout_s = max(0.1, min(self._policy.attempt_timeout_s, deadline - time.monotonic()))
            started = time.monotonic()
            try:
                completion = await self._race_lease(permit.lost, request, timeout_s)
            except AttemptFailed as exc:
                self._metrics.call_seconds.labels(model, exc.kind).observe(
                    time.monotonic() - started
                )
                if exc.status == 429:
                    self._metrics.rate_limited.labels(model).inc()
                elif exc.status == 529:
                    self._metrics.overloaded.labels(model).inc()
                if exc.status in PAUSING_STATUSES:
                    # Pause the cluster *before* the permit goes back.
                    hint_s = retry_hint_s(exc.headers, rate_limited=exc.status == 429)
                    pause_s = hint_s if hint_s is not None else self._policy.default_pause_s
                    await self._limiter.pause_for(pause_s)
                    self._metrics.pause_seconds.inc(pause_s)
                    log.warning("llm_provider_pause", status=exc.status, pause_s=pause_s)
                raise
            self._metrics.call_seconds.labels(model, "ok").observe(time.monotonic() - started)
            self._metrics.tokens.labels(model, "input").inc(completion.input_tokens)
            self._metrics.tokens.labels(model, "output").inc(completion.output_tokens)
            return completion

    async def _race_lease(
        self, lost: asyncio.Event, request: LlmRequest, timeout_s: float
    ) -> Completion:
        """Run the attempt, abandoning it if the permit's lease is lost (the bound would break)."""
        call = asyncio.ensure_future(self.provider.attempt(request, timeout_s=timeout_s))
        watch = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({call, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (call, watch):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if call.cancelled():
            raise AttemptFailed("the permit's lease was lost during the call", None, "lease_lost")
        return call.result()

    async def close(self) -> None:
        await self.provider.close()
