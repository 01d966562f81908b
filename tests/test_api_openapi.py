"""The OpenAPI 3.1 document describes exactly the API routes the app serves (the browser
pages of ``gateway/pages.py`` are not API)."""

from __future__ import annotations

import re

from aiohttp import web
from api_support import HOST_HEADERS, ApiClient, P, build_app, open_conversation

from config import Settings
from gateway import pages

#: The pages and their static files: served to browsers, not part of the API.
PAGE_PATHS = {route.path for route in pages.routes if isinstance(route, web.RouteDef)}


def _app_operations(settings: Settings) -> set[tuple[str, str]]:
    app = build_app(settings)
    ops: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*") or isinstance(route.resource, web.StaticResource):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str), f"{route} has no path"
        if path in PAGE_PATHS:
            continue
        ops.add((route.method.lower(), path))
    return ops


async def test_the_document_and_the_router_agree(client: ApiClient, api_env: dict[str, str]) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.1")
    described = {(m, p) for p, item in document["paths"].items() for m in item}
    served = _app_operations(Settings.from_env(api_env))
    assert served - described == set(), "routes missing from the OpenAPI document"
    assert described - served == set(), "documented routes the app does not serve"


async def test_every_operation_has_responses_and_declares_its_path_parameters(client: ApiClient) -> None:
    document = await (await client.get("/api/openapi.json")).json()
    schemas = document["components"]["schemas"]
    text = str(document)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas
    for path, item in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            assert op["responses"], (method, path)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


async def test_participant_bodies_tolerate_extras_and_host_bodies_refuse_them(
    client: ApiClient,
) -> None:
    """The portal sends fields beyond the contract; the document says which bodies allow that."""
    schemas = (await (await client.get("/api/openapi.json")).json())["components"]["schemas"]
    for name in ("InitiateRequest", "UploadUrlRequest", "ConfirmRequest", "UploadTextRequest"):
        assert schemas[name]["additionalProperties"] is True, name
    for name in ("ProjectInput", "TagInput", "AutoSelectRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    _, conversation = await open_conversation(client)
    resp = await client.post(f"{P}/conversations/{conversation['id']}/get-upload-url", json={
        "filename": "a.webm", "content_type": "audio/webm", "portal_version": "1.2"})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/host/projects", json={"colour": "red"}, headers=HOST_HEADERS)
    assert resp.status == 400 and (await resp.json())["detail"] == "colour: unknown field"


async def test_what_the_document_allows_the_server_accepts_and_the_reverse(
    client: ApiClient,
) -> None:
    """The cases where the hand-written document and the validators had drifted apart."""
    document = await (await client.get("/api/openapi.json")).json()
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    refused = [
        ("/api/host/projects", {"language": ""}),
        (f"{P}/conversations/{cid}/get-upload-url", {"filename": "", "content_type": "audio/webm"}),
        (f"{P}/conversations/{cid}/get-upload-url", {"filename": "a.webm", "content_type": ""}),
        (f"{P}/conversations/{cid}/upload-text", {"timestamp": "2026-01-01T00:00:00Z", "content": " "}),
        (f"/api/projects/{pid}/auto-select", {"query": " \t"}),
    ]
    for path, body in refused:
        resp = await client.post(path, json=body, headers=HOST_HEADERS)
        assert resp.status == 400, (path, body, await resp.text())
    schemas = document["components"]["schemas"]
    assert schemas["ProjectInput"]["properties"]["language"]["minLength"] == 1
    assert schemas["UploadUrlRequest"]["properties"]["filename"]["minLength"] == 1
    assert "pattern" in schemas["UploadUrlRequest"]["properties"]["content_type"]

    # Telemetry is never refused, and the document says any JSON is accepted.
    ping = f"{P}/projects/{pid}/visitors/visitor-1/ping"
    resp = await client.post(ping, data=b"3", headers={"Content-Type": "application/json"})
    assert resp.status == 200
    ping_body = document["paths"][f"{P}/projects/{{project_id}}/visitors/{{visitor_id}}/ping"]
    assert {} in ping_body["post"]["requestBody"]["content"]["application/json"]["schema"]["anyOf"]

    # "initiate" is not a conversation id: other methods there are 405, Allow says POST.
    resp = await client.get(f"{P}/projects/{pid}/conversations/initiate")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_links_carry_ids_from_initiate_and_project_creation(client: ApiClient) -> None:
    document = await (await client.get("/api/openapi.json")).json()
    operations = {op["operationId"]: op for item in document["paths"].values() for op in item.values()}
    initiate_links = operations["participant_initiate"]["responses"]["200"]["links"]
    assert initiate_links["participant_get_upload_url"]["parameters"] == {
        "conversation_id": "$response.body#/id"}
    assert initiate_links["participant_get_conversation"]["parameters"] == {
        "project_id": "$response.body#/project_id", "conversation_id": "$response.body#/id"}
    project_links = operations["host_create_project"]["responses"]["201"]["links"]
    assert {"participant_initiate", "host_update_project", "host_start_auto_select"} <= set(
        project_links)
    for op in operations.values():
        for answer in op["responses"].values():
            for link in answer.get("links", {}).values():
                assert link["operationId"] in operations


def test_the_host_sets_exactly_the_fields_the_store_keeps_and_the_portal_reads_them() -> None:
    from gateway.api_models import Project, ProjectInput, PublicProject
    from storage.projects import PROJECT_FIELDS

    assert set(ProjectInput.model_fields) == set(PROJECT_FIELDS)
    assert set(PublicProject.model_fields) == set(PROJECT_FIELDS) - {"name"} | {"id"}
    assert set(PublicProject.model_fields) <= set(Project.model_fields)
