"""What can go wrong in a transcription, split by what to do about it.

Permanent errors (:class:`PermanentTranscriptionError`) say the audio itself
is unusable: the chunk becomes ``failed`` with the error's readable message
and is not retried. Everything else (:class:`TransientTranscriptionError`,
and any unexpected exception) is retried by the stream runtime.
"""

from __future__ import annotations


class TranscriptionError(Exception):
    """Base of the transcription errors."""


class PermanentTranscriptionError(TranscriptionError):
    """Retrying cannot help: the chunk fails with ``str(exc)`` as its error."""


class Undecodable(PermanentTranscriptionError):
    """The file is not audio any decoder accepts (corrupt, truncated, wrong format)."""


class EmptyAudio(PermanentTranscriptionError):
    """The object or its audio stream is empty."""


class TooShort(PermanentTranscriptionError):
    """The audio is shorter than ``TRANSCRIPTION_MIN_DURATION_S``."""


class NoSpeech(PermanentTranscriptionError):
    """The audio decodes but holds no recognisable speech."""


class TooLarge(PermanentTranscriptionError):
    """The object is larger than ``TRANSCRIPTION_MAX_BYTES``."""


class AudioMissing(PermanentTranscriptionError):
    """The chunk's object is not in the bucket (deleted after verification)."""


class TransientTranscriptionError(TranscriptionError):
    """Worth another try later: rate limits, 5xx, timeouts, connection errors."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
