"""Bearer-token check of the host (admin) API."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.appkeys import SETTINGS
from gateway.errors import Unauthorized


def require_host(request: web.Request) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <ADMIN_TOKEN>``.

    The comparison is constant-time; with no ADMIN_TOKEN configured the host
    API refuses everyone.
    """
    expected = request.app[SETTINGS].admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not token:
        raise Unauthorized("a valid host token is required", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.strip().encode(), expected.reveal().encode()):
        raise Unauthorized("a valid host token is required", headers={"WWW-Authenticate": "Bearer"})
