"""Benchmark: get-upload-url requests per second against a bare aiohttp handler, same run, same load.

Starts a private Redis and SeaweedFS, then serves, side by side and each in
one uvloop process, (1) a bare aiohttp app whose POST handler parses the same
JSON and answers a JSON object with the same top-level keys (smaller: its
``fields`` has no policy or signature, so the baseline errs on the fast
side), and (2) the gateway
(``create_app`` + the participant API). Each gets the same ``wrk`` load:
POSTs to ``get-upload-url`` spread over many conversations (so the 40/60 s
limit never bites), in alternating rounds (bare first in odd rounds, gateway
first in even ones), so that drift in the machine's speed hits both alike.
Prints each round, the median requests per second of each server with its p99
latency, and the ratio: the median of the rounds' ratios (the two runs of a
round are close in time, so their ratio cancels drift best), with the ratio of
the medians beside it. Target: the gateway reaches at least 0.5 of the
bare handler (stretch 0.6). A third server, the gateway with
``REDIS_AUTOPIPELINE=false``, runs in the same rounds: the auto-pipelined
connection's worth. ``--json`` prints the rows for ``bench/run``.

    .venv/bin/python bench/gateway.py [--duration 10] [--rounds 5] [--connections 16] [--conversations 12000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.servers import RedisServer, SeaweedServer, free_port

ADMIN_TOKEN = "bench-admin-token"

WRK_SCRIPT = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"filename": "chunk-1.webm", "content_type": "audio/webm;codecs=opus"}'
request = function()
  n = n + 1
  local id = ids[(n %% #ids) + 1]
  return wrk.format(nil, "/api/participant/conversations/" .. id .. "/get-upload-url")
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{\\"p99_us\\": %%d, \\"requests\\": %%d, \\"non2xx\\": %%d}\\n",
    latency:percentile(99), summary.requests, summary.errors.status))
end
"""

SERVE_BARE = """
import sys
sys.path.insert(0, %(root)r)
from aiohttp import web
from gateway.runner import run_async, serve_app

async def handler(request):
    body = await request.json()
    cid = request.match_info["conversation_id"]
    return web.json_response({"chunk_id": cid, "upload_url": "http://x/b", "fields": {"key": body["filename"]},
                              "file_url": "http://x/b/" + body["filename"]})

app = web.Application()
app.router.add_post("/api/participant/conversations/{conversation_id}/get-upload-url", handler)
app.router.add_get("/healthz", lambda r: web.json_response({"ok": True}))
sys.exit(run_async(lambda: serve_app(app, host="127.0.0.1", port=%(port)d, reuse_port=False,
                                     shutdown_grace_s=1)))
"""

SERVE_GATEWAY = """
import sys
sys.path.insert(0, %(root)r)
from config import Settings
from gateway.app import create_app
from gateway.routes import add_api_routes
from gateway.runner import run_async, serve_app

settings = Settings.from_env()
app = create_app(settings)
if not any(getattr(r.resource, "canonical", "").startswith("/api/participant") for r in app.router.routes()):
    add_api_routes(app)
sys.exit(run_async(lambda: serve_app(app, host="127.0.0.1", port=%(port)d, reuse_port=False,
                                     shutdown_grace_s=1)))
"""


async def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("server exited")
            try:
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


def _wrk(port: int, script: Path, duration_s: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration_s}s", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    extra = json.loads(out.split("JSON", 1)[1].splitlines()[0])
    return {"rps": rps, "p99_ms": extra["p99_us"] / 1000, "non2xx": extra["non2xx"],
            "requests": extra["requests"]}


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run of median throughput (its own p99 with it); the non-2xx of every run."""
    median = sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]
    return {**median, "non2xx": sum(run["non2xx"] for run in runs)}


async def _conversations(base: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/api/host/projects", json={"name": "bench"}, headers=headers) as r:
            project = await r.json()
        sem = asyncio.Semaphore(32)

        async def one() -> str:
            async with sem, http.post(
                f"{base}/api/participant/projects/{project['id']}/conversations/initiate",
                json={"name": "bench"},
            ) as r:
                return str((await r.json())["id"])

        return await asyncio.gather(*(one() for _ in range(count)))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--conversations", type=int, default=12000,
                        help="spread over enough that none gets 40 requests in a minute")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per server")
    parser.add_argument("--json", action="store_true", help="print ROW lines for bench/run")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print
    if not shutil.which("wrk"):
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        async with RedisServer(tmp / "redis") as redis_server, SeaweedServer(tmp / "s3") as s3_server:
            env = {
                **os.environ, "REDIS_URL": redis_server.url, "S3_ENDPOINT_URL": s3_server.endpoint_url,
                "S3_BUCKET": "bench-audio", "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "ADMIN_TOKEN": ADMIN_TOKEN,
                "LOG_LEVEL": "error", "LOG_FORMAT": "json",
                # creating the conversations would otherwise hit the per-IP initiate limit
                "INITIATE_LIMIT_PER_WINDOW": str(args.conversations * 2),
            }
            ids_file = tmp / "ids.txt"
            script = tmp / "get_upload_url.lua"
            servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            try:
                # Both servers run for the whole benchmark; rounds alternate between them, so
                # drift in the machine's speed (other tenants, frequency) hits both alike.
                for name, source, extra in (
                    ("bare", SERVE_BARE, {}), ("gateway", SERVE_GATEWAY, {}),
                    ("no-autopipeline", SERVE_GATEWAY, {"REDIS_AUTOPIPELINE": "false"}),
                ):
                    port = free_port()
                    # Started once, before anything is timed: a blocking spawn is harmless here.
                    servers[name] = port, subprocess.Popen(  # noqa: ASYNC220
                        [sys.executable, "-c", source % {"root": str(ROOT), "port": port}],
                        env={**env, **extra}, stdout=subprocess.DEVNULL,
                    )
                for name, (port, proc) in servers.items():
                    await _wait_up(f"http://127.0.0.1:{port}", proc)
                ids = await _conversations(f"http://127.0.0.1:{servers['gateway'][0]}",
                                           args.conversations)
                ids_file.write_text("\n".join(ids) + "\n")
                script.write_text(WRK_SCRIPT % {"ids": ids_file})
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
                for name, (port, _) in servers.items():
                    _wrk(port, script, 2, args.connections)  # warm-up
                for round_no in range(args.rounds):
                    order = list(servers)
                    if round_no % 2:
                        order.reverse()
                    for name in order:
                        runs[name].append(_wrk(servers[name][0], script, args.duration,
                                               args.connections))
                    say(f"round {round_no + 1}: bare {runs['bare'][-1]['rps']:.0f} req/s, "
                        f"gateway {runs['gateway'][-1]['rps']:.0f} req/s, ratio "
                        f"{runs['gateway'][-1]['rps'] / runs['bare'][-1]['rps']:.2f}, "
                        f"without auto-pipeline {runs['no-autopipeline'][-1]['rps']:.0f} req/s",
                        flush=True)
            finally:
                for _, proc in servers.values():
                    proc.send_signal(signal.SIGTERM)
                for _, proc in servers.values():
                    proc.wait(timeout=30)

    results = {name: _median_run(name_runs) for name, name_runs in runs.items()}
    bare, gw, nop = results["bare"], results["gateway"], results["no-autopipeline"]

    def round_ratios(name: str) -> list[float]:
        # Each round's runs are close in time: their ratio cancels drift best.
        return sorted(g["rps"] / b["rps"] for b, g in zip(runs["bare"], runs[name]))

    ratio = statistics.median(round_ratios("gateway"))
    nop_ratio = statistics.median(round_ratios("no-autopipeline"))
    spread = {name: f"{min(r['rps'] for r in rs):.0f}-{max(r['rps'] for r in rs):.0f}"
              for name, rs in runs.items()}
    if args.json:
        for figure, res, value, target, name in (
            ("gateway: get-upload-url", gw, ratio, 0.5, "gateway"),
            ("gateway: REDIS_AUTOPIPELINE=false", nop, nop_ratio, None, "no-autopipeline"),
        ):
            print("ROW " + json.dumps({
                "figure": figure, "value": res["rps"], "unit": "req/s",
                "baseline_name": "bare aiohttp handler", "baseline": bare["rps"],
                "ratio": value, "target": f">= {target}" if target else "(for reading)",
                "passed": value >= target if target else None,
                "spread": f"{spread[name]} vs {spread['bare']}",
                "note": f"p99 {res['p99_ms']:.1f} ms vs {bare['p99_ms']:.1f} ms",
            }))
    say(f"median of {args.rounds} alternating rounds of {args.duration} s:")
    say(f"bare aiohttp handler :  {bare['rps']:9.0f} req/s   p99 {bare['p99_ms']:6.2f} ms")
    say(f"gateway get-upload-url: {gw['rps']:9.0f} req/s   p99 {gw['p99_ms']:6.2f} ms"
        f"   non-2xx {gw['non2xx']}")
    say(f"  REDIS_AUTOPIPELINE=false: {nop['rps']:9.0f} req/s   p99 {nop['p99_ms']:6.2f} ms"
        f"   ratio {nop_ratio:.2f}")
    say(f"ratio of the medians  : {gw['rps'] / bare['rps']:.2f}")
    say(f"ratio, median round   : {ratio:.2f} (target >= 0.5; rounds "
        f"{', '.join(f'{r:.2f}' for r in round_ratios('gateway'))})")
    if gw["non2xx"] or nop["non2xx"]:
        # 429s are cheaper than grants: the numbers above would flatter the gateway.
        print(f"INVALID: {gw['non2xx']} gateway answers were not 2xx; use more --conversations",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
