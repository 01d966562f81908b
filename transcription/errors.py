"""What can go wrong in a transcription, split by what to do about it.

Permanent errors (:class:`PermanentTranscriptionError`) say the audio itself
is unusable: the chunk becomes ``failed`` with the error's readable message
and is not retried. Transient errors (:class:`TransientTranscriptionError`:
S3 or the provider unreachable, 5xx, timeouts) are infrastructure having a bad
minute: the handler defers the event with back-off for up to
``TRANSCRIPTION_RETRY_WINDOW_S`` before failing the chunk. Any other exception
is a bug: the stream runtime retries it, ``TRANSCRIPTION_MAX_ATTEMPTS`` times.
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


class StorageUnavailable(TransientTranscriptionError):
    """S3 could not serve the chunk's object: unreachable, an error answer other than
    "not found" (5xx, throttling, refused credentials), a timeout or a broken read."""
