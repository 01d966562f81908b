"""The ``openai`` provider against a local emulator of ``POST /v1/audio/transcriptions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest
from emulators.openai_audio import OpenAIAudioEmulator, Reply
from prometheus_client import CollectorRegistry

from storage.redis_client import RedisClient
from transcription.bound import CallBound
from transcription.errors import NoSpeech, TransientTranscriptionError, Undecodable
from transcription.metrics import TranscriptionMetrics
from transcription.openai_provider import OpenAITranscriber, retry_after_s

SPEECH = Path(__file__).parent / "fixtures" / "speech"


@pytest.fixture
async def emulator() -> AsyncIterator[OpenAIAudioEmulator]:
    server = OpenAIAudioEmulator(api_key="sk-test")
    await server.start()
    yield server
    await server.close()


class MakeTranscriber(Protocol):
    def __call__(self, *, api_key: str = ..., retries: int = ...) -> OpenAITranscriber: ...


@pytest.fixture
async def make_transcriber(
    emulator: OpenAIAudioEmulator, redis: RedisClient
) -> AsyncIterator[MakeTranscriber]:
    """``make_transcriber(retries=0)``: a transcriber of the emulator, short timeouts."""
    metrics = TranscriptionMetrics(CollectorRegistry())
    bound = CallBound.create(redis, metrics, prefix="echo", per_process=2, cluster=2, lease_s=10,
                             model="whisper-1")
    async with aiohttp.ClientSession() as session:
        def make(*, api_key: str = "sk-test", retries: int = 2) -> OpenAITranscriber:
            return OpenAITranscriber(session, base_url=emulator.base_url, model="whisper-1",
                                     bound=bound, metrics=metrics, api_key=api_key,
                                     retries=retries, retry_after_max_s=5.0, timeout_s=30.0)
        yield make


async def test_the_file_goes_as_multipart_with_model_language_and_key(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    emulator.responder = lambda data: "  The garden behind the library.  "
    result = await make_transcriber().transcribe(
        SPEECH / "01-garden.webm", language="en", content_type="audio/webm"
    )
    assert result.text == "The garden behind the library."
    assert result.provider == "openai"
    [call] = emulator.received
    assert (call.model, call.language, call.response_format) == ("whisper-1", "en", "json")
    assert call.filename == "01-garden.webm" and call.content_type == "audio/webm"
    assert call.size == (SPEECH / "01-garden.webm").stat().st_size


async def test_a_429_with_retry_after_is_waited_for_then_the_200_is_used(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    emulator.script = [Reply(429, message="Rate limit reached", headers={"Retry-After": "1"}),
                       Reply(200, text="after the wait")]
    result = await make_transcriber().transcribe(
        SPEECH / "02-bicycle.wav", language=None, content_type="audio/wav"
    )
    assert result.text == "after the wait"
    first, second = emulator.received
    assert [first.status, second.status] == [429, 200]
    # Retry-After: 1 second was honoured (monotonic clock of this process, generous floor).
    assert second.at_s - first.at_s >= 0.9


async def test_repeated_500s_end_in_a_transient_error_after_the_retries(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    emulator.script = [Reply(500, message="boom")] * 3
    with pytest.raises(TransientTranscriptionError, match="500"):
        await make_transcriber(retries=2).transcribe(
            SPEECH / "02-bicycle.wav", language="en", content_type="audio/wav"
        )
    assert [r.status for r in emulator.received] == [500, 500, 500]


async def test_a_retry_after_longer_than_the_cap_is_left_to_the_stream_runtime(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    emulator.script = [Reply(503, headers={"Retry-After": "120"})]
    with pytest.raises(TransientTranscriptionError) as caught:
        await make_transcriber().transcribe(
            SPEECH / "02-bicycle.wav", language="en", content_type="audio/wav"
        )
    assert caught.value.retry_after_s == 120
    assert len(emulator.received) == 1


async def test_unusable_audio_and_silence_are_permanent(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    emulator.script = [Reply(400, message="Invalid file format."), Reply(200, text="  ")]
    transcriber = make_transcriber()
    with pytest.raises(Undecodable, match="Invalid file format"):
        await transcriber.transcribe(SPEECH / "corrupt.webm", language="en",
                                     content_type="audio/webm")
    with pytest.raises(NoSpeech):
        await transcriber.transcribe(SPEECH / "02-bicycle.wav", language="en",
                                     content_type="audio/wav")


async def test_a_wrong_key_is_a_transient_configuration_error(
    emulator: OpenAIAudioEmulator, make_transcriber: MakeTranscriber
) -> None:
    with pytest.raises(TransientTranscriptionError, match="401.*Incorrect API key"):
        await make_transcriber(api_key="sk-wrong", retries=0).transcribe(
            SPEECH / "02-bicycle.wav", language="en", content_type="audio/wav"
        )


def test_retry_after_reads_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_s({"Retry-After": "3"}) == 3
    assert retry_after_s({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now_s=1445412470) == 10
    assert retry_after_s({}) is None
