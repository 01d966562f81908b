"""A local emulator of the OpenAI transcription API (``POST /v1/audio/transcriptions``).

It parses the multipart form as the real service does (``file`` with a file
name, ``model``, optional ``language`` and ``response_format``), checks the
``Authorization: Bearer`` key (401 otherwise, with OpenAI's error shape), and
answers from a script: each queued :class:`Reply` is used by the next request
(429 with ``Retry-After``, 500, a 400 for unusable audio...); when the
script is empty it answers 200 ``{"text": responder(file bytes)}``, after
``latency_s`` (the real service takes a while to listen to the file, so a
worker can die while its call is in flight).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

Responder = Callable[[bytes], str]


@dataclass
class Reply:
    status: int
    text: str | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    at_s: float
    model: str
    language: str | None
    response_format: str | None
    filename: str | None
    content_type: str | None
    size: int
    status: int


class OpenAIAudioEmulator:
    def __init__(
        self, *, api_key: str = "sk-test", responder: Responder | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.responder = responder or (lambda data: f"heard {len(data)} bytes")
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self._server: TestServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @staticmethod
    def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": None}},
            status=status, headers=headers,
        )

    async def _transcribe(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided", "invalid_request_error")
        if not request.content_type.startswith("multipart/form-data"):
            return self._error(400, "Expected multipart/form-data", "invalid_request_error")
        form: dict[str, Any] = {}
        data = b""
        filename = content_type = None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):  # a nested multipart: not a form field
                return self._error(400, "Unexpected nested multipart", "invalid_request_error")
            if part.name == "file":
                filename = part.filename
                content_type = part.headers.get("Content-Type")
                data = await part.read()
            elif part.name:
                form[part.name] = (await part.read()).decode()
        status, response = 200, None
        if "model" not in form or not filename:
            status, response = 400, self._error(400, "file and model are required",
                                                "invalid_request_error")
        elif self.script:
            reply = self.script.pop(0)
            status = reply.status
            if reply.status != 200:
                response = self._error(reply.status, reply.message or f"scripted {reply.status}",
                                       "server_error" if reply.status >= 500 else
                                       "invalid_request_error", reply.headers)
            else:
                response = web.json_response({"text": reply.text or ""}, headers=reply.headers)
        self.received.append(Received(
            at_s=time.monotonic(), model=form.get("model", ""), language=form.get("language"),
            response_format=form.get("response_format"), filename=filename,
            content_type=content_type, size=len(data), status=status,
        ))
        if response is not None:
            return response
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return web.json_response({"text": self.responder(data)})
