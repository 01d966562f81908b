"""The browser pages: ``/`` (landing), ``/p/{project_id}`` (participant), ``/host/{project_id}``.

Static files from ``gateway/static/`` (vanilla JS, no build step, no CDN) that use
the public API like any other client; they are not part of the API document.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway import validation as v
from gateway.appkeys import DEMO_PROJECT_ID
from gateway.errors import NotFound
from gateway.responses import json_response

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Pages are small and change with releases: let browsers revalidate every time.
PAGE_HEADERS = {"Cache-Control": "no-cache"}

routes = web.RouteTableDef()


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=PAGE_HEADERS)


@routes.get("/")
async def landing(request: web.Request) -> web.FileResponse:
    return _page("index.html")


@routes.get("/demo.json")
async def demo(request: web.Request) -> web.Response:
    """``{"project_id"}`` of ``dev``'s demo project, for the landing page; 404 elsewhere."""
    project_id = request.app.get(DEMO_PROJECT_ID)
    if project_id is None:
        raise NotFound("no demo project on this server", code="no_demo_project")
    return json_response({"project_id": project_id})


@routes.get("/p/{project_id}")
async def participant_page(request: web.Request) -> web.FileResponse:
    v.path_uuid(request, "project_id")
    return _page("participant.html")


@routes.get("/host/{project_id}")
async def host_page(request: web.Request) -> web.FileResponse:
    v.path_uuid(request, "project_id")
    return _page("host.html")


def add_page_routes(app: web.Application) -> None:
    """The pages and ``/static/`` (the pages' scripts and styles)."""
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
