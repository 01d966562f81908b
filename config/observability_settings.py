"""The observability section: logging and error reporting, set up before anything else runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.parsing import (
    Secret,
    one_of,
    parse_secret,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class ObservabilitySettings(SettingsSection):
    """Logging and error reporting."""

    log_level: str = setting(
        "LOG_LEVEL", one_of("debug", "info", "warning", "error"), "info", "log level"
    )
    log_format: Literal["json", "console"] | None = setting(
        "LOG_FORMAT", lambda raw: one_of("json", "console")(raw) if raw.strip() else None, None,
        "json or console; unset picks console on a terminal, json elsewhere",
    )
    sentry_dsn: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "SENTRY_DSN", parse_secret, Secret(""), "Sentry DSN; unset disables error reporting",
        secret=True,
    )
