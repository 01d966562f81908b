"""The typed settings object: parsed once from the environment, then passed in.

Every setting is one dataclass field whose metadata names its environment
variable, so the table in the README, ``echo-gateway config`` and the error
raised for a bad value all come from the same place.
"""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class SettingsError(ValueError):
    """A variable of the environment has a value the service cannot run with."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


# --- parsers: each takes the raw string and raises ValueError with a short reason


def _str(raw: str) -> str:
    return raw.strip()


def _opt_str(raw: str) -> str | None:
    return raw.strip() or None


def _secret(raw: str) -> Secret:
    return Secret(raw.strip())


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _float_above(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not value > minimum:
            raise ValueError(f"must be greater than {minimum}, got {value}")
        return value

    return parse


def _float_list(raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError("expected at least one non-negative number")
    return values


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _redis_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    # The names redis-py will read (it decodes percent-escapes in them).
    options = {name.lower() for name, _ in parse_qsl(urlsplit(value).query, keep_blank_values=True)}
    if any(option.startswith("ssl") for option in options):
        # redis-py would let them override the verification this service always does.
        raise ValueError("TLS options in the URL are not accepted; use REDIS_CA_FILE")
    return value


def _http_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port[,host:port...], got {part!r}")
        pairs.append((host, int(port)))
    return tuple(pairs)


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin == "*":
            raise ValueError(
                "'*' cannot be used: the portal sends credentials, and a wildcard origin "
                "with credentials would let any site act as a participant; list the origins"
            )
        if not origin.startswith(("http://", "https://")):
            raise ValueError(f"an origin is scheme://host[:port], got {origin!r}")
    return origins


def _existing_file(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value}")
    return value


def _setting(
    env: str, parse: Callable[[str], Any], default: Any, doc: str, *, secret: bool = False
) -> Any:
    """A field read from ``env``; a ``secret`` one is never shown (nor a password in a URL)."""
    return field(
        default=default, metadata={"env": env, "parse": parse, "doc": doc, "secret": secret}
    )


def mask_url_password(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: URLs may carry credentials."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the service is configured with. Build it with :meth:`from_env`."""

    # Redis
    redis_url: str | None = _setting(
        "REDIS_URL", _redis_url, None,
        "redis:// or rediss:// URL; unset under `dev` starts a private server",
    )
    redis_max_connections: int = _setting(
        "REDIS_MAX_CONNECTIONS", _int_at_least(2), 20,
        "connections in the per-process pool; callers wait for a free one",
    )
    redis_sentinels: tuple[tuple[str, int], ...] = _setting(
        "REDIS_SENTINELS", _host_ports, (), "host:port,... of Sentinels (with REDIS_SENTINEL_MASTER)"
    )
    redis_sentinel_master: str | None = _setting(
        "REDIS_SENTINEL_MASTER", _opt_str, None, "name of the master the Sentinels watch"
    )
    redis_cluster: bool = _setting(
        "REDIS_CLUSTER", _bool, False, "REDIS_URL names a node of a Redis Cluster"
    )
    redis_ca_file: str | None = _setting(
        "REDIS_CA_FILE", _existing_file, None, "CA bundle that signs the rediss:// server"
    )
    redis_key_prefix: str = _setting(
        "REDIS_KEY_PREFIX", _str, "echo", "prefix of every Redis key and stream name"
    )
    redis_autopipeline: bool = _setting(
        "REDIS_AUTOPIPELINE", _bool, True,
        "send the API's Redis scripts over one auto-pipelined connection per process "
        "(not on Cluster); false uses the pool for them too",
    )

    # S3
    s3_endpoint_url: str | None = _setting(
        "S3_ENDPOINT_URL", _http_url, None,
        "S3 endpoint; unset under `dev` starts a private SeaweedFS, unset elsewhere means AWS",
    )
    s3_public_endpoint_url: str | None = _setting(
        "S3_PUBLIC_ENDPOINT_URL", _http_url, None,
        "endpoint browsers use for presigned URLs, when it differs from S3_ENDPOINT_URL",
    )
    s3_bucket: str = _setting("S3_BUCKET", _str, "echo-audio", "bucket holding audio and transcripts")
    s3_region: str = _setting("S3_REGION", _str, "us-east-1", "S3 region")
    aws_access_key_id: Secret = _setting(
        "AWS_ACCESS_KEY_ID", _secret, Secret(""), "S3 access key", secret=True
    )
    aws_secret_access_key: Secret = _setting(
        "AWS_SECRET_ACCESS_KEY", _secret, Secret(""), "S3 secret key", secret=True
    )
    s3_ca_file: str | None = _setting(
        "S3_CA_FILE", _existing_file, None,
        "CA bundle for the S3 endpoint (TLS verification cannot be turned off)",
    )

    # LLM
    anthropic_api_key: Secret = _setting(
        "ANTHROPIC_API_KEY", _secret, Secret(""),
        "Anthropic API key; unset uses the offline provider", secret=True,
    )
    anthropic_base_url: str | None = _setting(
        "ANTHROPIC_BASE_URL", _http_url, None, "Anthropic API base URL (an emulator in tests)"
    )
    llm_model: str = _setting("LLM_MODEL", _str, "claude-sonnet-4-5", "model for summaries and selection")
    llm_max_concurrent_calls: int = _setting(
        "LLM_MAX_CONCURRENT_CALLS", _int_at_least(1), 3,
        "model calls in flight across the whole cluster",
    )
    llm_lease_s: float = _setting(
        "LLM_LEASE_S", _float_above(1), 30.0,
        "lease of a call's cluster-wide permit, renewed every third while the call runs; "
        "a crashed process's permit is free again within one lease",
    )
    llm_call_deadline_s: float = _setting(
        "LLM_CALL_DEADLINE_S", _float_above(0), 600.0,
        "overall time one model call may take, waiting for a permit and retries included",
    )
    llm_attempt_timeout_s: float = _setting(
        "LLM_ATTEMPT_TIMEOUT_S", _float_above(0), 120.0, "time one HTTP attempt may take"
    )
    llm_batch_size: int = _setting(
        "LLM_BATCH_SIZE", _int_at_least(1), 20, "conversations per auto-select model call"
    )
    llm_context_tokens: int = _setting(
        "LLM_CONTEXT_TOKENS", _int_at_least(1000), 200_000,
        "context window of LLM_MODEL; larger auto-select batches are split",
    )
    llm_job_parallel_batches: int = _setting(
        "LLM_JOB_PARALLEL_BATCHES", _int_at_least(1), 6,
        "batches one auto-select job runs at once in one process (the cluster bound still applies)",
    )

    # Transcription
    transcriber: Literal["local", "openai"] = _setting(
        "TRANSCRIBER", _one_of("local", "openai"), "local", "speech-to-text provider"
    )
    transcriber_url: str | None = _setting(
        "TRANSCRIBER_URL", _http_url, None, "base URL of an OpenAI-compatible transcription API"
    )
    transcriber_api_key: Secret = _setting(
        "TRANSCRIBER_API_KEY", _secret, Secret(""), "API key of the transcription API", secret=True
    )

    # Transcription pipeline (transcription/): provider details, bounds, finalization
    transcriber_model: str = _setting(
        "TRANSCRIBER_MODEL", _str, "whisper-1", "model name sent to the OpenAI-compatible API"
    )
    transcriber_timeout_s: float = _setting(
        "TRANSCRIBER_TIMEOUT_S", _float_above(0), 300.0, "timeout of one transcription request"
    )
    transcriber_http_retries: int = _setting(
        "TRANSCRIBER_HTTP_RETRIES", _int_at_least(0), 3,
        "retries of one transcription request after a 429 or 5xx (Retry-After honoured)",
    )
    transcriber_retry_after_max_s: float = _setting(
        "TRANSCRIBER_RETRY_AFTER_MAX_S", _float_above(0), 60.0,
        "longest Retry-After waited for; a longer one ends the attempt (the event is retried)",
    )
    transcription_language: str | None = _setting(
        "TRANSCRIPTION_LANGUAGE", _opt_str, None,
        "language code for every transcription (unset: the project's language)",
    )
    whisper_model_dir: str | None = _setting(
        "WHISPER_MODEL_DIR", _opt_str, None,
        "faster-whisper model directory (unset: the Whisper base model from the speech extra)",
    )
    whisper_cache_dir: str | None = _setting(
        "WHISPER_CACHE_DIR", _opt_str, None,
        "where the packaged model is assembled (unset: ~/.cache/echo-gateway/whisper-base)",
    )
    whisper_threads: int = _setting(
        "WHISPER_THREADS", _int_at_least(1), 1,
        "local transcriptions running at once in one process (each is CPU-bound)",
    )
    whisper_cpu_threads: int = _setting(
        "WHISPER_CPU_THREADS", _int_at_least(0), 0,
        "CPU threads of one local transcription (0: CTranslate2's default)",
    )
    transcription_concurrency: int = _setting(
        "TRANSCRIPTION_CONCURRENCY", _int_at_least(1), 4,
        "transcription events one worker process handles at once",
    )
    transcription_max_concurrent_process: int = _setting(
        "TRANSCRIPTION_MAX_CONCURRENT_PROCESS", _int_at_least(1), 4,
        "transcription provider calls in flight in one process",
    )
    transcription_max_concurrent_calls: int = _setting(
        "TRANSCRIPTION_MAX_CONCURRENT_CALLS", _int_at_least(1), 8,
        "transcription provider calls in flight across every process (Redis-backed)",
    )
    transcription_lease_s: float = _setting(
        "TRANSCRIPTION_LEASE_S", _float_above(0), 60.0,
        "lease of a transcription call permit (renewed while the call runs)",
    )
    transcription_max_bytes: int = _setting(
        "TRANSCRIPTION_MAX_BYTES", _int_at_least(1), 200 * 1024 * 1024,
        "largest audio object fetched for transcription (a larger one fails the chunk)",
    )
    transcription_max_attempts: int = _setting(
        "TRANSCRIPTION_MAX_ATTEMPTS", _int_at_least(1), 5,
        "deliveries of one chunk's event before the chunk is marked failed",
    )
    transcription_min_duration_s: float = _setting(
        "TRANSCRIPTION_MIN_DURATION_S", _float_above(0), 0.3,
        "audio shorter than this fails the chunk as too short",
    )
    finalization_claim_s: float = _setting(
        "FINALIZATION_CLAIM_S", _float_above(0), 120.0,
        "how long a finalizer's claim keeps other finalizers of the conversation away",
    )

    # HTTP
    admin_token: Secret = _setting(
        "ADMIN_TOKEN", _secret, Secret(""), "Bearer token of the host API; unset disables it",
        secret=True,
    )
    cors_allow_origins: tuple[str, ...] = _setting(
        "CORS_ALLOW_ORIGINS", _origins, (), "comma-separated origins allowed to call the API"
    )
    max_body_bytes: int = _setting(
        "MAX_BODY_BYTES", _int_at_least(1024), 1024 * 1024, "largest buffered request body"
    )

    # Participant API: uploads, rate limits, idle finish
    upload_url_limit_per_window: int = _setting(
        "UPLOAD_URL_LIMIT_PER_WINDOW", _int_at_least(1), 40,
        "get-upload-url grants per conversation in any UPLOAD_URL_LIMIT_WINDOW_S window",
    )
    upload_url_limit_window_s: int = _setting(
        "UPLOAD_URL_LIMIT_WINDOW_S", _int_at_least(1), 60, "sliding window of the upload-URL limit"
    )
    initiate_limit_per_window: int = _setting(
        "INITIATE_LIMIT_PER_WINDOW", _int_at_least(1), 120,
        "conversations one client IP may start in any INITIATE_LIMIT_WINDOW_S window",
    )
    initiate_limit_window_s: int = _setting(
        "INITIATE_LIMIT_WINDOW_S", _int_at_least(1), 60, "sliding window of the initiate limit"
    )
    ping_limit_per_window: int = _setting(
        "PING_LIMIT_PER_WINDOW", _int_at_least(1), 120,
        "telemetry pings one client IP may send in any PING_LIMIT_WINDOW_S window",
    )
    ping_limit_window_s: int = _setting(
        "PING_LIMIT_WINDOW_S", _int_at_least(1), 60, "sliding window of the ping limit"
    )
    upload_max_bytes: int = _setting(
        "UPLOAD_MAX_BYTES", _int_at_least(1), 512 * 1024 * 1024, "largest audio chunk accepted"
    )
    upload_url_expires_s: int = _setting(
        "UPLOAD_URL_EXPIRES_S", _int_at_least(1), 900, "lifetime of a presigned upload URL"
    )
    upload_verify_delays_s: tuple[float, ...] = _setting(
        "UPLOAD_VERIFY_DELAYS_S", _float_list, (1.0, 2.0, 4.0, 8.0, 15.0),
        "back-off between HEAD checks of a pending upload before it is marked failed",
    )
    upload_confirm_wait_s: float = _setting(
        "UPLOAD_CONFIRM_WAIT_S", _float_above(0), 1.0,
        "how long confirm-upload looks for the object before answering 202",
    )
    idle_finish_after_s: int = _setting(
        "IDLE_FINISH_AFTER_S", _int_at_least(1), 300,
        "a conversation with no new chunk for this long is finished automatically",
    )
    trusted_proxy_hops: int = _setting(
        "TRUSTED_PROXY_HOPS", _int_at_least(0), 0,
        "reverse proxies in front of the gateway; the client IP of per-IP limits is taken "
        "that many X-Forwarded-For entries from the right (0: the peer address)",
    )
    ping_ttl_s: int = _setting(
        "PING_TTL_S", _int_at_least(1), 120, "how long the last telemetry ping is kept"
    )

    # Observability
    log_level: str = _setting(
        "LOG_LEVEL", _one_of("debug", "info", "warning", "error"), "info", "log level"
    )
    log_format: Literal["json", "console"] | None = _setting(
        "LOG_FORMAT", lambda raw: _one_of("json", "console")(raw) if raw.strip() else None, None,
        "json or console; unset picks console on a terminal, json elsewhere",
    )
    sentry_dsn: Secret = _setting(
        "SENTRY_DSN", _secret, Secret(""), "Sentry DSN; unset disables error reporting", secret=True
    )

    # Streams and consumers
    consumer_name: str | None = _setting(
        "CONSUMER_NAME", _opt_str, None, "consumer name in every group (default host-pid)"
    )
    shutdown_grace_s: float = _setting(
        "SHUTDOWN_GRACE_S", _float_above(0), 10.0, "time in-flight work gets to finish on SIGTERM"
    )
    stream_lease_s: float = _setting(
        "STREAM_LEASE_S", _float_above(0), 30.0,
        "how long a consumer owns an entry without renewing; a dead worker's entries move after it",
    )
    stream_max_deliveries: int = _setting(
        "STREAM_MAX_DELIVERIES", _int_at_least(1), 5,
        "deliveries of an entry before it moves to the dead letters",
    )
    stream_concurrency: int = _setting(
        "STREAM_CONCURRENCY", _int_at_least(1), 8,
        "handler loops per consumer group and process (entries in flight)",
    )
    stream_max_len: int = _setting(
        "STREAM_MAX_LEN", _int_at_least(1000), 1_000_000,
        "safety cap on a stream's length (retention normally trims far below it)",
    )
    stream_retention_max_age_s: float = _setting(
        "STREAM_RETENTION_MAX_AGE_S", _float_above(0), 86400.0,
        "acknowledged entries older than this are trimmed; unacknowledged ones never",
    )
    stream_dead_consumer_idle_s: float = _setting(
        "STREAM_DEAD_CONSUMER_IDLE_S", _float_above(0), 3600.0,
        "a consumer idle this long with nothing pending is removed from its group",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse ``env`` (default ``os.environ``); raise :class:`SettingsError` on a bad value."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise SettingsError(name, str(exc)) from None
        settings = cls(**values)
        settings._check_combinations()
        return settings

    def replace(self, **changes: Any) -> Settings:
        settings = dataclasses.replace(self, **changes)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise SettingsError(
                "REDIS_SENTINEL_MASTER" if self.redis_sentinels else "REDIS_SENTINELS",
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together",
            )
        if self.redis_sentinels and self.redis_cluster:
            raise SettingsError("REDIS_CLUSTER", "cannot be combined with REDIS_SENTINELS")
        if self.redis_ca_file and (self.redis_sentinels or not (self.redis_url or "").startswith(
            "rediss://"
        )):
            raise SettingsError("REDIS_CA_FILE", "applies to a rediss:// REDIS_URL only")
        if self.redis_cluster and not self.redis_url:
            raise SettingsError("REDIS_URL", "REDIS_CLUSTER needs the URL of one cluster node")
        if self.transcriber == "openai" and not self.transcriber_url:
            raise SettingsError("TRANSCRIBER_URL", "required when TRANSCRIBER=openai")
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise SettingsError(
                "AWS_SECRET_ACCESS_KEY" if self.aws_access_key_id else "AWS_ACCESS_KEY_ID",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
            )
        if not self.redis_key_prefix or any(c in self.redis_key_prefix for c in "{} \t"):
            raise SettingsError("REDIS_KEY_PREFIX", "must be non-empty, without braces or spaces")

    def describe(self) -> list[tuple[str, str, str]]:
        """``(variable, effective value, description)`` rows with secrets masked."""
        rows = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"]:
                shown = "(set, hidden)" if value else "(unset)"
            elif value is None or value == ():
                shown = "(unset)"
            elif isinstance(value, tuple):
                shown = ",".join(
                    ":".join(str(p) for p in v) if isinstance(v, tuple) else str(v) for v in value
                )
            elif isinstance(value, str) and "://" in value:
                shown = mask_url_password(value)
            else:
                shown = str(value)
            rows.append((f.metadata["env"], shown, f.metadata["doc"]))
        return rows

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value, _ in self.describe())
        return f"Settings({shown})"
