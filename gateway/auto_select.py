"""Host API routes of auto-select: start a job (run by the ``llm`` group), read a job.

``POST /api/projects/{project_id}/auto-select`` ``{"query", "language"?}`` -> 202
``{"job_id", "status_url"}``; the job runs on the ``llm`` stream.
``GET /api/jobs/{job_id}`` -> status, ``batches_total``, ``batches_done``,
``selected_conversation_ids`` (merged in batch order) and per-batch ``errors``.
Both need the host token.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from events import catalogue as events
from gateway import validation as v
from gateway.api_docs import FROM_PROJECT, HOST_ERRORS, Feed, endpoint
from gateway.api_models import AutoSelectAccepted, AutoSelectRequest, Job
from gateway.appkeys import API_SERVICES, LLM
from gateway.errors import NotFound
from gateway.middlewares import request_id_of
from gateway.responses import json_response

routes = web.RouteTableDef()

_JOB_ID = re.compile(r"[0-9a-f]{32}")


@routes.post("/api/projects/{project_id}/auto-select")
@endpoint("Ask which of a project's conversations answer a question (an LLM job, batch by batch)",
          tags=["host"], host=True, body=AutoSelectRequest, responses={202: AutoSelectAccepted},
          errors=HOST_ERRORS, headers={"Location": "the job's status URL"},
          fed_by=[FROM_PROJECT])
async def start_auto_select(request: web.Request, body: AutoSelectRequest) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    query, language = body.query.strip(), body.language
    services = request.app[API_SERVICES]
    if await services.store.get_project(project_id) is None:
        raise NotFound(f"project {project_id} not found", code="project_not_found")
    job_id = uuid.uuid4().hex
    await request.app[LLM].jobs.create(
        project_id=project_id, query=query, language=language, job_id=job_id
    )
    await events.publish(
        services.publisher, events.AUTO_SELECT_REQUESTED,
        events.AutoSelectRequest(job_id, project_id, query, language),
        request_id=request_id_of(request) or "",
    )
    return json_response(
        {"job_id": job_id, "status": "queued", "status_url": f"/api/jobs/{job_id}"},
        status=202,
        headers={"Location": f"/api/jobs/{job_id}"},
    )


@routes.get("/api/jobs/{job_id}")
@endpoint("An auto-select job's progress and merged selection", tags=["host"], host=True,
          responses={200: Job}, errors=HOST_ERRORS, path={"job_id": {"type": "string"}},
          fed_by=[Feed("host_start_auto_select", {"job_id": "$response.body#/job_id"})])
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    if not _JOB_ID.fullmatch(job_id):
        raise NotFound("job not found", code="job_not_found")
    view = await request.app[LLM].jobs.get(job_id)
    if view is None:
        raise NotFound("job not found", code="job_not_found")
    return json_response(view.to_json())
