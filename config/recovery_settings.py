"""The recovery section: the stuck-work sweeper's interval, thresholds and cost bound."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import float_above, int_at_least, setting
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class RecoverySettings(SettingsSection):
    """The stuck-work sweeper (recovery/): one run per interval across the cluster."""

    stuck_sweep_interval_s: float = setting(
        "STUCK_SWEEP_INTERVAL_S", float_above(0), 1800.0,
        "time between two runs of the stuck-work sweeper, across every process",
    )
    stuck_after_s: float = setting(
        "STUCK_AFTER_S", float_above(0), 7200.0,
        "a conversation finished this long ago and not finalized is stuck",
    )
    stuck_sweep_max_items: int = setting(
        "STUCK_SWEEP_MAX_ITEMS", int_at_least(1), 2000,
        "conversations one sweep examines at most (the next run goes on from there)",
    )
    stuck_sweep_lease_s: float = setting(
        "STUCK_SWEEP_LEASE_S", float_above(0), 60.0,
        "lease of the sweep lock, renewed as the sweep goes; a dead sweeper's lock expires after it",
    )
