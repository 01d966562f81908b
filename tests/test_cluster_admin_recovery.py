"""The admin recovery routes (stuck work, manual recovery) on a real 3-master Redis Cluster:
the single-server specifications of tests/test_recovery_admin.py collected again here, where
the ``redis_cluster`` mark moves their fixtures onto the session's cluster.

A test collected again sees the fixtures and marks of the module collecting it: the source
module's ``env`` mark (RECOVERY_OVERRIDES: stuck after 1 s, not the default 2 h) and its
bucket are bound here too, else the dry run would find nothing stuck.
"""

from __future__ import annotations

import pytest
import test_recovery_admin as recovery_admin

pytestmark = [pytest.mark.redis_cluster, recovery_admin.pytestmark]

bucket_name = recovery_admin.bucket_name

test_stuck_is_a_dry_run_of_the_sweeper = recovery_admin.test_stuck_is_a_dry_run_of_the_sweeper
test_recover_re_drives_a_conversation_and_repeating_it_is_harmless = (
    recovery_admin.test_recover_re_drives_a_conversation_and_repeating_it_is_harmless)
