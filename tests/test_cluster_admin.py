"""The admin API of streams and dead letters on a real 3-master Redis Cluster: the
single-server specifications of tests/test_api_admin_streams.py collected again here, where
the ``redis_cluster`` mark moves their fixtures (``client``, ``redis``...) onto the session's
cluster (tests/cluster_support.py).

A test collected again sees the fixtures of the module collecting it, not of the module
defining it: the source module's own fixtures are bound here too. The recovery routes, whose
module overrides ``client`` and ``settings``, are collected in test_cluster_admin_recovery.py.
"""

from __future__ import annotations

import pytest
import test_api_admin_streams as streams_admin

pytestmark = pytest.mark.redis_cluster

app_streams = streams_admin.app_streams
app_publisher = streams_admin.app_publisher

test_streams_answers_the_backlog_rows_of_every_stream = (
    streams_admin.test_streams_answers_the_backlog_rows_of_every_stream)
test_a_replayed_dead_letter_is_handled_once_and_a_second_replay_is_404 = (
    streams_admin.test_a_replayed_dead_letter_is_handled_once_and_a_second_replay_is_404)
test_dead_letters_come_a_page_at_a_time_and_a_drop_removes_one = (
    streams_admin.test_dead_letters_come_a_page_at_a_time_and_a_drop_removes_one)
test_admin_routes_refuse_a_missing_or_wrong_token_with_401_saying_nothing_of_ids = (
    streams_admin.test_admin_routes_refuse_a_missing_or_wrong_token_with_401_saying_nothing_of_ids)
