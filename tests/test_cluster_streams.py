"""The streams core on a real 3-master Redis Cluster: publish, consume, retries, reclaim
after a crash, deferral, dead letters, retention and backlog, with one runtime reading
streams that live on different masters.

Besides the test below, the core's own specifications are imported: pytest collects them
again in this module, where the ``redis_cluster`` mark moves their fixtures (``r``,
``publisher``, ``stream_settings``...) onto the cluster. To run another existing test on
Cluster, import it here the same way.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import test_streams_churn as churn
import test_streams_delivery as delivery
import test_streams_housekeeping as housekeeping
import test_streams_runtime as runtime
from streams_support import DEADLINE_S, running, wait_all_acked
from waiting import wait_until

from storage.redis_client import RedisClient
from streams.config import StreamsConfig
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec

pytestmark = pytest.mark.redis_cluster

# Specifications of the single-server suite, collected again here (on Cluster).
test_entry_taken_but_never_started_runs_as_a_first_attempt_elsewhere = churn.test_entry_taken_but_never_started_runs_as_a_first_attempt_elsewhere
test_start_markers_leave_nothing_behind_once_acked_deferred_or_dead_lettered = churn.test_start_markers_leave_nothing_behind_once_acked_deferred_or_dead_lettered
test_worker_killed_mid_handler_past_max_deliveries_dead_letters_as_a_crash = churn.test_worker_killed_mid_handler_past_max_deliveries_dead_letters_as_a_crash
test_deferred_event_runs_again_later_without_counting_as_a_failure = delivery.test_deferred_event_runs_again_later_without_counting_as_a_failure
test_failing_handler_is_retried_with_growing_delivery_count_until_it_succeeds = delivery.test_failing_handler_is_retried_with_growing_delivery_count_until_it_succeeds
test_poison_event_lands_in_dead_letters_after_max_deliveries_while_others_flow = delivery.test_poison_event_lands_in_dead_letters_after_max_deliveries_while_others_flow
test_published_event_reaches_its_handler_typed_and_is_acked = delivery.test_published_event_reaches_its_handler_typed_and_is_acked
test_unknown_type_and_bad_payload_go_to_dead_letters_while_others_flow = delivery.test_unknown_type_and_bad_payload_go_to_dead_letters_while_others_flow
test_backlog_reports_each_stream_and_group = housekeeping.test_backlog_reports_each_stream_and_group
test_dead_consumers_are_removed_only_with_nothing_pending = housekeeping.test_dead_consumers_are_removed_only_with_nothing_pending
test_deferred_event_enters_the_stream_again_only_when_due = housekeeping.test_deferred_event_enters_the_stream_again_only_when_due
test_retention_keeps_what_a_slow_group_has_not_acked = housekeeping.test_retention_keeps_what_a_slow_group_has_not_acked
test_retention_never_trims_undelivered_entries_of_a_slow_group = housekeeping.test_retention_never_trims_undelivered_entries_of_a_slow_group
test_runtime_recreates_a_deleted_group = runtime.test_runtime_recreates_a_deleted_group
test_stop_mid_work_loses_nothing = runtime.test_stop_mid_work_loses_nothing

STREAMS = ("uploads", "transcription", "llm")


async def test_one_runtime_consumes_streams_that_live_on_different_masters(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: Counter[str] = Counter()

    async def handle(ctx: EventContext) -> None:
        seen[ctx.stream] += 1

    specs = [GroupSpec(stream, f"{stream}-group", handle) for stream in STREAMS]
    async with running(r, streams_config, *specs):
        await asyncio.gather(*(publisher.publish(stream, "e", {"n": n})
                               for stream in STREAMS for n in range(20)))
        await wait_until(lambda: seen == dict.fromkeys(STREAMS, 20), timeout_s=DEADLINE_S,
                         message="not every stream's events were consumed")
        for stream in STREAMS:
            await wait_all_acked(r, names, stream, f"{stream}-group")
