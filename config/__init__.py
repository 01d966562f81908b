"""Settings: one typed object parsed once from the environment and passed in.

:class:`Settings` inherits every section; a function that needs only one
concern takes that section (``RedisSettings``, ``S3Settings``, ...).
"""

from config.http_settings import HttpSettings
from config.llm_settings import LlmSettings
from config.observability_settings import ObservabilitySettings
from config.parsing import Secret, SettingsError
from config.recovery_settings import RecoverySettings
from config.redis_settings import RedisSettings
from config.s3_settings import S3Settings
from config.section import SettingsSection
from config.settings import Settings
from config.stream_settings import StreamSettings
from config.transcription_settings import TranscriptionSettings

__all__ = [
    "HttpSettings",
    "LlmSettings",
    "ObservabilitySettings",
    "RecoverySettings",
    "RedisSettings",
    "S3Settings",
    "Secret",
    "Settings",
    "SettingsError",
    "SettingsSection",
    "StreamSettings",
    "TranscriptionSettings",
]
