"""Every consumer group the ``worker`` command can run, by group name.

To add a group, add one line to :func:`group_factories`: the group name and a
function that builds its :class:`~streams.spec.GroupSpec` from the running
application (so the handler can take the clients it needs: ``app[REDIS]``,
``app[S3]``, ...). ``echo-gateway worker --group NAME`` looks names up here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from streams.spec import GroupSpec

SpecFactory = Callable[[web.Application], GroupSpec]
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def group_factories() -> dict[str, SpecFactory]:
    """Group name -> factory. A fresh dict each call (no module-level mutable state)."""
    # Imported here: the groups' modules import the app's keys, which import this package.
    from llm.handlers import llm_spec
    from storage.upload_confirmation import upload_confirmation_spec
    from streams import names
    from transcription.lifecycle import transcription_spec

    return {
        names.UPLOAD_CONFIRMATION_GROUP: upload_confirmation_spec,
        names.TRANSCRIPTION_GROUP: transcription_spec,
        names.LLM_GROUP: llm_spec,
    }


def group_requirements() -> dict[str, tuple[CleanupCtx, ...]]:
    """Group name -> cleanup contexts its spec factory needs to have run first
    (the services it reads from the app). Groups not listed need only Redis and S3."""
    from llm.lifecycle import llm_ctx
    from streams import names
    from transcription.lifecycle import transcription_ctx

    return {
        names.TRANSCRIPTION_GROUP: (transcription_ctx,),
        names.LLM_GROUP: (llm_ctx,),
    }


class UnknownGroupError(LookupError):
    """A group name the registry does not know."""


def resolve(
    group_names: list[str], factories: dict[str, SpecFactory] | None = None
) -> list[SpecFactory]:
    """The factories of ``group_names`` (all known groups if empty); raise on an unknown name."""
    factories = group_factories() if factories is None else factories
    if not group_names:
        return list(factories.values())
    unknown = [n for n in group_names if n not in factories]
    if unknown:
        known = ", ".join(sorted(factories)) or "(none registered)"
        raise UnknownGroupError(f"unknown group(s) {', '.join(unknown)}; known: {known}")
    return [factories[n] for n in group_names]
