"""Settings: parsed once from the environment, validated, secrets never shown."""

from __future__ import annotations

import pytest

from config import Secret, Settings, SettingsError


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


def test_a_ca_file_without_a_rediss_url_is_refused_rather_than_ignored(tmp_path) -> None:
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
