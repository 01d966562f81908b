"""The background workflows on a real 3-master Redis Cluster: an upload confirmed before its
object exists is verified by the ``upload-confirmation`` group (deferrals), and an
auto-select job runs on the ``llm`` stream (its MULTI and its Lua scripts, ``llm/lua``).

Their specifications are imported from the single-server suite and collected again here,
where the ``redis_cluster`` mark moves their fixtures onto the cluster (with the fixtures
they need: ``run_consumer``; ``host_settings`` and the ``client`` running the llm group).
"""

from __future__ import annotations

import pytest
import test_api_uploads_confirmation as confirmation
import test_llm_jobs_http as jobs

pytestmark = pytest.mark.redis_cluster

run_consumer = confirmation.run_consumer
test_confirm_before_the_object_exists_is_202_then_the_consumer_verifies_it = (
    confirmation.test_confirm_before_the_object_exists_is_202_then_the_consumer_verifies_it
)

host_settings = jobs.host_settings
client = jobs.client
test_auto_select_job_runs_on_the_stream_and_merges_in_order = (
    jobs.test_auto_select_job_runs_on_the_stream_and_merges_in_order
)
