"""The HTTP API section: host token, CORS, body size; the participant API's limits and uploads."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import (
    Secret,
    float_above,
    int_at_least,
    parse_float_list,
    parse_origins,
    parse_secret,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class HttpSettings(SettingsSection):
    """The HTTP API: host token, CORS, body size, participant limits and uploads."""

    admin_token: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "ADMIN_TOKEN", parse_secret, Secret(""), "Bearer token of the host API; unset disables it",
        secret=True,
    )
    cors_allow_origins: tuple[str, ...] = setting(
        "CORS_ALLOW_ORIGINS", parse_origins, (), "comma-separated origins allowed to call the API"
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", int_at_least(1024), 1024 * 1024, "largest buffered request body"
    )

    # Participant API: uploads, rate limits, idle finish
    upload_url_limit_per_window: int = setting(
        "UPLOAD_URL_LIMIT_PER_WINDOW", int_at_least(1), 40,
        "get-upload-url grants per conversation in any UPLOAD_URL_LIMIT_WINDOW_S window",
    )
    upload_url_limit_window_s: int = setting(
        "UPLOAD_URL_LIMIT_WINDOW_S", int_at_least(1), 60, "sliding window of the upload-URL limit"
    )
    initiate_limit_per_window: int = setting(
        "INITIATE_LIMIT_PER_WINDOW", int_at_least(1), 120,
        "conversations one client IP may start in any INITIATE_LIMIT_WINDOW_S window",
    )
    initiate_limit_window_s: int = setting(
        "INITIATE_LIMIT_WINDOW_S", int_at_least(1), 60, "sliding window of the initiate limit"
    )
    ping_limit_per_window: int = setting(
        "PING_LIMIT_PER_WINDOW", int_at_least(1), 120,
        "telemetry pings one client IP may send in any PING_LIMIT_WINDOW_S window",
    )
    ping_limit_window_s: int = setting(
        "PING_LIMIT_WINDOW_S", int_at_least(1), 60, "sliding window of the ping limit"
    )
    upload_max_bytes: int = setting(
        "UPLOAD_MAX_BYTES", int_at_least(1), 512 * 1024 * 1024, "largest audio chunk accepted"
    )
    upload_url_expires_s: int = setting(
        "UPLOAD_URL_EXPIRES_S", int_at_least(1), 900, "lifetime of a presigned upload URL"
    )
    upload_verify_delays_s: tuple[float, ...] = setting(
        "UPLOAD_VERIFY_DELAYS_S", parse_float_list, (1.0, 2.0, 4.0, 8.0, 15.0),
        "back-off between HEAD checks of a pending upload before it is marked failed",
    )
    upload_verify_error_window_s: float = setting(
        "UPLOAD_VERIFY_ERROR_WINDOW_S", float_above(0), 600.0,
        "how long S3 errors on the HEAD of a pending upload are retried (back-off from the "
        "first UPLOAD_VERIFY_DELAYS_S, doubling, at most 60 s) before the chunk is marked failed",
    )
    upload_confirm_wait_s: float = setting(
        "UPLOAD_CONFIRM_WAIT_S", float_above(0), 1.0,
        "how long confirm-upload looks for the object before answering 202",
    )
    idle_finish_after_s: int = setting(
        "IDLE_FINISH_AFTER_S", int_at_least(1), 300,
        "a conversation with no new chunk for this long is finished automatically",
    )
    trusted_proxy_hops: int = setting(
        "TRUSTED_PROXY_HOPS", int_at_least(0), 0,
        "reverse proxies in front of the gateway; the client IP of per-IP limits is taken "
        "that many X-Forwarded-For entries from the right (0: the peer address)",
    )
    ping_ttl_s: int = setting(
        "PING_TTL_S", int_at_least(1), 120, "how long the last telemetry ping is kept"
    )
