"""An upload or a text chunk cannot be attached to another project's conversation, nor
read, listed or deleted through another project's path.

Two projects, A and B, one conversation each (``a`` and ``b``). Whatever ids a client
mixes, a chunk lands only in the conversation whose path it was issued and confirmed on,
and the other conversation's list stays as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_support import (
    ApiClient,
    P,
    confirm,
    create_project,
    get_upload_url,
    initiate,
    new_id,
    post_to_s3,
)


class Two:
    """Projects A and B with conversations a and b."""

    def __init__(self, client: ApiClient, a: dict[str, Any], b: dict[str, Any]) -> None:
        self.client = client
        self.a, self.b = a, b

    async def chunks(self, conversation: dict[str, Any]) -> list[dict[str, Any]]:
        resp = await self.client.get(
            f"{P}/projects/{conversation['project_id']}/conversations/{conversation['id']}/chunks")
        assert resp.status == 200
        return list(await resp.json())


@pytest.fixture
async def two(client: ApiClient) -> Two:
    project_a, project_b = await create_project(client), await create_project(client)
    return Two(client, await initiate(client, project_a["id"]),
               await initiate(client, project_b["id"]))


async def test_an_upload_of_one_conversation_cannot_be_confirmed_on_another(two: Two) -> None:
    client, a, b = two.client, two.a, two.b
    grant = await get_upload_url(client, a["id"])
    assert (await post_to_s3(grant, b"audio")).status == 204

    # a's chunk id and a's file_url, on b's path: the key is not b's.
    assert (await confirm(client, b["id"], grant)).status == 400
    # a's chunk id with a key under b: no such chunk in b.
    under_b = f"conversation/{b['id']}/chunks/{grant['chunk_id']}-chunk-1.webm"
    assert (await confirm(client, b["id"], grant, file_url=under_b)).status == 404
    # b's own chunk id with a's object: the key is not the one issued for b's chunk.
    grant_b = await get_upload_url(client, b["id"])
    assert (await confirm(client, b["id"], grant_b, file_url=grant["file_url"])).status == 400
    assert await two.chunks(b) == []

    # a's chunk is untouched and still confirms where it belongs.
    assert (await confirm(client, a["id"], grant)).status == 200
    assert [c["id"] for c in await two.chunks(a)] == [grant["chunk_id"]]
    assert await two.chunks(b) == []


async def test_get_upload_url_cannot_name_another_conversation(two: Two) -> None:
    resp = await two.client.post(
        f"{P}/conversations/{two.a['id']}/get-upload-url",
        json={"filename": "x.webm", "content_type": "audio/webm", "conversation_id": two.b["id"]},
    )
    assert resp.status == 400
    assert await two.chunks(two.a) == [] and await two.chunks(two.b) == []


async def test_a_text_chunk_lands_only_in_the_conversation_of_its_path(two: Two) -> None:
    client, a, b = two.client, two.a, two.b
    resp = await client.post(f"{P}/conversations/{a['id']}/upload-text", json={
        "timestamp": "2026-01-01T10:00:00Z", "content": "hello",
        # ids of the other project in the body are not how a chunk finds its conversation
        "conversation_id": b["id"], "project_id": b["project_id"],
    })
    assert resp.status in (200, 400)
    if resp.status == 200:
        assert [c["transcript"] for c in await two.chunks(a)] == ["hello"]
    assert await two.chunks(b) == []


async def test_the_legacy_upload_stores_under_the_conversation_of_its_path(two: Two) -> None:
    from aiohttp import FormData

    form = FormData()
    form.add_field("chunk", b"audio", content_type="audio/webm",
                   filename=f"../../{two.b['id']}/chunks/evil.webm")
    resp = await two.client.post(f"{P}/conversations/{two.a['id']}/upload-chunk", data=form)
    assert resp.status == 200, await resp.text()
    chunk = await resp.json()
    assert chunk["path"].startswith(f"conversation/{two.a['id']}/chunks/")
    assert await two.chunks(two.b) == []


async def test_another_projects_path_neither_reads_nor_deletes_a_conversations_chunks(
    two: Two,
) -> None:
    client, a, b = two.client, two.a, two.b
    resp = await client.post(f"{P}/conversations/{a['id']}/upload-text",
                             json={"timestamp": "2026-01-01T10:00:00Z", "content": "mine"})
    chunk_id = (await resp.json())["id"]
    wrong = f"{P}/projects/{b['project_id']}/conversations/{a['id']}"
    assert (await client.get(wrong)).status == 404
    assert (await client.get(wrong + "/chunks")).status == 404
    assert (await client.delete(f"{wrong}/chunks/{chunk_id}")).status == 404
    # b's path with a's chunk id: not b's chunk.
    other = f"{P}/projects/{b['project_id']}/conversations/{b['id']}/chunks/{chunk_id}"
    assert (await client.delete(other)).status == 404
    assert (await client.delete(
        f"{P}/projects/{a['project_id']}/conversations/{a['id']}/chunks/{new_id()}")).status == 404
    assert [c["id"] for c in await two.chunks(a)] == [chunk_id]
