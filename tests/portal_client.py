"""A participant client that uses the API the way the Echo portal does (CONTRACT.md), and
logs every request it makes.

Per conversation: GET the project, ``initiate``, ``check-s3`` and its probe PUT; per chunk
``get-upload-url`` -> presigned POST to S3 (a failed upload asks for a new URL, as the
portal does) -> ``confirm-upload`` (retried with the same chunk id); then ``finish``.

Retries: 503 and connection errors with exponential back-off and full jitter, 429 after
its ``Retry-After``. Other answers are retried a few times too (the portal retries
confirm on any error), but each is logged, so the test can tell which answers came.
Every request has a time budget; past it the conversation gives up and says why.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

P = "/api/participant"
#: A request (with its retries) may take this long before the conversation gives up.
REQUEST_BUDGET_S = 90.0
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 4.0
#: Answers that are neither success nor retryable, tolerated this often per request.
MAX_REFUSALS = 3
RETRYABLE = frozenset({0, 429, 502, 503, 504})
#: The status logged for a connection error or a timeout (no answer).
NO_ANSWER = 0
S3_POST_OK = frozenset({200, 201, 204})
CONTENT_TYPE = "audio/webm;codecs=opus"
#: The EBML header MediaRecorder writes at the start of a webm file: the chunk looks like
#: audio; the speech API is emulated and answers from the token that follows.
WEBM_HEADER = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d4287810442858102")
EPOCH = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def chunk_body(token: str) -> bytes:
    return WEBM_HEADER + f"echo-fault-chunk {token};".encode() + bytes(48)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP request: when it ended (``time.time()``), what it was, what came back."""

    at_s: float
    endpoint: str
    status: int


@dataclass
class ChunkRecord:
    token: str
    chunk_id: str
    file_url: str
    timestamp: str
    #: The first 2xx answer to confirm-upload (200 confirmed, 202 pending verification).
    confirm_status: int
    confirmed_at_s: float
    #: confirm-upload requests sent for this chunk after the first (answered or not).
    repeats: int = 0


@dataclass
class ConversationRecord:
    index: int
    project_id: str
    conversation_id: str | None = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    finished: bool = False
    #: Why the client stopped before finishing (None: it finished).
    gave_up: str | None = None


class GaveUp(Exception):
    """A request did not succeed within its budget or was refused for good."""


class PortalClient:
    """Runs conversations against ``base_url``; ``attempts`` and ``retries`` say what happened."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, *, rng: random.Random,
                 budget_s: float = REQUEST_BUDGET_S, give_up_after_s: float = 600.0) -> None:
        self._http = http
        self._base = base_url
        self._rng = rng
        self._budget_s = budget_s
        #: No request starts after this (monotonic): every conversation ends in time.
        self._stop_at = time.monotonic() + give_up_after_s
        self.attempts: list[Attempt] = []
        self.retries: Counter[str] = Counter()

    async def run_conversation(
        self, index: int, project_id: str, *, chunks: int, interval_s: float, repeat_every: int
    ) -> ConversationRecord:
        """One participant: open, record ``chunks`` chunks ``interval_s`` apart, finish.
        Every ``repeat_every``-th chunk is confirmed twice (an answer the portal lost)."""
        record = ConversationRecord(index, project_id)
        try:
            await self._call("project", "GET", f"{P}/projects/{project_id}")
            conversation = await self._call(
                "initiate", "POST", f"{P}/projects/{project_id}/conversations/initiate",
                json_body={"name": f"Participant {index}", "pin": "", "tag_id_list": [],
                           "source": "PORTAL_AUDIO", "user_agent": "fault-injection"},
            )
            cid = record.conversation_id = str(conversation["id"])
            probe = await self._call("check-s3", "POST", f"{P}/conversations/{cid}/check-s3")
            await self._call("probe-put", "PUT", str(probe["probe_url"]), data=b"probe",
                             headers={"Content-Type": "text/plain"})
            for k in range(chunks):
                if k:
                    await asyncio.sleep(interval_s)  # the recorder fills the next chunk
                token = f"{index:03d}-{k:02d}"
                stamp = (EPOCH + timedelta(hours=index, seconds=30 * k)).isoformat(
                    timespec="milliseconds").replace("+00:00", "Z")
                chunk = await self._upload_chunk(cid, token, stamp)
                if (k + 1) % repeat_every == 0:
                    await self._repeat_confirm(cid, chunk)
                record.chunks.append(chunk)
            await self._call("finish", "POST", f"{P}/conversations/{cid}/finish")
            record.finished = True
        except GaveUp as exc:
            record.gave_up = str(exc)
        return record

    async def create_project(self, name: str, admin_token: str) -> str:
        project = await self._call(
            "host-project", "POST", "/api/host/projects", ok=frozenset({201}),
            json_body={"name": name, "language": "en"},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return str(project["id"])

    # --- one chunk

    def _deadline(self) -> float:
        return min(time.monotonic() + self._budget_s, self._stop_at)

    async def _upload_chunk(self, cid: str, token: str, stamp: str) -> ChunkRecord:
        deadline = self._deadline()
        tries = 0
        while True:
            grant = await self._call(
                "get-upload-url", "POST", f"{P}/conversations/{cid}/get-upload-url",
                json_body={"filename": f"chunk-{token}.webm", "content_type": CONTENT_TYPE,
                           "conversation_id": cid},
            )
            if await self._post_to_s3(grant, chunk_body(token)) in S3_POST_OK:
                break
            tries += 1
            delay = self._backoff(tries)
            if time.monotonic() + delay > deadline:
                raise GaveUp(f"chunk {token}: the upload to S3 kept failing")
            self.retries["s3-post"] += 1
            await asyncio.sleep(delay)  # then a new URL, as the portal asks for
        body = {"chunk_id": grant["chunk_id"], "file_url": grant["file_url"],
                "timestamp": stamp, "source": "PORTAL_AUDIO"}
        status, answer, tries = await self._request(
            "confirm", "POST", f"{P}/conversations/{cid}/confirm-upload",
            ok=frozenset({200, 202}), json_body=body,
        )
        if answer.get("chunk_id") != grant["chunk_id"]:
            raise GaveUp(f"chunk {token}: confirm answered another chunk id: {answer}")
        return ChunkRecord(token, str(grant["chunk_id"]), str(grant["file_url"]), stamp, status,
                           time.time(), repeats=tries)

    async def _repeat_confirm(self, cid: str, chunk: ChunkRecord) -> None:
        answer = await self._call(
            "confirm-repeat", "POST", f"{P}/conversations/{cid}/confirm-upload",
            ok=frozenset({200, 202}),
            json_body={"chunk_id": chunk.chunk_id, "file_url": chunk.file_url,
                       "timestamp": chunk.timestamp, "source": "PORTAL_AUDIO"},
        )
        if answer.get("chunk_id") != chunk.chunk_id:
            raise GaveUp(f"chunk {chunk.token}: a repeated confirm answered {answer}")
        chunk.repeats += 1

    async def _post_to_s3(self, grant: dict[str, Any], data: bytes) -> int:
        """The browser's upload: every field of the grant, then ``file`` last."""
        form = aiohttp.FormData()
        for name, value in grant["fields"].items():
            form.add_field(name, value)
        form.add_field("file", data, filename="blob", content_type=grant["fields"]["Content-Type"])
        status = NO_ANSWER
        try:
            async with self._http.post(str(grant["upload_url"]), data=form) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        self.attempts.append(Attempt(time.time(), "s3-post", status))
        return status

    # --- requests with retries

    async def _call(
        self, endpoint: str, method: str, url: str, *, ok: frozenset[int] = frozenset({200}),
        json_body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None,
    ) -> Any:
        _, body, _ = await self._request(endpoint, method, url, ok=ok, json_body=json_body,
                                         data=data, headers=headers)
        return body

    async def _request(
        self, endpoint: str, method: str, url: str, *, ok: frozenset[int],
        json_body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, int]:
        """The status and JSON body of the first answer in ``ok``, and the retries it took."""
        deadline = self._deadline()
        tries = refusals = 0
        full_url = url if "://" in url else self._base + url
        while True:
            if time.monotonic() > self._stop_at:
                raise GaveUp(f"{endpoint}: the client's time is up")
            status, body, retry_after = await self._once(
                endpoint, method, full_url, json_body=json_body, data=data, headers=headers
            )
            if status in ok:
                return status, json.loads(body) if body else None, tries
            if status not in RETRYABLE:
                refusals += 1
                if refusals >= MAX_REFUSALS:
                    raise GaveUp(f"{endpoint} answered {status}: {body[:300]!r}")
            tries += 1
            delay = retry_after if status == 429 and retry_after else self._backoff(tries)
            if time.monotonic() + delay > deadline:
                raise GaveUp(f"{endpoint}: no success within {self._budget_s} s "
                             f"(last answer {status or 'none'})")
            self.retries[endpoint] += 1
            await asyncio.sleep(delay)

    async def _once(
        self, endpoint: str, method: str, url: str, *, json_body: Any, data: bytes | None,
        headers: dict[str, str] | None,
    ) -> tuple[int, bytes, float | None]:
        status, body, retry_after = NO_ANSWER, b"", None
        try:
            async with self._http.request(
                method, url, json=json_body, data=data, headers=headers
            ) as response:
                body = await response.read()
                status = response.status
                header = response.headers.get("Retry-After")
                retry_after = float(header) if header and header.isdigit() else None
        except (aiohttp.ClientError, TimeoutError):
            pass
        self.attempts.append(Attempt(time.time(), endpoint, status))
        return status, body, retry_after

    def _backoff(self, tries: int) -> float:
        """Full jitter, but never less than a tenth of the cap (no hot loop)."""
        cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** tries)
        return float(max(cap / 10, self._rng.uniform(0, cap)))
