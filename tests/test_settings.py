"""Settings: parsed once from the environment, validated, secrets never shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import (
    HttpSettings,
    LlmSettings,
    ObservabilitySettings,
    RecoverySettings,
    RedisSettings,
    S3Settings,
    Secret,
    Settings,
    SettingsError,
    SettingsSection,
    StreamSettings,
    TranscriptionSettings,
)

SECTIONS: tuple[type[SettingsSection], ...] = (
    RedisSettings, S3Settings, LlmSettings, TranscriptionSettings, HttpSettings,
    ObservabilitySettings, StreamSettings, RecoverySettings,
)

#: The order of the README table and of `echo-gateway config`, as before the split into sections.
VARIABLES_IN_ORDER = (
    "REDIS_URL", "REDIS_MAX_CONNECTIONS", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
    "REDIS_CLUSTER", "REDIS_CA_FILE", "REDIS_KEY_PREFIX", "REDIS_AUTOPIPELINE", "S3_ENDPOINT_URL",
    "S3_PUBLIC_ENDPOINT_URL", "S3_BUCKET", "S3_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "S3_CA_FILE", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "LLM_MODEL",
    "LLM_MAX_CONCURRENT_CALLS", "LLM_LEASE_S", "LLM_CALL_DEADLINE_S", "LLM_ATTEMPT_TIMEOUT_S",
    "LLM_BATCH_SIZE", "LLM_CONTEXT_TOKENS", "LLM_JOB_PARALLEL_BATCHES", "TRANSCRIBER",
    "TRANSCRIBER_URL", "TRANSCRIBER_API_KEY", "TRANSCRIBER_MODEL", "TRANSCRIBER_TIMEOUT_S",
    "TRANSCRIBER_HTTP_RETRIES", "TRANSCRIBER_RETRY_AFTER_MAX_S", "TRANSCRIPTION_LANGUAGE",
    "WHISPER_MODEL_DIR", "WHISPER_CACHE_DIR", "WHISPER_THREADS", "WHISPER_CPU_THREADS",
    "TRANSCRIPTION_CONCURRENCY", "TRANSCRIPTION_MAX_CONCURRENT_PROCESS",
    "TRANSCRIPTION_MAX_CONCURRENT_CALLS", "TRANSCRIPTION_LEASE_S", "TRANSCRIPTION_MAX_BYTES",
    "TRANSCRIPTION_MAX_ATTEMPTS", "TRANSCRIPTION_RETRY_WINDOW_S", "TRANSCRIPTION_RETRY_MAX_DELAY_S",
    "TRANSCRIPTION_MIN_DURATION_S", "FINALIZATION_CLAIM_S",
    "ADMIN_TOKEN", "CORS_ALLOW_ORIGINS", "MAX_BODY_BYTES", "UPLOAD_URL_LIMIT_PER_WINDOW",
    "UPLOAD_URL_LIMIT_WINDOW_S", "INITIATE_LIMIT_PER_WINDOW", "INITIATE_LIMIT_WINDOW_S",
    "PING_LIMIT_PER_WINDOW", "PING_LIMIT_WINDOW_S", "UPLOAD_MAX_BYTES", "UPLOAD_URL_EXPIRES_S",
    "UPLOAD_VERIFY_DELAYS_S", "UPLOAD_VERIFY_ERROR_WINDOW_S", "UPLOAD_CONFIRM_WAIT_S",
    "IDLE_FINISH_AFTER_S",
    "TRUSTED_PROXY_HOPS", "PING_TTL_S", "LOG_LEVEL", "LOG_FORMAT", "SENTRY_DSN", "CONSUMER_NAME",
    "SHUTDOWN_GRACE_S", "STREAM_LEASE_S", "STREAM_MAX_DELIVERIES", "STREAM_CONCURRENCY",
    "STREAM_PREFETCH",
    "STREAM_MAX_LEN", "STREAM_RETENTION_MAX_AGE_S", "STREAM_DEAD_CONSUMER_IDLE_S",
    "STUCK_SWEEP_INTERVAL_S", "STUCK_AFTER_S", "STUCK_SWEEP_MAX_ITEMS", "STUCK_SWEEP_LEASE_S",
)

#: A value other than the default for at least one variable of every section.
ONE_PER_SECTION = {
    "REDIS_KEY_PREFIX": "other",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "LLM_MODEL": "another-model",
    "TRANSCRIBER_MODEL": "another-whisper",
    "MAX_BODY_BYTES": "2048",
    "LOG_LEVEL": "debug",
    "CONSUMER_NAME": "consumer-1",
    "STUCK_AFTER_S": "5",
}


def _variables(section: type[SettingsSection]) -> set[str]:
    return {f.metadata["env"] for f in dataclasses.fields(section)}


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.redis_max_connections == 20
    assert settings.llm_max_concurrent_calls == 3
    assert settings.transcriber == "local"
    assert settings.cors_allow_origins == ()


def test_values_are_parsed_into_types() -> None:
    settings = Settings.from_env({
        "REDIS_URL": "rediss://cache.internal:6380/1",
        "REDIS_MAX_CONNECTIONS": "50",
        "REDIS_SENTINELS": "s1:26379, s2:26379",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "LLM_MAX_CONCURRENT_CALLS": "5",
        "CORS_ALLOW_ORIGINS": "https://a.example.org, http://localhost:5173/",
    })
    assert settings.redis_max_connections == 50
    assert settings.redis_sentinels == (("s1", 26379), ("s2", 26379))
    assert settings.cors_allow_origins == ("https://a.example.org", "http://localhost:5173")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "http://not-redis"),
        # TLS verification cannot be switched off through the URL either
        ("REDIS_URL", "rediss://cache.internal:6380/0?ssl_cert_reqs=none"),
        ("REDIS_URL", "rediss://cache.internal:6380/0?db=1&SSL_CHECK_HOSTNAME=false"),
        ("REDIS_URL", "rediss://cache.internal:6380/0?%73sl_cert_reqs=none"),
        ("REDIS_AUTOPIPELINE", "sometimes"),
        ("REDIS_MAX_CONNECTIONS", "many"),
        ("REDIS_MAX_CONNECTIONS", "0"),
        ("LLM_MAX_CONCURRENT_CALLS", "0"),
        ("TRANSCRIBER", "whisper.cpp"),
        ("LOG_FORMAT", "xml"),
        ("REDIS_CLUSTER", "maybe"),
        ("REDIS_SENTINELS", "no-port-here"),
        ("REDIS_CA_FILE", "/no/such/ca.pem"),
        ("S3_ENDPOINT_URL", "s3.example.org"),
    ],
)
def test_a_bad_value_is_reported_by_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_ca_file_without_a_rediss_url_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": "redis://cache.internal:6379/0", "REDIS_CA_FILE": str(ca)})
    assert caught.value.variable == "REDIS_CA_FILE"


def test_wildcard_origin_is_refused_because_the_portal_sends_credentials() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CORS_ALLOW_ORIGINS": "https://a.example.org,*"})
    assert caught.value.variable == "CORS_ALLOW_ORIGINS"
    assert "credentials" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_CLUSTER": "true"}, "REDIS_URL"),
        ({"TRANSCRIBER": "openai"}, "TRANSCRIBER_URL"),
        ({"AWS_ACCESS_KEY_ID": "AKIA"}, "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_settings_that_go_together_are_checked(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_secrets_never_show_in_repr_or_describe() -> None:
    settings = Settings.from_env({
        "REDIS_URL": "rediss://app:redis-very-secret@cache.internal:6380/0",
        "S3_ENDPOINT_URL": "https://user:s3-very-secret@s3.internal",
        "ANTHROPIC_API_KEY": "sk-ant-very-secret",
        "AWS_ACCESS_KEY_ID": "AKIA-secret-id",
        "AWS_SECRET_ACCESS_KEY": "aws-very-secret",
        "ADMIN_TOKEN": "admin-very-secret",
        "TRANSCRIBER_API_KEY": "tr-very-secret",
        "SENTRY_DSN": "https://key-secret@sentry.example.org/1",
    })
    shown = repr(settings) + str(settings.describe())
    for secret in ("very-secret", "AKIA-secret-id", "key-secret"):
        assert secret not in shown
    assert settings.anthropic_api_key.reveal() == "sk-ant-very-secret"
    rows = {name: value for name, value, _ in settings.describe()}
    assert rows["REDIS_URL"] == "rediss://app:***@cache.internal:6380/0"
    assert settings.redis_url == "rediss://app:redis-very-secret@cache.internal:6380/0"
    assert rows["ANTHROPIC_API_KEY"] == "(set, hidden)"
    assert rows["TRANSCRIBER_API_KEY"] == "(set, hidden)"
    assert repr(Secret("x")) == "Secret('**********')"


def test_the_variables_keep_their_order() -> None:
    """The README table and `echo-gateway config` list the variables in this order."""
    rows = Settings.from_env({}).describe()
    assert tuple(name for name, _, _ in rows) == VARIABLES_IN_ORDER


def test_settings_is_every_section_and_no_variable_is_in_two() -> None:
    settings = Settings.from_env({})
    seen: set[str] = set()
    for section in SECTIONS:
        assert isinstance(settings, section)
        assert not _variables(section) & seen
        seen |= _variables(section)
    assert seen == _variables(Settings)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda section: section.__name__)
def test_a_section_reads_its_own_variables_and_no_other(section: type[SettingsSection]) -> None:
    own = _variables(section)
    alone = section.from_env(ONE_PER_SECTION)
    assert alone.describe() == [
        row for row in Settings.from_env(ONE_PER_SECTION).describe() if row[0] in own
    ]
    assert alone != section()
    # Every other variable set to a value most parsers refuse: reading one would raise.
    others = {name: "{not valid}" for name in _variables(Settings) - own}
    assert section.from_env(others) == section()


def test_a_section_checks_its_own_combinations_and_hides_its_secrets() -> None:
    with pytest.raises(SettingsError) as caught:
        S3Settings.from_env({"AWS_ACCESS_KEY_ID": "AKIA"})
    assert caught.value.variable == "AWS_SECRET_ACCESS_KEY"
    assert RedisSettings.from_env({"TRANSCRIBER": "openai"}) == RedisSettings()
    s3 = S3Settings.from_env({"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "very-secret"})
    assert repr(s3).startswith("S3Settings(") and "very-secret" not in repr(s3)


def test_settings_stay_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_key_prefix = "changed"  # type: ignore[misc]  # the error under test
