"""How a setting is read: the error type, the ``Secret`` wrapper, the parsers and the field helper.

Every section of the settings declares its fields with :func:`setting`, so the
README table, ``echo-gateway config`` and the error raised for a bad value all
come from the field's metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit


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


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_opt_str(raw: str) -> str | None:
    return raw.strip() or None


def parse_secret(raw: str) -> Secret:
    return Secret(raw.strip())


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def float_above(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not value > minimum:
            raise ValueError(f"must be greater than {minimum}, got {value}")
        return value

    return parse


def parse_float_list(raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError("expected at least one non-negative number")
    return values


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def parse_redis_url(raw: str) -> str | None:
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


def parse_http_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def parse_host_ports(raw: str) -> tuple[tuple[str, int], ...]:
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


def parse_origins(raw: str) -> tuple[str, ...]:
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


def parse_existing_file(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value}")
    return value


def setting(
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
