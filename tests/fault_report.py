"""What a fault-injection run left behind, gathered once it settled, and the printed report.

Client side (from :class:`portal_client.PortalClient`'s log), chunk and conversation state
(the store, read only), transcript files (S3), streams (XPENDING, XINFO, dead letters),
the workers' counters (read before each kill and at the end) and the emulated APIs' calls.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from fault_harness import GROUPS, NAMES, RunLog, SpeechScript, expected_transcript
from fault_stack import BUCKET, FaultStack, Worker
from portal_client import NO_ANSWER, ChunkRecord

from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, open_redis
from storage.s3_client import S3Client, open_s3

#: An answer this long after an outage ended still counts as during it (clients back off).
OUTAGE_TAIL_S = 3.0
S3_ENDPOINTS = frozenset({"s3-post", "probe-put"})
_CONVERSATION_IN_PROMPT = re.compile(r"words of chunk (\d{3})-\d{2}")


@dataclass
class ChunkOutcome:
    conversation: int
    record: ChunkRecord
    status: str
    error: str | None
    transcript_ok: bool
    updated_s: float | None


@dataclass
class Findings:
    log: RunLog
    gave_up: list[str] = field(default_factory=list)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: 503s and unanswered requests to the gateway, by the outage they came in.
    unavailable: Counter[str] = field(default_factory=Counter)
    no_answer: Counter[str] = field(default_factory=Counter)
    chunks: list[ChunkOutcome] = field(default_factory=list)
    listing_problems: list[str] = field(default_factory=list)
    finalization_problems: list[str] = field(default_factory=list)
    summaries_missing: list[str] = field(default_factory=list)
    backlog: list[str] = field(default_factory=list)
    backlog_problems: list[str] = field(default_factory=list)
    #: (where: stream, event type and deliveries; the recorded reason) of each dead letter.
    dead_letters: list[tuple[str, str]] = field(default_factory=list)
    worker_counters: dict[str, float] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    #: Every worker process that ran (killed ones included).
    workers: list[Worker] = field(default_factory=list)
    #: When the speech API answered a transcription (``time.time()``).
    speech_calls_s: list[float] = field(default_factory=list)

    @property
    def failed(self) -> list[ChunkOutcome]:
        return [c for c in self.chunks if c.status == "failed"]

    def answered(self, endpoints: frozenset[str], *, s3: bool) -> tuple[int, int]:
        """Requests and 2xx answers, to the gateway (``s3=False``) or to S3."""
        mine = {k: n for k, n in self.answers.items() if (k[0] in endpoints) == s3}
        return sum(mine.values()), sum(n for (_, status), n in mine.items() if 200 <= status < 300)


def outage_at(log: RunLog, at_s: float) -> str:
    for outage in log.outages:
        if outage.start_s <= at_s <= (outage.end_s or at_s) + OUTAGE_TAIL_S:
            return str(outage.name)
    return "no outage"


async def gather_findings(stack: FaultStack, log: RunLog, speech: SpeechScript) -> Findings:
    found = Findings(log)
    _client_side(found)
    async with open_redis(stack.settings) as redis, open_s3(stack.settings) as s3:
        store = ConversationStore(redis)
        for record in log.conversations:
            if record.conversation_id is not None:
                await _conversation(found, store, s3, record.index, record.conversation_id,
                                    record.chunks, record.finished)
        await _streams(found, redis)
    _rates(found)
    _counters(found, stack, speech)
    return found


def _client_side(found: Findings) -> None:
    log = found.log
    assert log.client is not None
    found.gave_up = [f"conversation {r.index}: {r.gave_up}" for r in log.conversations
                     if r.gave_up]
    for attempt in log.client.attempts:
        found.answers[attempt.endpoint, attempt.status] += 1
        if attempt.endpoint in S3_ENDPOINTS:
            continue
        if attempt.status == 503:
            found.unavailable[outage_at(log, attempt.at_s)] += 1
        elif attempt.status == NO_ANSWER:
            found.no_answer[outage_at(log, attempt.at_s)] += 1


async def _conversation(
    found: Findings, store: ConversationStore, s3: S3Client, index: int, cid: str,
    confirmed: list[ChunkRecord], finished: bool,
) -> None:
    listed = {c["id"]: c for c in await store.list_chunks(cid)}
    ids = {c.chunk_id for c in confirmed}
    if set(listed) != ids:
        found.listing_problems.append(
            f"conversation {index}: {len(listed)} chunks listed, {len(ids)} confirmed "
            f"(extra {sorted(set(listed) - ids)}, missing {sorted(ids - set(listed))})")
    for chunk in confirmed:
        doc = listed.get(chunk.chunk_id, {})
        updated = doc.get("updated_at")
        found.chunks.append(ChunkOutcome(
            index, chunk, str(doc.get("status")), doc.get("error"),
            doc.get("transcript") == expected_transcript(chunk.token),
            datetime.fromisoformat(updated).timestamp() if updated else None,
        ))
    if not finished:
        return
    fields = ["finalized_ms", "finalizations", "final_gen", "final_done_gen"]
    raw = cast(list[str | None], await store.redis.hmget(store.conversation_key(cid), fields))
    state = dict(zip(fields, raw, strict=True))
    if not state["finalized_ms"]:
        found.finalization_problems.append(f"conversation {index}: finished, never finalized")
        return
    if state["finalizations"] != "1" or state["final_done_gen"] != state["final_gen"]:
        found.finalization_problems.append(
            f"conversation {index}: finalized {state['finalizations']} times for one "
            f"generation (final_gen {state['final_gen']}, done {state['final_done_gen']})")
    problem = await _transcript_file_problem(s3, cid, state["final_done_gen"], listed)
    if problem:
        found.finalization_problems.append(f"conversation {index}: {problem}")
    if not (await store.processing_state(cid)).summary_ready:
        found.summaries_missing.append(f"conversation {index}")


async def _transcript_file_problem(
    s3: S3Client, cid: str, generation: str | None, listed: dict[str, dict[str, Any]]
) -> str | None:
    """transcript.json must be the committed generation's, with every chunk, merged in order."""
    try:
        response = await s3.get_object(Bucket=BUCKET, Key=f"conversation/{cid}/transcript.json")
        doc = json.loads(await response["Body"].read())
    except (ClientError, BotoCoreError, ValueError) as exc:
        return f"transcript.json unreadable: {exc}"
    chunks = sorted(listed.values(), key=lambda c: str(c.get("timestamp")))
    merged = "\n\n".join(str(c["transcript"]) for c in chunks if c.get("status") == "transcribed")
    if str(doc.get("generation")) != generation:
        return f"transcript.json is generation {doc.get('generation')}, committed {generation}"
    if {c["id"] for c in doc.get("chunks", [])} != set(listed):
        return "transcript.json does not list the conversation's chunks"
    if doc.get("text") != merged:
        return "transcript.json's text is not the chunks' transcripts in timestamp order"
    return None


async def _streams(found: Findings, redis: RedisClient) -> None:
    publications: Counter[str] = Counter()
    distinct: dict[str, set[str]] = {}
    for stream, group in GROUPS:
        keys = NAMES.keys(stream)
        pending = int((await redis.xpending(keys.stream, group))["pending"])
        info = await redis.xinfo_stream(keys.stream)
        [row] = [g for g in await redis.xinfo_groups(keys.stream) if g["name"] == group]
        undelivered = row["last-delivered-id"] != info["last-generated-id"]
        delayed = int(await redis.zcard(keys.delayed))
        line = (f"{stream}/{group}: pending {pending}, undelivered {int(undelivered)}, "
                f"deferred {delayed}, lag {row.get('lag')}, consumers {row['consumers']}")
        found.backlog.append(line)
        if pending or undelivered or delayed:
            found.backlog_problems.append(line)
        for fields in await _entries(redis, keys.dead):
            found.dead_letters.append((
                f"{stream}/{fields.get('type')} after {fields.get('dead_deliveries')} deliveries",
                fields.get("dead_reason", "")))
        for fields in await _entries(redis, keys.stream):
            if fields.get("attempt", "0") == "0":  # a deferral re-adds with attempt + 1
                publications[fields["type"]] += 1
                distinct.setdefault(fields["type"], set()).add(fields.get("idem", ""))
    for event_type, count in sorted(publications.items()):
        found.duplicates[f"{event_type} events published again"] = (
            count - len(distinct[event_type]))


async def _entries(redis: RedisClient, key: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream (the client decodes replies)."""
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(key))
    return [fields for _, fields in entries]


def _rates(found: Findings) -> None:
    log = found.log
    for name, bounds in (("quiet", log.plan.quiet), ("kill", log.plan.kill_only)):
        start, end = log.window(bounds)
        width = end - start
        done = sorted(c.updated_s for c in found.chunks if c.status == "transcribed"
                      and c.updated_s is not None and start <= c.updated_s < end)
        found.rates[f"transcribed/s {name}"] = len(done) / width
        found.rates[f"confirmed/s {name}"] = sum(
            1 for c in found.chunks if start <= c.record.confirmed_at_s < end) / width
        edges = [start, *done, end]
        found.rates[f"longest pause s {name}"] = max(b - a for a, b in pairwise(edges))


def _counters(found: Findings, stack: FaultStack, speech: SpeechScript) -> None:
    for name in ("reclaimed", "dead_lettered", "failed", "retried", "deferred", "processed"):
        found.worker_counters[name] = stack.metric_total(f"echo_stream_{name}_total")
    for outcome in ("already", "busy", "not_ready", "stale"):
        found.worker_counters[f"finalize {outcome}"] = stack.metric_total(
            "echo_transcription_finalizations_total", outcome=outcome)
    found.duplicates["repeated confirms answered idempotently"] = sum(
        c.record.repeats for c in found.chunks)
    found.duplicates["finalize events that found the work done or claimed"] = int(
        found.worker_counters["finalize already"] + found.worker_counters["finalize busy"])
    found.speech_calls_s = list(speech.times)
    found.workers = stack.workers + stack.dead_workers
    found.duplicates["speech API calls beyond one per chunk"] = sum(
        n - 1 for n in speech.calls.values() if n > 1)
    summaries: Counter[str] = Counter()
    for request in stack.llm.requests:
        conversation = _CONVERSATION_IN_PROMPT.search(request.prompt)
        summaries[conversation.group(1) if conversation else "?"] += 1
    found.duplicates["model calls beyond one per conversation"] = sum(
        n - 1 for n in summaries.values() if n > 1)


def _start_times(found: Findings) -> str:
    times = sorted(w.running_s - w.started_s for w in found.workers if w.running_s is not None)
    if not times:
        return "none started"
    return f"median {times[len(times) // 2]:.1f}, max {times[-1]:.1f} ({len(times)} workers)"


def _per_step(found: Findings, times: list[float], step_s: float = 5.0) -> list[int]:
    """How many of ``times`` fall in each ``step_s`` since the load started."""
    counts = Counter(int((t - found.log.started_s) // step_s) for t in times)
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


def _fewest_up(found: Findings, step_s: float = 5.0) -> list[int]:
    fewest: dict[int, int] = {}
    for at_s, up in found.log.workers_up:
        step = int((at_s - found.log.started_s) // step_s)
        fewest[step] = min(up, fewest.get(step, up))
    return [fewest.get(i, -1) for i in range(max(fewest, default=-1) + 1)]


def report(found: Findings) -> list[str]:
    """The counts, one line each."""
    log = found.log
    gateway, gateway_ok = found.answered(S3_ENDPOINTS, s3=False)
    s3_requests, s3_ok = found.answered(S3_ENDPOINTS, s3=True)
    assert log.client is not None
    statuses = Counter(status for (endpoint, status) in found.answers.elements()
                       if endpoint not in S3_ENDPOINTS)
    finished = sum(r.finished for r in log.conversations)
    outcomes = Counter(c.status for c in found.chunks)
    reasons = Counter((c.error or "(no reason)")[:120] for c in found.failed)
    settled = (f"{log.settled_s - log.load_ended_s:.0f} s after it"
               if log.settled_s is not None else "NOT")
    lines = [
        (f"load: {len(log.conversations)} conversations ({finished} finished), "
         f"{len(found.chunks)} chunks confirmed 2xx "
         f"({sum(c.record.confirm_status == 202 for c in found.chunks)} answered 202), "
         f"load {log.load_ended_s - log.started_s:.0f} s, settled {settled}"),
        f"gateway requests {gateway}, 2xx {gateway_ok}, statuses {dict(sorted(statuses.items()))}",
        f"S3 requests {s3_requests}, 2xx {s3_ok}",
        f"503s by outage: {dict(found.unavailable)}; no answer by outage: {dict(found.no_answer)}",
        f"client retries: {dict(log.client.retries)}; gave up: {len(found.gave_up)}",
        f"faults: {len(log.worker_kills)} workers killed, "
        + ", ".join(f"{o.name} out {o.end_s - o.start_s:.1f} s" for o in log.outages),
        f"chunks: {dict(outcomes)}; transcripts wrong {sum(not c.transcript_ok for c in found.chunks if c.status == 'transcribed')}",
        f"failed chunks by reason: {dict(reasons)}",
        f"worker counters: {found.worker_counters}",
        f"dead letters: {len(found.dead_letters)}",
        *(f"  {where}: {reason[:200]}" for where, reason in found.dead_letters[:10]),
        "duplicates suppressed: " + ", ".join(f"{k} {v}" for k, v in found.duplicates.items()),
        "rates: " + ", ".join(f"{k} {v:.1f}" for k, v in found.rates.items()),
        "per 5 s from the start: transcribed " + " ".join(map(str, _per_step(found, [
            c.updated_s for c in found.chunks if c.status == "transcribed" and c.updated_s]))),
        "  speech API calls " + " ".join(map(str, _per_step(found, found.speech_calls_s))),
        "  confirmed " + " ".join(map(str, _per_step(found, [
            c.record.confirmed_at_s for c in found.chunks]))),
        "  fewest workers answering " + " ".join(map(str, _fewest_up(found))),
        "workers killed at (s): " + " ".join(f"{t - log.started_s:.0f}" for t in log.worker_kills),
        f"worker start to first /metrics (s): {_start_times(found)}",
        "outages (s): " + ", ".join(
            f"{o.name} {o.start_s - log.started_s:.0f}-{o.end_s - log.started_s:.0f}"
            + "".join(f" ({k} at {t - log.started_s:.0f})" for k, t in o.marks.items())
            for o in log.outages + log.slowdowns),
        *found.backlog,
        (f"finalization problems: {len(found.finalization_problems)}, summaries missing: "
         f"{len(found.summaries_missing)}, listing problems: {len(found.listing_problems)}"),
    ]
    if log.settle_error:
        lines.append(f"settle: {log.settle_error}")
    return lines
