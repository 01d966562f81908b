"""structlog, configured once per process, with stdlib loggers routed through it.

JSON lines in production, a console renderer on a terminal. Context such as
``request_id`` is bound with ``structlog.contextvars`` and appears on every
line logged while handling that request, whichever logger wrote it
(aiohttp's and botocore's included).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from config import Settings

_NOISY_LOGGERS = {
    "botocore": logging.WARNING,
    "aiobotocore": logging.WARNING,
    "urllib3": logging.WARNING,
    "httpx": logging.WARNING,
    "anthropic": logging.WARNING,
    "aiohttp.access": logging.WARNING,
}


def _render_json(settings: Settings) -> bool:
    if settings.log_format is not None:
        return settings.log_format == "json"
    return not sys.stderr.isatty()


def configure_logging(settings: Settings) -> None:
    """Set up structlog and the stdlib root logger. Call once, at process start."""
    level = getattr(logging, settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if _render_json(settings):
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, floor))


def configure_sentry(settings: Settings) -> bool:
    """Turn on error reporting when SENTRY_DSN is set and sentry-sdk is installed."""
    if not settings.sentry_dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.aiohttp import AioHttpIntegration
    except ImportError:
        structlog.get_logger(__name__).warning(
            "sentry_sdk_missing", hint="pip install 'echo-gateway[sentry]'"
        )
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.reveal(), integrations=[AioHttpIntegration()], send_default_pii=False
    )
    return True
