"""Auto-select batches: packing, strict parsing, foreign ids, oversized batches, merging, jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from emulators.anthropic import AnthropicEmulator, keyword_responder, prompt_text
from prometheus_client import CollectorRegistry

from config import Settings
from llm.client import BoundedLlm, RetryPolicy
from llm.jobs import JobStore, run_batches
from llm.lifecycle import open_llm
from llm.metrics import LlmMetrics
from llm.providers import AnthropicProvider, extractive_summary, keywords
from llm.selection import (
    BatchResult,
    MalformedOutput,
    items_for_selection,
    merge_selected,
    pack_batches,
    parse_selection,
    select_batch,
)
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys
from storage.redis_client import RedisClient


@pytest.fixture
async def llm_factory(redis: RedisClient) -> AsyncIterator[Any]:
    made: list[BoundedLlm] = []

    def make(emulator: AnthropicEmulator) -> BoundedLlm:
        metrics = LlmMetrics(CollectorRegistry())
        provider = AnthropicProvider.create(
            api_key=emulator.api_key, model="claude-test", base_url=emulator.base_url
        )
        # Own keys: nothing another test left in the shared Redis reaches these calls.
        keys = LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}")
        limiter = ClusterLimiter(redis, keys, LimiterConfig(), metrics)
        llm = BoundedLlm(provider, limiter, metrics, RetryPolicy(deadline_s=20, backoff_base_s=0.05))
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.close()


def plan_of(batches: list[list[tuple[str, str]]]) -> list[list[str]]:
    return [[cid for cid, _ in batch] for batch in batches]


ITEMS = [(f"c{i}", f"talk about {'bikes' if i % 3 == 0 else 'trains'} number {i}") for i in range(20)]


def test_selection_text_prefers_the_summary_then_500_transcript_characters() -> None:
    rows = [("a", "the summary", "t" * 900), ("b", None, "x" * 900), ("c", "  ", None)]
    assert items_for_selection(rows) == [("a", "the summary"), ("b", "x" * 500)]


def test_batches_hold_at_most_the_batch_size_and_fit_the_budget() -> None:
    items = [(f"c{i}", "word " * 100) for i in range(45)]
    batches = pack_batches(items, batch_size=20, budget_tokens=100_000)
    assert [len(b) for b in batches] == [20, 20, 5]
    small = pack_batches(items, batch_size=20, budget_tokens=1000)
    assert all(len(b) < 20 for b in small)
    assert [cid for b in small for cid, _ in b] == [cid for cid, _ in items]
    huge = pack_batches([("big", "x" * 100_000)], batch_size=20, budget_tokens=1000)
    assert len(huge[0][0][1]) < 3000


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here are the ids: c1, c2",
        '{"selected": ["c1"]}',
        '{"selected_conversation_ids": "c1"}',
        '{"selected_conversation_ids": [1, 2]}',
        '["c1"]',
        '{"selected_conversation_ids": ["c1"]} and more',
    ],
)
def test_anything_but_the_asked_json_is_malformed(text: str) -> None:
    with pytest.raises(MalformedOutput):
        parse_selection(text)


def test_the_asked_json_parses_even_in_a_code_fence() -> None:
    assert parse_selection(' {"selected_conversation_ids": ["c1", "c2"]}\n') == ["c1", "c2"]
    assert parse_selection('```json\n{"selected_conversation_ids": []}\n```') == []


def test_merging_keeps_batch_order_and_drops_duplicates() -> None:
    results = [
        BatchResult(index=0, selected=["a", "b"]),
        None,
        BatchResult(index=2, selected=["b", "c"], error="partly failed"),
        BatchResult(index=3, selected=["d"]),
    ]
    assert merge_selected(results) == ["a", "b", "c", "d"]


async def test_a_batch_selects_the_relevant_conversations(llm_factory: Any) -> None:
    async with AnthropicEmulator(responder=keyword_responder) as emulator:
        result = await select_batch(llm_factory(emulator), "bikes", ITEMS)
    assert result.error is None
    assert result.selected == [cid for cid, text in ITEMS if "bikes" in text]
    assert result.provider == "anthropic"


async def test_malformed_model_output_fails_the_batch_only(llm_factory: Any) -> None:
    async with AnthropicEmulator(responder=lambda body: "I think c1 and c2.") as emulator:
        result = await select_batch(llm_factory(emulator), "bikes", ITEMS, index=4)
    assert result.index == 4
    assert result.selected == []
    assert result.error is not None and "malformed model output" in result.error


async def test_ids_from_outside_the_batch_are_dropped(llm_factory: Any) -> None:
    def answer(body: dict[str, Any]) -> str:
        return json.dumps({"selected_conversation_ids": ["c3", "not-in-batch", "c0", "c3"]})

    async with AnthropicEmulator(responder=answer) as emulator:
        result = await select_batch(llm_factory(emulator), "bikes", ITEMS)
    assert result.selected == ["c0", "c3"]
    assert result.dropped_ids == ["not-in-batch"]
    assert result.error is None


async def test_a_batch_too_large_for_the_context_is_split(llm_factory: Any) -> None:
    """The provider refuses the whole batch ("prompt is too long"); its halves go through."""
    items = [(f"c{i}", f"bikes {'lorem ipsum ' * 60}") for i in range(20)]
    async with AnthropicEmulator(responder=keyword_responder, context_tokens=5000) as emulator:
        result = await select_batch(llm_factory(emulator), "about bikes", items)
        statuses = [r.status for r in emulator.requests]
    assert result.error is None
    assert result.selected == [cid for cid, _ in items]
    assert statuses[0] == 400 and statuses.count(200) >= 2
    assert result.calls == len(statuses)


async def test_a_job_completes_with_failed_batches_recorded(
    redis: RedisClient, llm_factory: Any
) -> None:
    calls = 0

    def flaky(body: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        return "not json" if 'id="c25"' in prompt_text(body) else keyword_responder(body)

    items = [(f"c{i}", "bikes" if i % 2 else "trains") for i in range(60)]
    batches = pack_batches(items, 20, 100_000)
    store = JobStore(redis)
    job_id = await store.create(project_id="p1", query="which bikes", language=None)
    async with AnthropicEmulator(responder=flaky) as emulator:
        await store.start(job_id, plan=plan_of(batches), provider="anthropic", model="m")
        await run_batches(llm_factory(emulator), store, job_id, "which bikes", batches, parallel=3)
    view = await store.get(job_id)
    assert view is not None
    job = view.to_json()
    assert job["status"] == "completed"
    assert (job["batches_total"], job["batches_done"]) == (3, 3)
    assert [e["batch"] for e in job["errors"]] == [1]
    expected = [cid for cid, text in items if text == "bikes" and not 20 <= int(cid[1:]) < 40]
    assert job["selected_conversation_ids"] == expected


async def test_a_redelivered_batch_is_counted_once(redis: RedisClient) -> None:
    store = JobStore(redis)
    job_id = await store.create(project_id="p", query="q", language=None)
    await store.start(job_id, plan=[["a"], ["b"]], provider="offline", model="m")
    assert await store.record_batch(job_id, BatchResult(index=0, selected=["a"]))
    assert not await store.record_batch(job_id, BatchResult(index=0, selected=["z"]))
    view = await store.get(job_id)
    assert view is not None
    assert view.to_json()["batches_done"] == 1
    assert view.to_json()["status"] == "running"
    assert view.to_json()["selected_conversation_ids"] == ["a"]


async def test_offline_provider_runs_a_job_end_to_end(redis: RedisClient, settings: Settings) -> None:
    """Without ANTHROPIC_API_KEY: keyword-overlap selection, labelled as offline."""
    items = [(f"c{i}", "we discussed bicycles" if i % 4 == 0 else "trains") for i in range(50)]
    async with open_llm(settings, redis, CollectorRegistry()) as service:
        batches = pack_batches(items, settings.llm_batch_size, 100_000)
        job_id = await service.jobs.create(project_id="p", query="Bicycles?", language=None)
        await service.jobs.start(
            job_id, plan=plan_of(batches), provider="offline", model=service.llm.model
        )
        await run_batches(service.llm, service.jobs, job_id, "Bicycles?", batches)
        view = await service.jobs.get(job_id)
    assert view is not None
    job = view.to_json()
    assert job["status"] == "completed" and job["provider"] == "offline"
    assert "offline" in job["note"]
    assert job["selected_conversation_ids"] == [f"c{i}" for i in range(0, 50, 4)]


def test_the_extractive_summary_keeps_the_central_sentences_in_order() -> None:
    text = (
        "Housing costs came up first. Rents rose fast in the city. "
        "Someone mentioned the weather. Rents and housing costs dominate every budget. "
        "A dog barked. Housing policy should cap rents, several said."
    )
    summary = extractive_summary(text, max_sentences=3)
    assert summary.count(".") == 3
    assert "dog" not in summary and "weather" not in summary
    kept = [s.strip() + "." for s in summary.split(".") if s.strip()]
    assert sorted(kept, key=text.index) == kept


def test_offline_keywords_fold_plurals_so_a_query_meets_its_singular() -> None:
    assert keywords("Gardens and bicycles") & keywords("the garden by the bicycle shop")
    assert "glass" in keywords("a glass of water")
