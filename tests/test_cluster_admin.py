"""The admin API (streams, dead letters, stuck work, manual recovery) on a real 3-master
Redis Cluster: the single-server specifications collected again here, where the
``redis_cluster`` mark moves their fixtures (``client``, ``redis``...) onto the session's
cluster (tests/cluster_support.py)."""

from __future__ import annotations

import pytest
import test_api_admin_streams as streams_admin
import test_recovery_admin as recovery_admin

pytestmark = pytest.mark.redis_cluster

test_streams_answers_the_backlog_rows_of_every_stream = (
    streams_admin.test_streams_answers_the_backlog_rows_of_every_stream)
test_a_replayed_dead_letter_is_handled_once_and_a_second_replay_is_404 = (
    streams_admin.test_a_replayed_dead_letter_is_handled_once_and_a_second_replay_is_404)
test_dead_letters_come_a_page_at_a_time_and_a_drop_removes_one = (
    streams_admin.test_dead_letters_come_a_page_at_a_time_and_a_drop_removes_one)
test_admin_routes_refuse_a_missing_or_wrong_token_with_401_saying_nothing_of_ids = (
    streams_admin.test_admin_routes_refuse_a_missing_or_wrong_token_with_401_saying_nothing_of_ids)
test_stuck_is_a_dry_run_of_the_sweeper = recovery_admin.test_stuck_is_a_dry_run_of_the_sweeper
test_recover_re_drives_a_conversation_and_repeating_it_is_harmless = (
    recovery_admin.test_recover_re_drives_a_conversation_and_repeating_it_is_harmless)
