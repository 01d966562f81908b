"""A real headless Chromium driven over the DevTools protocol (aiohttp's websocket client).

:class:`Chromium` starts Debian's binary with a fake microphone playing a WAV (see
../shared/TESTING.md "Browser"); :meth:`Chromium.open` gives a :class:`Page` with
``evaluate`` (JS, promises awaited), ``offline(bool)`` and a small DOM vocabulary.
Nothing is downloaded: without the binary the tests that need it are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

import aiohttp
from waiting import wait_until

from devstack.children import child_preexec

CHROMIUM = Path("/usr/lib/chromium/chromium")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--remote-debugging-port=0", "--use-fake-device-for-media-stream",
    # Timers of a page the browser thinks is hidden would be throttled.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
)


class CdpError(Exception):
    pass


class Session:
    """One DevTools websocket: commands by id; events dropped (the tests poll the DOM) except
    those of a method asked for with :meth:`listen`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    def listen(self, method: str) -> asyncio.Queue[dict[str, Any]]:
        """The params of each ``method`` event from now on, in order."""
        return self._events.setdefault(method, asyncio.Queue())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "method" in data and data["method"] in self._events:
                self._events[data["method"]].put_nowait(data.get("params", {}))
                continue
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CdpError("DevTools connection closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        await self._ws.send_json({"id": command_id, "method": method, "params": params})
        reply = await future
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def close(self) -> None:
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """A tab: JS evaluation, the network switch, and the DOM helpers the tests use."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def evaluate(self, expression: str) -> Any:
        reply = await self.session.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression!r}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def offline(self, offline: bool) -> None:
        await self.session.send(
            "Network.emulateNetworkConditions", offline=offline, latency=0,
            downloadThroughput=-1, uploadThroughput=-1,
        )

    async def press(self, key: str) -> None:
        """One key stroke (``Tab``, ``Enter``, ``Space``) as the keyboard sends it."""
        code, text = {"Tab": (9, ""), "Enter": (13, "\r"), "Space": (32, " ")}[key]
        name = " " if key == "Space" else key
        await self.session.send("Input.dispatchKeyEvent", type="keyDown", key=name, code=key,
                                windowsVirtualKeyCode=code, text=text)
        await self.session.send("Input.dispatchKeyEvent", type="keyUp", key=name, code=key,
                                windowsVirtualKeyCode=code)

    async def type_text(self, text: str) -> None:
        await self.session.send("Input.insertText", text=text)

    async def focused(self) -> str:
        return str(await self.evaluate("document.activeElement && document.activeElement.id"))

    async def block(self, *url_patterns: str) -> None:
        """Requests to matching URLs fail as a network error would (none: nothing blocked)."""
        await self.session.send("Network.setBlockedURLs", urls=list(url_patterns))

    async def pause_responses(self, url_pattern: str) -> asyncio.Queue[dict[str, Any]]:
        """Hold the response of each request to a matching URL (``*`` wildcards) until
        :meth:`release`; the queue gets each held request (``requestId``, ``request``)."""
        held = self.session.listen("Fetch.requestPaused")
        await self.session.send(
            "Fetch.enable", patterns=[{"urlPattern": url_pattern, "requestStage": "Response"}]
        )
        return held

    async def release(self, request_id: str, *, stop_pausing: bool = False) -> None:
        """Let a held response through to the page (and, if asked, hold no more)."""
        await self.session.send("Fetch.continueRequest", requestId=request_id)
        if stop_pausing:
            await self.session.send("Fetch.disable")

    async def reload(self) -> None:
        await self.session.send("Page.reload", ignoreCache=True)

    async def viewport(self, width: int, height: int, *, mobile: bool) -> None:
        await self.session.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height,
            deviceScaleFactor=2 if mobile else 1, mobile=mobile,
        )

    async def text(self, selector: str) -> str:
        value = await self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"
        )
        return str(value)

    async def visible(self, selector: str) -> bool:
        return bool(await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " return !!e && !e.closest('[hidden]'); })()"
        ))

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def fill(self, selector: str, value: str) -> None:
        await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input')); }})()"
        )

    async def chunk_states(self) -> list[str]:
        states = await self.evaluate(
            "[...document.querySelectorAll('#chunks li')].map((li) => li.dataset.state)"
        )
        return [str(s) for s in states]


class Chromium:
    """``async with Chromium(wav) as browser``: a headless browser whose microphone plays ``wav``
    (every permission prompt answered "allow" unless ``microphone_allowed=False``)."""

    def __init__(self, fake_audio: Path, *, microphone_allowed: bool = True) -> None:
        self.fake_audio = fake_audio
        #: False: no fake "allow" answer, and pages are denied the microphone (see deny_microphone).
        self.microphone_allowed = microphone_allowed
        self._dir = Path(tempfile.mkdtemp(prefix="echo-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._sessions: list[Session] = []
        self.port = 0

    async def __aenter__(self) -> Self:
        with (self._dir / "chromium.log").open("wb") as log:  # the child keeps its own copy
            self._proc = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
                [str(CHROMIUM), *FLAGS,
                 *(["--use-fake-ui-for-media-stream"] if self.microphone_allowed else []),
                 f"--user-data-dir={self._dir / 'profile'}",
                 f"--use-file-for-fake-audio-capture={self.fake_audio.resolve()}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=child_preexec(),  # noqa: PLW1509 (dies with the test process)
            )
        port_file = self._dir / "profile" / "DevToolsActivePort"
        first = await wait_until(
            lambda: port_file.read_text().split("\n", 1)[0] if port_file.exists() else "",
            until=lambda line: line.strip().isdigit(), timeout_s=30, interval_s=0.05,
            message="Chromium did not open its DevTools port",
        )
        self.port = int(first)
        self._http = aiohttp.ClientSession()
        return self

    async def _connect(self, method: str, endpoint: str) -> Session:
        """A DevTools session on the target that ``method /json/<endpoint>`` answers with
        (``new?<url>``: a new tab; ``version``: the browser itself)."""
        assert self._http is not None
        url = f"http://127.0.0.1:{self.port}/json/{endpoint}"
        async with self._http.request(method, url) as resp:
            target = await resp.json()
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Session(ws)

    async def open(self, url: str) -> Page:
        """A new tab at ``url``."""
        session = await self._connect("PUT", f"new?{url}")
        self._sessions.append(session)
        await session.send("Network.enable")
        await session.send("Runtime.enable")
        return Page(session)

    async def deny_microphone(self, origin: str) -> None:
        """Deny microphone access to ``origin`` (as a participant who said no)."""
        session = await self._connect("GET", "version")
        try:
            await session.send(
                "Browser.setPermission", permission={"name": "microphone"},
                setting="denied", origin=origin,
            )
        finally:
            await session.close()

    async def __aexit__(self, *exc: object) -> None:
        for session in self._sessions:
            await session.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
        shutil.rmtree(self._dir, ignore_errors=True)

