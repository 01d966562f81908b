"""The streams runtime against raw redis-py loops (and FastStream), same run, default settings.

    .venv/bin/python bench/streams.py [--events 20000] [--rounds 5] [--json]

Starts a private redis-server and measures, each figure the median of
``--rounds`` alternating rounds (the spread, min-max, is printed beside it):

* **consume**: a stream pre-filled with ``--events`` no-op events (200-byte
  JSON payloads, in our envelope), one process, one group, drained by
  (a) a raw loop: ``XREADGROUP COUNT 100``, one multi-id ``XACK`` per batch;
  (b) :class:`~streams.runtime.ConsumerRuntime` with **default** settings and
  a no-op handler, timed from ``start()`` until nothing is pending (acks are
  part of the work); (c) FastStream's Redis Streams subscriber in a consumer
  group, with its defaults (``pip install -e '.[bench]'``; skipped without).
  Worker CPU per event (this process's CPU time / events) beside each.
* **publish, awaited**: one task awaiting each publish in turn: a bare
  ``await redis.xadd(...)`` of ready-made fields against
  ``await Publisher.publish(...)`` (which also builds the envelope).
* **publish, 100 concurrent**: 100 tasks publishing at once, as HTTP requests
  do, through the publisher on the auto-pipelined connection the gateway gives
  it, against a raw loop of pipelined XADDs (100 per round trip).

* **scale-out**: consume with 1 and with 2 worker processes (each a
  ``ConsumerRuntime`` with default settings) on one stream and group: the
  stream is filled first, the workers start and wait, then the group is set
  back to the start and one more entry wakes them; timed until nothing is
  pending or undelivered.

Targets: consume >= 0.5 of raw; awaited publish cost <= 1.1 x a bare XADD;
concurrent publish >= 0.7 of raw pipelined. ``--json`` prints the rows for
``bench/run``.

The timed loops of each figure are in ``bench/streams_loops.py``; the scale-out
figure's worker processes run this script with ``--worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from streams_loops import (
    PAYLOAD,
    Run,
    consume_faststream,
    consume_raw,
    consume_runtime,
    prefill,
    publish_awaited,
    publish_bare_awaited,
    publish_concurrent,
    publish_raw_pipelined,
)

from config import Settings
from devstack.servers import RedisServer
from gateway.wiring import publisher_for, streams_config
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import RedisClient, open_redis
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.runtime import ConsumerRuntime
from streams.spec import EventContext, GroupSpec

# --- scale-out


async def _serve_worker(url: str) -> int:
    """A worker process of the scale-out figure: default settings, no-op handler, until
    its standard input closes."""
    settings = Settings.from_env({"REDIS_URL": url})

    async def handle(ctx: EventContext) -> None:
        return None

    async with open_redis(settings) as r:
        runtime = ConsumerRuntime(r, streams_config(settings), CollectorRegistry(),
                                  [GroupSpec("bench-procs", "g", handle)])
        await runtime.start()
        await asyncio.to_thread(sys.stdin.read)
        await runtime.stop(5)
    return 0


async def consume_processes(r: RedisClient, settings: Settings, n: int, procs: int) -> Run:
    key = StreamNames(settings.redis_key_prefix).stream("bench-procs")
    await prefill(r, key, n)
    await r.xgroup_create(key, "g", id="$")
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", settings.redis_url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        for _ in range(procs)
    ]
    try:
        while len(await r.xinfo_consumers(key, "g")) < procs:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # all blocked in their idle read

        async def body() -> None:
            await r.xgroup_setid(key, "g", id="0", entries_read=0)
            await r.xadd(key, Envelope("noop", PAYLOAD).fields())  # type: ignore[arg-type]
            while True:
                [group] = await r.xinfo_groups(key)
                if group["pending"] == 0 and group["lag"] == 0:
                    return
                await asyncio.sleep(0.005)

        t0 = time.perf_counter()
        await asyncio.wait_for(body(), 300)
        return Run((n + 1) / (time.perf_counter() - t0), 0.0)
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            await child.wait()
        await r.delete(key)


# --- report


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    ratio: float
    target: str
    passed: bool | None
    spread: str
    note: str = ""


def _median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.rate for r in runs), statistics.median(r.cpu_us for r in runs))


def _spread(runs: list[Run]) -> str:
    rates = [r.rate for r in runs]
    return f"{min(rates):.0f}-{max(rates):.0f}"


def _ratio_row(figure: str, ours: list[Run], base_name: str, base: list[Run],
               target: float) -> Row:
    # Rounds alternate, so each round's two runs are close in time: the median of the
    # per-round ratios cancels drift in the machine's speed best.
    ratio = statistics.median(o.rate / b.rate for o, b in zip(ours, base))
    o = _median(ours)
    return Row(figure, o.rate, "events/s", base_name, _median(base).rate, ratio,
               f">= {target}", ratio >= target, f"{_spread(ours)} vs {_spread(base)}",
               f"{o.cpu_us:.1f} vs {_median(base).cpu_us:.1f} us CPU/event")


async def main(events: int, rounds: int, as_json: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        await server.start()
        try:
            settings = Settings.from_env({"REDIS_URL": server.url})
            names = StreamNames(settings.redis_key_prefix)
            runs: dict[str, list[Run]] = {k: [] for k in (
                "raw", "runtime", "faststream", "bare", "awaited", "pooled", "pipelined",
                "concurrent", "procs1", "procs2")}
            async with open_redis(settings) as r, open_autopipeline(settings, r) as ap:
                pooled = publisher_for(r, settings)
                piped = publisher_for(r, settings, autopipeline=ap)
                await consume_raw(r, names, 2000)  # warm up
                pub_n = max(2000, events // 4)
                for round_no in range(rounds):
                    raw = await consume_raw(r, names, events)
                    ours = await consume_runtime(r, settings, events)
                    peer = await consume_faststream(r, settings, events)
                    runs["raw"].append(raw)
                    runs["runtime"].append(ours)
                    if peer is not None:
                        runs["faststream"].append(peer)
                    runs["bare"].append(await publish_bare_awaited(r, names, pub_n))
                    runs["awaited"].append(await publish_awaited(r, piped, names, pub_n))
                    runs["pooled"].append(await publish_awaited(r, pooled, names, pub_n))
                    runs["pipelined"].append(await publish_raw_pipelined(r, names, events))
                    runs["concurrent"].append(await publish_concurrent(r, piped, names, events))
                    if not as_json:
                        print(f"round {round_no + 1}/{rounds}: consume raw {raw.rate:.0f}, runtime "
                              f"{ours.rate:.0f}"
                              + (f", faststream {peer.rate:.0f}" if peer else "")
                              + f"; publish bare {runs['bare'][-1].rate:.0f}, awaited "
                              f"{runs['awaited'][-1].rate:.0f}, pipelined "
                              f"{runs['pipelined'][-1].rate:.0f}, 100 concurrent "
                              f"{runs['concurrent'][-1].rate:.0f} events/s", flush=True)
                for round_no in range(max(1, rounds // 2)):
                    runs["procs1"].append(await consume_processes(r, settings, events, 1))
                    runs["procs2"].append(await consume_processes(r, settings, events, 2))
                    if not as_json:
                        print(f"scale-out round {round_no + 1}: 1 process "
                              f"{runs['procs1'][-1].rate:.0f}, 2 processes "
                              f"{runs['procs2'][-1].rate:.0f} events/s", flush=True)
        finally:
            await asyncio.to_thread(server.stop)
    rows = [_ratio_row("streams: consume, default settings", runs["runtime"],
                       "raw XREADGROUP+XACK loop", runs["raw"], 0.5)]
    if runs["faststream"]:
        row = _ratio_row("streams: consume, FastStream (peer)", runs["faststream"],
                         "raw XREADGROUP+XACK loop", runs["raw"], 0.0)
        row.target, row.passed = "(peer)", None
        rows.append(row)
    # Cost of an awaited publish relative to a bare XADD: bare rate / publish rate.
    cost = statistics.median(b.rate / a.rate for a, b in zip(runs["awaited"], runs["bare"]))
    rows.append(Row("streams: publish, awaited (cost)", _median(runs["awaited"]).rate,
                    "events/s", "bare awaited XADD", _median(runs["bare"]).rate, cost,
                    "<= 1.1", cost <= 1.1,
                    f"{_spread(runs['awaited'])} vs {_spread(runs['bare'])}"))
    pooled_cost = statistics.median(
        b.rate / a.rate for a, b in zip(runs["pooled"], runs["bare"]))
    rows.append(Row("streams: publish, awaited, pooled client", _median(runs["pooled"]).rate,
                    "events/s", "bare awaited XADD", _median(runs["bare"]).rate, pooled_cost,
                    "<= 1.1", pooled_cost <= 1.1,
                    f"{_spread(runs['pooled'])} vs {_spread(runs['bare'])}",
                    "REDIS_AUTOPIPELINE=false or Cluster"))
    rows.append(_ratio_row("streams: publish, 100 concurrent", runs["concurrent"],
                           "raw pipelined XADD loop", runs["pipelined"], 0.7))
    scale = _ratio_row("streams: consume, 2 worker processes", runs["procs2"],
                       "1 worker process", runs["procs1"], 0.0)
    scale.target, scale.passed, scale.note = "(for reading)", None, "2 cores, Redis among them"
    rows.append(scale)
    if as_json:
        for row in rows:
            print("ROW " + json.dumps(row.__dict__))
    else:
        for row in rows:
            print(f"{row.figure:40s} {row.value:9.0f} {row.unit}  {row.baseline_name} "
                  f"{row.baseline:9.0f}  ratio {row.ratio:.2f} (target {row.target}"
                  f"{'' if row.passed is None else ', ' + ('pass' if row.passed else 'MISS')})"
                  f"  spread {row.spread}  {row.note}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print ROW lines for bench/run")
    parser.add_argument("--worker", metavar="REDIS_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    job = _serve_worker(args.worker) if args.worker else main(args.events, args.rounds, args.json)
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(job))
    sys.exit(uvloop.run(job))
