"""``echo-gateway dev`` out of the box: an admin token and a demo project kept in the data dir,
the pages' own origin allowed (API and bucket CORS), and the lines a person can click.

Kept in ``<data-dir>``: ``admin-token`` (made when ``ADMIN_TOKEN`` is unset, mode 0600,
printed on the start that made it) and ``demo-project`` (the id of the project made on
the first start; made again if that project is gone, e.g. after the Redis data was wiped).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from config import Secret, Settings
from storage.conversations import ConversationStore
from storage.redis_client import open_redis

ADMIN_TOKEN_FILE = "admin-token"
DEMO_PROJECT_FILE = "demo-project"
DEMO_PROJECT = {
    "name": "Demo",
    "language": "en",
    "is_conversation_allowed": True,
    "default_conversation_title": "Demo conversation",
    "default_conversation_description": (
        "Press Start recording and talk for a while; press Stop and finish to see the transcript."
    ),
    "default_conversation_finish_text": "Thank you! The transcript and summary appear below.",
    "default_conversation_ask_for_participant_name": True,
    "conversation_ask_for_participant_name_label": "Your name",
}


@dataclass(frozen=True)
class FirstRun:
    """What ``dev`` adds to the settings, and what it prints."""

    settings: Settings
    demo_project_id: str
    #: The token when this start made it (printed once), else None.
    new_admin_token: str | None
    admin_token_file: Path | None


def page_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins a browser uses for pages served on ``host:port``."""
    if host in ("127.0.0.1", "localhost", "0.0.0.0", "::", ""):
        return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    return (f"http://{host}:{port}",)


def admin_token(settings: Settings, data_dir: Path) -> tuple[Settings, str | None, Path | None]:
    """``ADMIN_TOKEN``, or the one kept in the data dir, or a new one kept there.

    Returns the settings with the token, the token if it was made now, and its file."""
    if settings.admin_token:
        return settings, None, None
    path = data_dir / ADMIN_TOKEN_FILE
    made: str | None = None
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = made = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return settings.replace(admin_token=Secret(token)), made, path


async def demo_project(settings: Settings, data_dir: Path) -> str:
    """The id of the demo project (made on the first start, kept across restarts)."""
    path = data_dir / DEMO_PROJECT_FILE
    async with open_redis(settings) as redis:
        store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
        try:
            project_id = path.read_text().strip()
        except FileNotFoundError:
            project_id = ""
        if project_id and await store.get_project(project_id) is not None:
            return project_id
        project = await store.create_project(DEMO_PROJECT)
    path.write_text(str(project["id"]) + "\n")
    return str(project["id"])


async def prepare(settings: Settings, data_dir: Path, *, host: str, port: int) -> FirstRun:
    """Token, demo project and the pages' origins (call with the local stack's settings)."""
    data_dir = data_dir.resolve()
    settings, made, token_file = admin_token(settings, data_dir)
    origins = tuple(dict.fromkeys((*settings.cors_allow_origins, *page_origins(host, port))))
    settings = settings.replace(cors_allow_origins=origins)
    project_id = await demo_project(settings, data_dir)
    return FirstRun(settings, project_id, made, token_file)


def announcement(run: FirstRun, *, host: str, port: int, data_dir: Path) -> str:
    """What ``dev`` prints once it serves: three clickable lines first."""
    base = page_origins(host, port)[0]
    settings = run.settings
    if run.new_admin_token:
        token_line = f"  admin token    {run.new_admin_token}  (made now, kept in {run.admin_token_file})"
    elif run.admin_token_file:
        token_line = f"  admin token    in {run.admin_token_file}"
    else:
        token_line = "  admin token    ADMIN_TOKEN from the environment"
    data = data_dir.resolve()
    return "\n".join((
        f"echo-gateway dev serving {base}/",
        f"  participant    {base}/p/{run.demo_project_id}",
        f"  host           {base}/host/{run.demo_project_id}",
        f"  API document   {base}/api/openapi.json",
        token_line,
        f"  redis          {settings.redis_url}",
        f"  s3             {settings.s3_endpoint_url} (bucket {settings.s3_bucket})",
        f"  data           {data}",
        f"  new project    echo-gateway project create --name NAME --data-dir {data}",
        "Ctrl-C stops everything.",
    ))
