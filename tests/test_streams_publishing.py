"""What goes into a stream: its key names, the envelope's flat fields, and a publisher
facing an unreachable Redis (``streams.names``, ``streams.envelope``, ``streams.publisher``)."""

from __future__ import annotations

import asyncio
import math

import pytest
from streams_support import read_stream

from config import Settings
from devstack.servers import free_port
from events.catalogue import STREAMS, UPLOADS
from gateway.wiring import publisher_for
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import RedisClient, open_redis
from streams.config import StreamsConfig
from streams.envelope import Envelope, EnvelopeError, decode
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS


def test_names_share_one_hash_tag_per_stream() -> None:
    keys = StreamNames("acme").keys(UPLOADS)
    assert keys.stream == "acme:{uploads}"
    assert keys.dead == "acme:{uploads}:dead"
    assert keys.delayed == "acme:{uploads}:delayed"
    assert [k.name for k in StreamNames().catalogue(STREAMS)] == ["uploads", "transcription", "llm"]


def test_envelope_round_trips_through_flat_fields() -> None:
    env = Envelope(type="upload.verify", payload={"n": 1}, idem="k", request_id="req-1")
    fields = env.fields()
    assert set(fields) == {"id", "type", "v", "created_ms", "idem", "request_id", "attempt",
                           "payload"}
    assert decode(fields) == env
    with pytest.raises(EnvelopeError):
        decode({**fields, "payload": "[1]"})
    with pytest.raises(EnvelopeError):
        decode({"type": "x"})



def test_a_payload_decodes_as_the_standard_library_reads_it_also_where_orjson_refuses() -> None:
    """The consumer parses payloads with orjson; what it refuses (NaN) or would read
    otherwise (an integer past 64 bits becomes a float) decodes as ``json.loads`` reads it.
    An envelope without ``idem`` keys on its id."""
    fields = Envelope(type="t", payload={}).fields()
    big = decode({**fields, "payload": '{"n": 123456789012345678901234567890}'})
    assert big.payload["n"] == 123456789012345678901234567890
    assert isinstance(big.payload["n"], int)
    assert math.isnan(decode({**fields, "payload": '{"x": NaN}'}).payload["x"])
    assert decode({**fields, "payload": '{"n": -9223372036854775808}'}).payload["n"] == -2**63
    assert decode({**fields, "idem": ""}).idem == fields["id"]
    with pytest.raises(EnvelopeError):
        decode({**fields, "payload": "{not json"})
    with pytest.raises(EnvelopeError):
        decode({**fields, "v": "one"})

async def test_publish_raises_when_redis_is_unreachable(
    stream_settings: Settings, streams_config: StreamsConfig
) -> None:
    down = stream_settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_redis(down) as client:
        with pytest.raises(REDIS_UNAVAILABLE_ERRORS):
            await Publisher.from_config(client, streams_config).publish("llm", "e", {})


async def test_concurrent_publishes_share_writes_and_each_is_stored_when_it_returns(
    r: RedisClient, stream_settings: Settings, names: StreamNames
) -> None:
    """100 publishers at once over the auto-pipelined connection: their XADDs go out in a
    few writes, and every publish returns the id of an entry already in the stream."""
    async with open_autopipeline(stream_settings, r) as autopipeline:
        assert autopipeline is not None
        publisher = publisher_for(r, stream_settings, autopipeline=autopipeline)

        async def publish(i: int) -> tuple[str, bool]:
            entry_id = await publisher.publish("llm", "e", {"i": i}, idempotency_key=f"k{i}")
            stored = await read_stream(r, names.stream("llm"))
            return entry_id, entry_id in {eid for eid, _ in stored}

        results = await asyncio.gather(*(publish(i) for i in range(100)))
        assert all(stored for _, stored in results)
        assert len({entry_id for entry_id, _ in results}) == 100
        assert autopipeline.stats.writes < autopipeline.stats.commands / 10
    entries = await read_stream(r, names.stream("llm"))
    assert sorted(decode(fields).payload["i"] for _, fields in entries) == list(range(100))
    assert {decode(fields).idem for _, fields in entries} == {f"k{i}" for i in range(100)}
