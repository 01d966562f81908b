"""Redis key names the LLM layer owns: auto-select jobs (``{job:<id>}``).

The LLM call bound's keys (``<prefix>:{llm}:permits:*``) belong to
:class:`storage.permits.LimiterKeys`.
"""

from __future__ import annotations


def job_key(prefix: str, job_id: str) -> str:
    """Hash holding one job's status and per-batch results."""
    return f"{prefix}:{{job:{job_id}}}"
