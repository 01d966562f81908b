"""The OpenAPI 3.1 document describes exactly the API routes the app serves (the browser
pages of ``gateway/pages.py`` are not API)."""

from __future__ import annotations

import re

from aiohttp import web
from api_support import ApiClient, build_app

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
