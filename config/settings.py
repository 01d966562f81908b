"""The typed settings object: parsed once from the environment, then passed in.

``Settings`` is the composition of one section per concern (Redis, S3, LLM,
transcription, HTTP, observability, streams, recovery). Code reads any field from it
(``settings.redis_key_prefix``); a function that needs one concern is typed
with that section (``open_redis(settings: RedisSettings)``), and a ``Settings``
is accepted there since it inherits every section.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.http_settings import HttpSettings
from config.llm_settings import LlmSettings
from config.observability_settings import ObservabilitySettings
from config.parsing import Secret, SettingsError
from config.recovery_settings import RecoverySettings
from config.redis_settings import RedisSettings
from config.s3_settings import S3Settings
from config.stream_settings import StreamSettings
from config.transcription_settings import TranscriptionSettings

# Secret and SettingsError have lived here; callers still import them from this module.
__all__ = ["Secret", "Settings", "SettingsError"]


# The bases are listed last section first: dataclasses collects the fields of the
# last base first, and this order is the order of the variables in `describe()`,
# the README table and `echo-gateway config` (Redis first, streams last).
@dataclass(frozen=True, repr=False)
class Settings(
    RecoverySettings,
    StreamSettings,
    ObservabilitySettings,
    HttpSettings,
    TranscriptionSettings,
    LlmSettings,
    S3Settings,
    RedisSettings,
):
    """Everything the service is configured with. Build it with :meth:`from_env`.

    Each section checks its own combinations (``_check_combinations`` runs them
    all, Redis first); a rule spanning two sections belongs here.
    """
