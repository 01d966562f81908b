"""The participant API (``/api/participant``): the contract in ../shared/CONTRACT.md.

Handlers validate every input first (400), then look the ids up (404), then
check the project is open (403, reads excepted), then take rate-limit quota
(429), and only then change state: so a refused request changes nothing
(:mod:`.checks` holds those checks).

:mod:`.conversations` serves projects, conversations, text chunks and finish;
:mod:`.uploads` the upload routes (their workflows are :mod:`gateway.upload_workflows`);
:mod:`.telemetry` the pings.
"""

from __future__ import annotations

from aiohttp import web

from gateway.participant import conversations, telemetry, uploads

#: Every participant route, for ``app.add_routes``.
routes: tuple[web.AbstractRouteDef, ...] = (
    *conversations.routes, *uploads.routes, *telemetry.routes,
)
