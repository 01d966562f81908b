"""The fault-injection scenario: portal-like load through the real stack while a schedule
breaks it, then a bounded wait for the pipeline to settle.

Timeline (seconds after the load starts, :class:`Plan`): a new participant every
``start_every_s`` (at most ``max_open`` at once), each recording ``chunks`` chunks
``chunk_interval_s`` apart; ``quiet`` has no fault; from ``kills[0]`` a random worker is
killed (SIGKILL) every few seconds and replaced; alone until ``kill_only[1]``, then Redis
crashes and comes back on its AOF; the speech API slows down (``speech_slow_s`` a call)
so that chunks queue up, and S3 is gone for ``s3_down_s`` while they wait (the speech
API recovers with S3); last, one gateway process is killed (the whole ``serve`` is
started again). The fault and load schedules are the only places that sleep for fixed
times; everything else waits on conditions.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from fault_stack import ADMIN_TOKEN, FaultStack
from portal_client import ConversationRecord, PortalClient
from redis.exceptions import RedisError
from waiting import wait_until

from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, open_redis
from streams.names import StreamNames

#: Every stream and its consumer group (events/catalogue.py).
GROUPS = (("uploads", "upload-confirmation"), ("transcription", "transcription"), ("llm", "llm"))
NAMES = StreamNames("echo")
SCRAPE_EVERY_S = 1.0
_TOKEN = re.compile(rb"echo-fault-chunk (\d{3}-\d{2});")


@dataclass(frozen=True)
class Plan:
    conversations: int = 100
    chunks: int = 10
    projects: int = 4
    workers: int = 3
    #: The load's own schedule: a participant arrives every ... seconds.
    start_every_s: float = 0.85
    max_open: int = 20
    chunk_interval_s: float = 0.7
    repeat_confirm_every: int = 10
    #: Windows (s after the load started) whose transcription rates are compared.
    quiet: tuple[float, float] = (4.0, 15.0)
    kill_only: tuple[float, float] = (17.0, 50.0)
    kills: tuple[float, float] = (15.0, 90.0)
    kill_every_s: tuple[float, float] = (3.0, 6.0)
    redis_crash_at_s: float = 52.0
    redis_down_s: float = 2.0
    speech_slow_at_s: float = 56.0
    speech_slow_s: float = 2.0
    s3_stop_at_s: float = 62.0
    s3_down_s: float = 10.0
    gateway_kill_at_s: float = 80.0
    #: Clients give up (and say so) past this; the pipeline then has this long to settle.
    load_deadline_s: float = 300.0
    settle_timeout_s: float = 180.0
    seed: int = 14


class SpeechScript:
    """The emulated speech API's answer: ``words of chunk <token>``, the token the chunk's
    bytes carry; counts the calls per chunk."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.times: list[float] = []

    def __call__(self, data: bytes) -> str:
        found = _TOKEN.search(data)
        token = found.group(1).decode() if found else "?"
        self.calls[token] += 1
        self.times.append(time.time())
        return expected_transcript(token)


def expected_transcript(token: str) -> str:
    return f"words of chunk {token}"


@dataclass
class Outage:
    name: str
    start_s: float
    end_s: float = 0.0
    #: Steps of the recovery and when they were done.
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class RunLog:
    """What happened, in ``time.time()`` seconds."""

    plan: Plan
    started_s: float = 0.0
    load_ended_s: float = 0.0
    outages: list[Outage] = field(default_factory=list)
    #: Faults that answer slowly rather than not at all (the speech API).
    slowdowns: list[Outage] = field(default_factory=list)
    worker_kills: list[float] = field(default_factory=list)
    conversations: list[ConversationRecord] = field(default_factory=list)
    client: PortalClient | None = None
    #: (when, how many workers answered /metrics), about once a second.
    workers_up: list[tuple[float, int]] = field(default_factory=list)
    settled_s: float | None = None
    settle_error: str | None = None

    def window(self, bounds: tuple[float, float]) -> tuple[float, float]:
        return self.started_s + bounds[0], self.started_s + bounds[1]


async def run_scenario(stack: FaultStack, plan: Plan) -> RunLog:
    """Load and faults, then wait (bounded) until the pipeline has nothing left to do."""
    log = RunLog(plan)
    rng = random.Random(plan.seed)
    for _ in range(plan.workers):
        stack.start_worker()
    await stack.wait_for_workers()
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=20)
    ) as http:
        client = log.client = PortalClient(http, stack.base_url, rng=rng,
                                           give_up_after_s=plan.load_deadline_s)
        projects = [await client.create_project(f"Fault project {i}", ADMIN_TOKEN)
                    for i in range(plan.projects)]
        log.started_s = time.time()
        scraping = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_scrape_until(stack, log, scraping))
            kills = tasks.create_task(_kill_workers(stack, log, rng))
            outages = tasks.create_task(_outages(stack, log))
            log.conversations = await _load(client, plan, projects, log.started_s)
            log.load_ended_s = time.time()
            await asyncio.gather(kills, outages)
            scraping.set()
    await _settle(stack, log)
    await stack.scrape_all()
    return log


async def _at(log: RunLog, offset_s: float) -> None:
    """The fault schedule's clock: sleep until ``offset_s`` after the load started."""
    await asyncio.sleep(max(0.0, log.started_s + offset_s - time.time()))


async def _load(
    client: PortalClient, plan: Plan, projects: list[str], started_s: float
) -> list[ConversationRecord]:
    open_slots = asyncio.Semaphore(plan.max_open)

    async def participant(index: int) -> ConversationRecord:
        await asyncio.sleep(max(0.0, started_s + index * plan.start_every_s - time.time()))
        async with open_slots:
            return await client.run_conversation(
                index, projects[index % len(projects)], chunks=plan.chunks,
                interval_s=plan.chunk_interval_s, repeat_every=plan.repeat_confirm_every,
            )

    return list(await asyncio.gather(*(participant(i) for i in range(plan.conversations))))


async def _kill_workers(stack: FaultStack, log: RunLog, rng: random.Random) -> None:
    """A random running worker every few seconds, but never the last one running: a
    replacement takes a few seconds to start (ten or more on a loaded machine), and kills
    that outpace it would measure only start-up time."""
    offset_s, end_s = log.plan.kills
    while offset_s < end_s:
        await _at(log, offset_s)
        try:
            await wait_until(lambda: sum(w.running for w in stack.workers), until=lambda n: n >= 2,
                             timeout_s=max(0.0, log.started_s + end_s - time.time()),
                             interval_s=0.2, message="fewer than two workers run")
        except AssertionError:
            return  # the kill phase ended meanwhile
        await stack.kill_random_worker(rng)
        log.worker_kills.append(time.time())
        offset_s = time.time() - log.started_s + rng.uniform(*log.plan.kill_every_s)


async def _outages(stack: FaultStack, log: RunLog) -> None:
    plan = log.plan
    await _at(log, plan.redis_crash_at_s)
    redis = Outage("redis", time.time())
    log.outages.append(redis)
    stack.crash_redis()
    await _at(log, plan.redis_crash_at_s + plan.redis_down_s)
    await stack.start_redis()
    redis.end_s = time.time()

    await _at(log, plan.speech_slow_at_s)
    slow = Outage("speech API", time.time())
    log.slowdowns.append(slow)
    usual_s, stack.speech.latency_s = stack.speech.latency_s, plan.speech_slow_s

    await _at(log, plan.s3_stop_at_s)
    s3 = Outage("s3", time.time())
    log.outages.append(s3)
    stack.crash_s3()
    await _at(log, plan.s3_stop_at_s + plan.s3_down_s)
    await stack.start_s3()
    s3.end_s = time.time()
    stack.speech.latency_s = usual_s
    slow.end_s = time.time()

    await _at(log, plan.gateway_kill_at_s)
    gateway = Outage("gateway", time.time())
    log.outages.append(gateway)
    stack.kill_gateway_child()
    await stack.wait_for_gateway_exit()
    gateway.marks["serve stopped"] = time.time()
    await stack.start_gateway()
    gateway.end_s = time.time()


async def _scrape_until(stack: FaultStack, log: RunLog, done: asyncio.Event) -> None:
    """Read every worker's counters about once a second (a killed worker keeps its last)."""
    while not done.is_set():
        log.workers_up.append((time.time(), await stack.scrape_all()))
        try:
            await asyncio.wait_for(done.wait(), SCRAPE_EVERY_S)
        except TimeoutError:
            pass


@dataclass(frozen=True)
class Progress:
    chunks_on_their_way: int
    finished_not_finalized: int
    summaries_missing: int
    pending_entries: int
    undelivered_groups: int
    deferred_entries: int

    @property
    def settled(self) -> bool:
        return not any((self.chunks_on_their_way, self.finished_not_finalized,
                        self.summaries_missing, self.pending_entries, self.undelivered_groups,
                        self.deferred_entries))


async def progress(redis: RedisClient, log: RunLog) -> Progress:
    store = ConversationStore(redis)
    on_way = unfinalized = no_summary = 0
    for record in log.conversations:
        if record.conversation_id is None:
            continue
        state = await store.processing_state(record.conversation_id)
        on_way += sum(n for status, n in state.chunk_counts.items()
                      if status not in ("transcribed", "failed"))
        if record.finished and state.finalized_ms is None:
            unfinalized += 1
        elif state.finalized_ms is not None and not state.summary_ready:
            no_summary += 1
    pending = undelivered = deferred = 0
    for stream, group in GROUPS:
        keys = NAMES.keys(stream)
        pending += int((await redis.xpending(keys.stream, group))["pending"])
        info = await redis.xinfo_stream(keys.stream)
        [row] = [g for g in await redis.xinfo_groups(keys.stream) if g["name"] == group]
        undelivered += row["last-delivered-id"] != info["last-generated-id"]
        deferred += int(await redis.zcard(keys.delayed))
    return Progress(on_way, unfinalized, no_summary, pending, undelivered, deferred)


async def _settle(stack: FaultStack, log: RunLog) -> None:
    """Wait until nothing is left to do; on time-out keep the last progress as the error
    (the tests then say which property does not hold)."""
    async with open_redis(stack.settings) as redis:
        try:
            await wait_until(lambda: progress(redis, log), until=lambda p: p.settled,
                             timeout_s=log.plan.settle_timeout_s, interval_s=1.0,
                             retry_on=(RedisError, OSError),
                             message="the pipeline did not settle")
            log.settled_s = time.time()
        except AssertionError as exc:
            log.settle_error = str(exc)
