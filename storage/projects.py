"""Projects: a hash of JSON-encoded fields per project, and the host's listing by creation time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from redis.typing import EncodableT, FieldT

from storage.store_core import StoreCore, field_pairs

#: Every project field and its default (a stored project lacks none of them when read).
PROJECT_FIELDS: dict[str, Any] = {
    "name": "",
    "language": "en",
    "tags": [],
    "is_conversation_allowed": True,
    "is_get_reply_enabled": False,
    "is_verify_enabled": False,
    "is_verify_on_finish_enabled": False,
    "default_conversation_tutorial_slug": None,
    "default_conversation_title": None,
    "default_conversation_description": None,
    "default_conversation_finish_text": None,
    "default_conversation_ask_for_participant_name": False,
    "conversation_ask_for_participant_name_label": None,
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ProjectStore(StoreCore):
    """The project part of the store."""

    async def create_project(self, fields: Mapping[str, Any], project_id: str | None = None) -> dict[str, Any]:
        project_id = project_id or str(uuid.uuid4())
        doc = {**PROJECT_FIELDS, **{k: v for k, v in fields.items() if k in PROJECT_FIELDS}}
        now = _now_iso()
        doc.update(id=project_id, created_at=now, updated_at=now)
        encoded: dict[FieldT, EncodableT] = {k: json.dumps(v) for k, v in doc.items()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.project_key(project_id), mapping=encoded)
        pipe.zadd(self.projects_key(), {project_id: int(datetime.now(UTC).timestamp() * 1000)})
        await pipe.execute()
        return doc

    async def get_project(self, project_id: str) -> dict[str, Any] | None:
        raw = cast(dict[str, str], await self.redis.hgetall(self.project_key(project_id)))
        if not raw:
            return None
        doc = dict(PROJECT_FIELDS)
        doc.update({k: json.loads(v) for k, v in raw.items()})
        return doc

    async def update_project(self, project_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        encoded = {k: json.dumps(v) for k, v in changes.items() if k in PROJECT_FIELDS}
        encoded["updated_at"] = json.dumps(_now_iso())
        updated = await self._run("update_if_exists", [self.project_key(project_id)], field_pairs(encoded))
        if not int(updated):
            return None
        return await self.get_project(project_id)

    async def list_projects(self, limit: int = 1000) -> list[dict[str, Any]]:
        ids = cast(list[str], await self.redis.zrange(self.projects_key(), 0, limit - 1))
        projects = [await self.get_project(pid) for pid in ids]
        return [p for p in projects if p is not None]

    async def project_is_open(self, project_id: str) -> bool | None:
        """Whether the project takes participation (None: unknown project)."""
        raw = await self.redis.hget(self.project_key(project_id), "is_conversation_allowed")
        return None if raw is None else bool(json.loads(raw))
