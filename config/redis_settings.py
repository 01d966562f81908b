"""The Redis section: ``open_redis`` and the auto-pipeline take it, and read nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import (
    SettingsError,
    int_at_least,
    parse_bool,
    parse_existing_file,
    parse_host_ports,
    parse_opt_str,
    parse_redis_url,
    parse_str,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class RedisSettings(SettingsSection):
    """Where Redis is and how to reach it; the prefix of every key."""

    redis_url: str | None = setting(
        "REDIS_URL", parse_redis_url, None,
        "redis:// or rediss:// URL; unset under `dev` starts a private server",
    )
    redis_max_connections: int = setting(
        "REDIS_MAX_CONNECTIONS", int_at_least(2), 20,
        "connections in the per-process pool (on Cluster: operations in flight per process); "
        "callers wait for a free one",
    )
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        "REDIS_SENTINELS", parse_host_ports, (),
        "host:port,... of Sentinels (with REDIS_SENTINEL_MASTER)",
    )
    redis_sentinel_master: str | None = setting(
        "REDIS_SENTINEL_MASTER", parse_opt_str, None, "name of the master the Sentinels watch"
    )
    redis_cluster: bool = setting(
        "REDIS_CLUSTER", parse_bool, False, "REDIS_URL names a node of a Redis Cluster"
    )
    redis_ca_file: str | None = setting(
        "REDIS_CA_FILE", parse_existing_file, None, "CA bundle that signs the rediss:// server"
    )
    redis_key_prefix: str = setting(
        "REDIS_KEY_PREFIX", parse_str, "echo", "prefix of every Redis key and stream name"
    )
    redis_autopipeline: bool = setting(
        "REDIS_AUTOPIPELINE", parse_bool, True,
        "send the API's Redis scripts over one auto-pipelined connection per process "
        "(not on Cluster); false uses the pool for them too",
    )

    def _check_combinations(self) -> None:
        super()._check_combinations()
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise SettingsError(
                "REDIS_SENTINEL_MASTER" if self.redis_sentinels else "REDIS_SENTINELS",
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together",
            )
        if self.redis_sentinels and self.redis_cluster:
            raise SettingsError("REDIS_CLUSTER", "cannot be combined with REDIS_SENTINELS")
        if self.redis_ca_file and (self.redis_sentinels or not (self.redis_url or "").startswith(
            "rediss://"
        )):
            raise SettingsError("REDIS_CA_FILE", "applies to a rediss:// REDIS_URL only")
        if self.redis_cluster and not self.redis_url:
            raise SettingsError("REDIS_URL", "REDIS_CLUSTER needs the URL of one cluster node")
        if not self.redis_key_prefix or any(c in self.redis_key_prefix for c in "{} \t"):
            raise SettingsError("REDIS_KEY_PREFIX", "must be non-empty, without braces or spaces")
