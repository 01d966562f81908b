"""The Prometheus alert rules (``deploy/prometheus/alerts.yml``): valid, firing when they should
(``alerts_test.yml``), and naming only metrics the code exports, so they cannot drift."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from config import Settings
from gateway.app import create_app
from gateway.appkeys import METRICS_REGISTRY
from gateway.consumers import worker_background
from gateway.lifecycle import llm_ctx

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
METRIC = re.compile(r"\b(echo_[a-z0-9_]+)\b")
#: Metrics of the stuck-work sweeper (issue 11), written by the recovery work on another
#: branch. While no source file names one of them they may be missing; once one does,
#: the running processes must export it like any other.
AWAITED_FROM_RECOVERY = frozenset({
    "echo_sweeper_last_success_timestamp_seconds", "echo_stuck_conversations_found_total",
    "echo_stuck_chunks_found_total", "echo_recovered_total",
})
SOURCE_PACKAGES = ("config", "storage", "streams", "events", "uploads", "transcription", "llm",
                   "recovery", "gateway")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not on PATH (Debian package `prometheus`); the rules are not checked",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], check=False, capture_output=True, text=True,
                          timeout=60, cwd=RULES_DIR)


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """Sweeper stale and absent, dead letters growing, a long LLM pause, Redis unreachable:
    each fires on the series that should set it off, and not before."""
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose (a counter ``x`` is ``x_total``...)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                "_created"), "summary": ("_sum", "_count", "_created"), "gauge": ("",)}
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def named_in_source(name: str) -> bool:
    root = RULES_DIR.parent.parent
    base = name.removesuffix("_total")
    return any(base in path.read_text(encoding="utf-8")
               for package in SOURCE_PACKAGES for path in (root / package).rglob("*.py"))


async def test_every_metric_the_alert_rules_name_is_exported_by_a_running_process(
    aiohttp_client: AiohttpClient, env: dict[str, str],
) -> None:
    """The ``dev`` composition (the API, every consumer group and what they need) registers
    its metrics; the rules may name only those."""
    settings = Settings.from_env({
        **env, "TRANSCRIBER": "openai", "TRANSCRIBER_URL": "http://127.0.0.1:9/v1",
    })
    app = create_app(settings, background=worker_background([], already=(llm_ctx,)))
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 200
    exported = sample_names(app[METRICS_REGISTRY])
    named = set(METRIC.findall(RULES.read_text(encoding="utf-8")))
    assert named, "no echo_* metric found in the rules"
    awaited = {n for n in named & AWAITED_FROM_RECOVERY if not named_in_source(n)}
    assert named - exported - awaited == set(), "alert rules name metrics nothing exports"
