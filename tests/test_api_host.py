"""The host API: Bearer ADMIN_TOKEN, projects, and a conversation with its chunks."""

from __future__ import annotations

from api_support import HOST_HEADERS, ApiClient, P, create_project, initiate, new_id

H = "/api/host"


async def test_every_host_route_is_401_without_the_token(client: ApiClient) -> None:
    pid = new_id()
    for method, path in [("GET", f"{H}/projects"), ("POST", f"{H}/projects"),
                         ("GET", f"{H}/projects/{pid}"), ("PATCH", f"{H}/projects/{pid}"),
                         ("GET", f"{H}/projects/{pid}/conversations"),
                         ("GET", f"{H}/conversations/{pid}")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            resp = await client.request(method, path, json={}, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert isinstance((await resp.json())["detail"], str)


async def test_projects_are_created_read_and_updated(client: ApiClient) -> None:
    project = await create_project(client, is_get_reply_enabled=True)
    pid = project["id"]
    assert project["language"] == "en" and project["is_get_reply_enabled"] is True
    tag_ids = {t["text"]: t["id"] for t in project["tags"]}

    resp = await client.patch(f"{H}/projects/{pid}", headers=HOST_HEADERS, json={
        "language": "nl", "tags": ["parks", "traffic"], "default_conversation_finish_text": "Thanks!"})
    assert resp.status == 200
    updated = await resp.json()
    assert updated["language"] == "nl"
    assert updated["default_conversation_finish_text"] == "Thanks!"
    new_tags = {t["text"]: t["id"] for t in updated["tags"]}
    assert new_tags["parks"] == tag_ids["parks"] and "housing" not in new_tags

    got = await (await client.get(f"{H}/projects/{pid}", headers=HOST_HEADERS)).json()
    assert got == updated
    listed = await (await client.get(f"{H}/projects", headers=HOST_HEADERS)).json()
    assert [p["id"] for p in listed] == [pid]

    for bad in ({"language": 3}, {"is_conversation_allowed": "yes"}, {"tags": "x"}, {"colour": "red"}):
        resp = await client.patch(f"{H}/projects/{pid}", headers=HOST_HEADERS, json=bad)
        assert resp.status == 400, bad
    resp = await client.patch(f"{H}/projects/{new_id()}", headers=HOST_HEADERS, json={})
    assert resp.status == 404


async def test_a_projects_conversations_and_one_conversation_with_chunks(client: ApiClient) -> None:
    project = await create_project(client)
    pid = project["id"]
    first = await initiate(client, pid, name="Alice")
    second = await initiate(client, pid, name="Bob")
    await client.post(f"{P}/conversations/{first['id']}/upload-text",
                      json={"timestamp": "2026-01-01T10:00:00Z", "content": "hello"})
    await client.post(f"{P}/conversations/{second['id']}/finish")

    listed = await (await client.get(f"{H}/projects/{pid}/conversations", headers=HOST_HEADERS)).json()
    assert {(c["participant_name"], c["status"]) for c in listed} == {("Alice", "open"), ("Bob", "finished")}

    detail = await (await client.get(f"{H}/conversations/{first['id']}", headers=HOST_HEADERS)).json()
    assert [c["transcript"] for c in detail["chunks"]] == ["hello"]
    assert "merged_transcript" in detail and detail["summary"] is None
    assert (await client.get(f"{H}/conversations/{new_id()}", headers=HOST_HEADERS)).status == 404
