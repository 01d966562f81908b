"""Hostile requests the fuzzer does not make get a 4xx with a JSON body, never a 5xx: malformed
multipart, truncated bodies, wrong content types, invalid UTF-8 and huge headers."""

from __future__ import annotations

import asyncio
from typing import Any

from api_support import HOST_HEADERS, ApiClient, P, open_conversation

BOUNDARY = "xyzBOUNDARYxyz"


def _multipart(*parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + BOUNDARY.encode() + b"--\r\n" if close else b"")


async def _assert_4xx_json(resp: Any) -> dict[str, Any]:
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
    body = await resp.json()
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["code"], str)
    return dict(body)


async def test_malformed_multipart_uploads_are_400(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    url = f"{P}/conversations/{conversation['id']}/upload-chunk"
    good_part = (b'Content-Disposition: form-data; name="chunk"; filename="a.webm"\r\n'
                 b"Content-Type: audio/webm\r\n\r\nabc")
    cases = {
        "part header without a colon": _multipart(b"this is not a header\r\n\r\nabc"),
        "part header with a bad character": _multipart(
            b'Content-Disposition: form-data; name="chunk"\r\nBad\x00Name: x\r\n\r\nabc'),
        "no closing boundary": _multipart(good_part, close=False),
        "another boundary": _multipart(good_part).replace(BOUNDARY.encode(), b"otherBOUNDARY"),
        "no parts": b"--" + BOUNDARY.encode() + b"--\r\n",
        "not multipart at all": b"chunk=abc",
    }
    for name, body in cases.items():
        resp = await client.post(url, data=body, headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert resp.status == 400, (name, resp.status, await resp.text())
        await _assert_4xx_json(resp)
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=",
                         "multipart/mixed; boundary=\u00e9"):
        resp = await client.post(url, data=_multipart(good_part),
                                 headers={"Content-Type": content_type.encode().decode("latin-1")})
        await _assert_4xx_json(resp)


async def test_json_routes_refuse_other_content_types_with_415(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    url = f"{P}/conversations/{conversation['id']}/get-upload-url"
    body = b'{"filename": "a.webm", "content_type": "audio/webm"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         f"multipart/form-data; boundary={BOUNDARY}", "application/xml"):
        resp = await client.post(url, data=body, headers={"Content-Type": content_type})
        assert resp.status == 415, (content_type, await resp.text())
        assert (await _assert_4xx_json(resp))["code"] == "unsupported_media_type"
    for content_type in ("application/json", "application/json; charset=utf-8",
                         "application/merge-patch+json"):
        resp = await client.post(url, data=body, headers={"Content-Type": content_type})
        assert resp.status == 200, (content_type, await resp.text())
    resp = await client.post("/api/host/projects", data=b'{"name": "x"}',
                             headers={**HOST_HEADERS, "Content-Type": "text/csv"})
    assert resp.status == 415


async def test_invalid_utf8_anywhere_is_400(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    cid = conversation["id"]
    json_type = {"Content-Type": "application/json"}
    for url, raw in [
        (f"{P}/projects/{project['id']}/conversations/initiate", b'{"name": "\xff\xfe"}'),
        (f"{P}/conversations/{cid}/get-upload-url",
         b'{"filename": "a\xc3.webm", "content_type": "audio/webm"}'),
        (f"{P}/conversations/{cid}/upload-text",
         b'{"timestamp": "2026-01-01T00:00:00Z", "content": "\xed\xa0\x80"}'),
        ("/api/host/projects", b'{"name": "\x80"}'),
    ]:
        resp = await client.post(url, data=raw, headers={**json_type, **HOST_HEADERS})
        assert resp.status == 400, (url, await resp.text())
        await _assert_4xx_json(resp)
    await _assert_4xx_json(await client.get(f"{P}/projects/%FF%FE"))
    await _assert_4xx_json(await client.get(f"{P}/projects/{project['id']}/conversations/%C3"))


async def _raw_exchange(host: str, port: int, request: bytes, *, half_close: bool) -> bytes:
    """Send ``request`` on a new connection (closing our side when ``half_close``); the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()


def _status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0


async def _server_errors(client: ApiClient) -> list[str]:
    """The ``/metrics`` samples of requests answered with a 5xx."""
    text = await (await client.get("/metrics")).text()
    return [line for line in text.splitlines() if 'status="5' in line and not line.startswith("#")]


async def test_truncated_and_broken_bodies_get_a_4xx(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    host, port = str(client.server.host), int(client.server.port or 0)
    body = b'{"filename": "a.webm", "content_type": "audio/webm"}'
    multipart = _multipart(b'Content-Disposition: form-data; name="chunk"; filename="a.webm"\r\n'
                           b"Content-Type: audio/webm\r\n\r\nabc")
    for path, content_type, payload in [
        (f"{P}/conversations/{conversation['id']}/get-upload-url", "application/json", body),
        (f"{P}/conversations/{conversation['id']}/upload-chunk",
         f"multipart/form-data; boundary={BOUNDARY}", multipart),
    ]:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload) + 100}\r\nConnection: close\r\n\r\n").encode()
        answer = await _raw_exchange(host, port, head + payload, half_close=True)
        # The body ends early: the answer, if the closed connection lets one through, is a 4xx.
        assert answer == b"" or 400 <= _status_of(answer) < 500, answer[:300]
        chunked = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   "5\r\nabcde\r\nZZ\r\nnot hex\r\n").encode()
        answer = await _raw_exchange(host, port, chunked, half_close=False)
        assert answer == b"" or 400 <= _status_of(answer) < 500, answer[:300]
    assert await _server_errors(client) == []
    assert (await client.get("/healthz")).status == 200


async def test_huge_headers_get_a_4xx(client: ApiClient) -> None:
    host, port = str(client.server.host), int(client.server.port or 0)
    for header in (b"X-Huge: " + b"a" * 100_000, b"X-" + b"n" * 100_000 + b": 1",
                   b"\r\n".join(b"X-Many-%d: 1" % i for i in range(5000))):
        request = (b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n" + header
                   + b"\r\nConnection: close\r\n\r\n")
        answer = await _raw_exchange(host, port, request, half_close=False)
        assert 400 <= _status_of(answer) < 500, answer[:300]
    huge_cookie = {"Cookie": "a=" + "b" * 20_000}
    resp = await client.get("/healthz", headers=huge_cookie)
    assert 400 <= resp.status < 500
    assert (await client.get("/healthz")).status == 200
