"""A local emulator of the Anthropic Messages API, for tests and the benchmark.

It serves ``POST /v1/messages`` (and ``/v1/messages/count_tokens``) with the
real shapes: a ``message`` object with ``usage``, ``request-id`` and
``anthropic-ratelimit-*`` headers, and errors as
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.

It counts requests in flight (the maximum, and the time spent at each level)
and can be told to answer 429 with ``retry-after``, 529, a 400 "prompt is too
long" past a context size, or to answer slowly. What the model "says" comes
from a ``responder(body) -> text`` the test supplies.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

Responder = Callable[[dict[str, Any]], str]

_CONVERSATION = re.compile(r'<conversation id="([^"]+)">\n(.*?)\n</conversation>', re.DOTALL)
_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)


def prompt_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(block.get("text", "") for block in content or [])
    return "\n".join(parts)


def keyword_responder(body: dict[str, Any]) -> str:
    """Selects the conversations whose text contains a word of the question."""
    text = prompt_text(body)
    question = _QUESTION.search(text)
    words = {w.lower() for w in (question.group(1) if question else "").split() if len(w) > 3}
    chosen = [cid for cid, excerpt in _CONVERSATION.findall(text) if words & set(excerpt.lower().split())]
    return json.dumps({"selected_conversation_ids": chosen})


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


@dataclass
class Fault:
    """One scripted answer, used by the next request that arrives."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    error_type: str = "api_error"
    message: str = "scripted failure"


@dataclass
class RequestRecord:
    arrived: float
    finished: float | None = None
    status: int | None = None
    prompt: str = ""


class AnthropicEmulator:
    """Run with ``async with AnthropicEmulator() as emu: emu.base_url``."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        responder: Responder = keyword_responder,
        context_tokens: int | None = None,
        api_key: str = "test-key",
    ) -> None:
        self.latency_s = latency_s
        self.responder = responder
        self.context_tokens = context_tokens
        self.api_key = api_key
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        #: Seconds spent at each level of concurrency (level -> seconds).
        self.time_at_level: dict[int, float] = {}
        self._level_since = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        #: Set once a request is in flight; tests wait on it.
        self.request_arrived = asyncio.Event()
        self._closing = asyncio.Event()

    # --- server

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self._closing.set()  # slow answers end now
        await self._runner.cleanup()

    # --- bookkeeping

    def _set_level(self, delta: int) -> None:
        now = time.monotonic()
        self.time_at_level[self.in_flight] = (
            self.time_at_level.get(self.in_flight, 0.0) + now - self._level_since
        )
        self._level_since = now
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def arrivals(self) -> list[float]:
        return [r.arrived for r in self.requests]

    # --- API

    def _error(self, status: int, error_type: str, message: str, headers: dict[str, str]) -> web.Response:
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
        return web.json_response(body, status=status, headers={"request-id": request_id, **headers})

    def _check_auth(self, request: web.Request) -> web.Response | None:
        # The API takes the key as ``x-api-key``; SDK 2.x sends it as a Bearer token.
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return self._error(401, "authentication_error", "invalid x-api-key", {})
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version header is required", {})
        return None

    async def _count_tokens(self, request: web.Request) -> web.Response:
        refused = self._check_auth(request)
        if refused:
            return refused
        body = await request.json()
        text = prompt_text(body) + json.dumps(body.get("system", ""))
        return web.json_response({"input_tokens": estimate_tokens(text)})

    async def _messages(self, request: web.Request) -> web.Response:
        record = RequestRecord(arrived=time.monotonic())
        self.requests.append(record)
        self._set_level(+1)
        self.request_arrived.set()
        try:
            response = await self._answer(request, record)
        finally:
            self._set_level(-1)
            record.finished = time.monotonic()
        record.status = response.status
        return response

    async def _answer(self, request: web.Request, record: RequestRecord) -> web.Response:
        refused = self._check_auth(request)
        if refused:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "invalid_request_error", "body is not JSON", {})
        missing = [name for name in ("model", "max_tokens", "messages") if name not in body]
        if missing:
            return self._error(400, "invalid_request_error", f"{missing[0]}: Field required", {})
        text = prompt_text(body)
        record.prompt = text
        if self.faults:
            fault = self.faults.pop(0)
            return self._error(fault.status, fault.error_type, fault.message, fault.headers)
        input_tokens = estimate_tokens(text + json.dumps(body.get("system", "")))
        if self.context_tokens is not None and input_tokens + int(body["max_tokens"]) > self.context_tokens:
            return self._error(
                400,
                "invalid_request_error",
                f"prompt is too long: {input_tokens} tokens > {self.context_tokens} maximum",
                {},
            )
        if self.latency_s:
            try:
                await asyncio.wait_for(self._closing.wait(), self.latency_s)
            except TimeoutError:
                pass
        answer = self.responder(body)
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": estimate_tokens(answer)},
        }
        headers = {
            "request-id": request_id,
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
        }
        return web.json_response(message, headers=headers)

    # --- scripting

    def fail_next(self, status: int, *, retry_after_s: float | None = None, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (429 / 529 / 5xx)."""
        error_type = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}.get(
            status, "api_error"
        )
        headers = {}
        if retry_after_s is not None:
            headers["retry-after"] = f"{retry_after_s:g}"
        for _ in range(count):
            self.faults.append(Fault(status, headers, error_type, f"scripted {status}"))
