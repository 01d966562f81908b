"""The base of every settings section: parse from the environment, check, describe.

A section is a frozen dataclass whose fields are declared with
:func:`config.parsing.setting`. Parsing, validation and the masked description
live here once, so a section parsed alone (``RedisSettings.from_env()``) and the
composed :class:`config.settings.Settings` behave the same.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from config.parsing import SettingsError, mask_url_password


# No slots: sections are combined by multiple inheritance, and two slotted bases
# cannot be combined (instance lay-out conflict). frozen still holds without them.
@dataclass(frozen=True, repr=False)
class SettingsSection:
    """Fields read from the environment; secrets and URL passwords never shown."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
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

    def replace(self, **changes: Any) -> Self:
        settings = dataclasses.replace(self, **changes)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        """Refuse values that are valid alone but not together.

        A section with such rules overrides this and calls ``super()`` first, so a
        composition of sections runs every section's rules.
        """

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
        return f"{type(self).__name__}({shown})"
