"""The admin API of streams and dead letters (``/api/admin``), behind ``ADMIN_TOKEN``.

* ``GET /api/admin/streams``: the backlog rows (as ``echo-gateway backlog --json``);
* ``GET /api/admin/dead-letters?stream=&count=&after=``: one page of a stream's letters;
* ``POST /api/admin/dead-letters/{stream}/{id}/replay``: re-publish and remove, atomically;
* ``DELETE /api/admin/dead-letters/{stream}/{id}``: remove one letter.

The token is checked before anything else, so a caller without it learns nothing about
which streams or letters exist. Streams are named as in :mod:`events.catalogue`.
"""

from __future__ import annotations

import re
from dataclasses import asdict

import structlog
from aiohttp import web

from events.catalogue import STREAMS
from gateway.admin_models import (
    DEAD_LETTER_QUERY,
    LETTER_PATH,
    DeadLetterPage,
    Dropped,
    Replayed,
    Streams,
)
from gateway.api_docs import HOST_ERRORS, endpoint
from gateway.appkeys import REDIS, SETTINGS
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.responses import json_response
from streams.backlog import backlog_rows
from streams.deadletters import MAX_PAGE, DeadLetterNotReplayable, DeadLetters
from streams.names import StreamNames

PREFIX = "/api/admin"
ENTRY_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")
DEFAULT_PAGE = 50

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


def _names(request: web.Request) -> StreamNames:
    return StreamNames(request.app[SETTINGS].redis_key_prefix)


def _dead_letters(request: web.Request) -> DeadLetters:
    settings = request.app[SETTINGS]
    return DeadLetters(request.app[REDIS], _names(request), max_len=settings.stream_max_len)


def _stream(name: str | None) -> str:
    if not name:
        raise BadRequest(f"stream: required, one of {', '.join(STREAMS)}")
    if name not in STREAMS:
        raise BadRequest(f"stream: unknown stream {name[:100]!r}, not one of {', '.join(STREAMS)}",
                         code="unknown_stream")
    return name


def _count(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"count: must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


@routes.get(PREFIX + "/streams")
@endpoint("Backlog figures of every stream and group (as `echo-gateway backlog --json`)",
          tags=["admin"], host=True, responses={200: Streams}, errors=HOST_ERRORS)
async def list_streams(request: web.Request) -> web.Response:
    rows = await backlog_rows(request.app[REDIS], _names(request), streams=list(STREAMS))
    return json_response({"streams": [asdict(row) for row in rows]})


@routes.get(PREFIX + "/dead-letters")
@endpoint("One page of a stream's dead letters, oldest first", tags=["admin"], host=True,
          query=DEAD_LETTER_QUERY, responses={200: DeadLetterPage}, errors=HOST_ERRORS)
async def list_dead_letters(request: web.Request) -> web.Response:
    stream = _stream(request.query.get("stream"))
    count = _count(request.query.get("count"))
    after = request.query.get("after")
    if after is not None and not ENTRY_ID.fullmatch(after):
        raise BadRequest("after: must be a dead letter id such as 1700000000000-0")
    try:
        page = await _dead_letters(request).list(
            stream, after=after or "", count=count
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_response({
        "stream": stream, "dead_letters": [d.as_dict() for d in page.letters],
        "next_after": page.next_after,
    })


@routes.post(PREFIX + "/dead-letters/{stream}/{letter_id}/replay")
@endpoint("Re-publish a dead letter's event and remove the letter, atomically (handled once)",
          tags=["admin"], host=True, path=LETTER_PATH, responses={200: Replayed},
          errors={**HOST_ERRORS, 409: "the letter holds no event"})
async def replay_dead_letter(request: web.Request) -> web.Response:
    stream = _stream(request.match_info["stream"])
    letter_id = request.match_info["letter_id"]
    try:
        entry_id = await _dead_letters(request).replay(stream, letter_id)
    except DeadLetterNotReplayable as exc:
        raise Conflict(str(exc), code="not_replayable") from None
    if entry_id is None:
        raise NotFound("Dead letter not found")
    log.warning("dead_letter_replayed", stream=stream, letter_id=letter_id, entry_id=entry_id)
    return json_response({"stream": stream, "id": letter_id, "replayed_as": entry_id})


@routes.delete(PREFIX + "/dead-letters/{stream}/{letter_id}")
@endpoint("Remove one dead letter", tags=["admin"], host=True, path=LETTER_PATH,
          responses={200: Dropped}, errors=HOST_ERRORS)
async def drop_dead_letter(request: web.Request) -> web.Response:
    stream = _stream(request.match_info["stream"])
    letter_id = request.match_info["letter_id"]
    if not await _dead_letters(request).drop(stream, letter_id):
        raise NotFound("Dead letter not found")
    log.warning("dead_letter_dropped", stream=stream, letter_id=letter_id)
    return json_response({"stream": stream, "id": letter_id, "dropped": True})
