"""The LLM section: provider, model and the bounds that keep calls within the provider's limits."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import (
    Secret,
    float_above,
    int_at_least,
    parse_http_url,
    parse_secret,
    parse_str,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class LlmSettings(SettingsSection):
    """The model provider and the bounds on model calls."""

    anthropic_api_key: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "ANTHROPIC_API_KEY", parse_secret, Secret(""),
        "Anthropic API key; unset uses the offline provider", secret=True,
    )
    anthropic_base_url: str | None = setting(
        "ANTHROPIC_BASE_URL", parse_http_url, None, "Anthropic API base URL (an emulator in tests)"
    )
    llm_model: str = setting(
        "LLM_MODEL", parse_str, "claude-sonnet-4-5", "model for summaries and selection"
    )
    llm_max_concurrent_calls: int = setting(
        "LLM_MAX_CONCURRENT_CALLS", int_at_least(1), 3,
        "model calls in flight across the whole cluster",
    )
    llm_lease_s: float = setting(
        "LLM_LEASE_S", float_above(1), 30.0,
        "lease of a call's cluster-wide permit, renewed every third while the call runs; "
        "a crashed process's permit is free again within one lease",
    )
    llm_call_deadline_s: float = setting(
        "LLM_CALL_DEADLINE_S", float_above(0), 600.0,
        "overall time one model call may take, waiting for a permit and retries included",
    )
    llm_attempt_timeout_s: float = setting(
        "LLM_ATTEMPT_TIMEOUT_S", float_above(0), 120.0, "time one HTTP attempt may take"
    )
    llm_batch_size: int = setting(
        "LLM_BATCH_SIZE", int_at_least(1), 20, "conversations per auto-select model call"
    )
    llm_context_tokens: int = setting(
        "LLM_CONTEXT_TOKENS", int_at_least(1000), 200_000,
        "context window of LLM_MODEL; larger auto-select batches are split",
    )
    llm_job_parallel_batches: int = setting(
        "LLM_JOB_PARALLEL_BATCHES", int_at_least(1), 6,
        "batches one auto-select job runs at once in one process (the cluster bound still applies)",
    )
