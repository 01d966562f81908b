"""schemathesis checks for tests/test_api_fuzz.py (loaded through ``SCHEMATHESIS_HOOKS``).

``positive_data_acceptance`` is replaced by :func:`schema_valid_requests_are_accepted`: the
contract answers 400 to a few requests the document cannot describe (a ``file_url`` of
another conversation, an unknown tag id, a body ``conversation_id`` that differs from the
path). Those 400s carry their own ``code``; a 400 with any other code to a schema-valid
request means the document and the validators disagree.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: 400 codes of refusals that depend on state or on another field, not on the schema.
SEMANTIC_400_CODES = frozenset({"unknown_tag_ids", "conversation_id_mismatch", "foreign_file_url"})
ACCEPTED = frozenset({401, 403, 404, 409, 429})


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


@schemathesis.check
def schema_valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED:
        return None
    if status == 400 and _code(response) in SEMANTIC_400_CODES:
        return None
    raise AssertionError(
        f"a schema-valid request was refused: {status} {response.text[:300]}"
    )


# The legacy upload's ``chunk`` part is sent as audio/webm: random bytes, as for any file.
schemathesis.serializer.alias("audio/webm", "application/octet-stream")
