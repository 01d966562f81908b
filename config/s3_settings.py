"""The S3 section: ``open_s3`` takes it, and reads nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import (
    Secret,
    SettingsError,
    parse_existing_file,
    parse_http_url,
    parse_secret,
    parse_str,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class S3Settings(SettingsSection):
    """The S3 endpoint, bucket and credentials."""

    s3_endpoint_url: str | None = setting(
        "S3_ENDPOINT_URL", parse_http_url, None,
        "S3 endpoint; unset under `dev` starts a private SeaweedFS, unset elsewhere means AWS",
    )
    s3_public_endpoint_url: str | None = setting(
        "S3_PUBLIC_ENDPOINT_URL", parse_http_url, None,
        "endpoint browsers use for presigned URLs, when it differs from S3_ENDPOINT_URL",
    )
    s3_bucket: str = setting(
        "S3_BUCKET", parse_str, "echo-audio", "bucket holding audio and transcripts"
    )
    s3_region: str = setting("S3_REGION", parse_str, "us-east-1", "S3 region")
    aws_access_key_id: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "AWS_ACCESS_KEY_ID", parse_secret, Secret(""), "S3 access key", secret=True
    )
    aws_secret_access_key: Secret = setting(  # noqa: RUF009 (a Secret is immutable)
        "AWS_SECRET_ACCESS_KEY", parse_secret, Secret(""), "S3 secret key", secret=True
    )
    s3_ca_file: str | None = setting(
        "S3_CA_FILE", parse_existing_file, None,
        "CA bundle for the S3 endpoint (TLS verification cannot be turned off)",
    )

    def _check_combinations(self) -> None:
        super()._check_combinations()
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise SettingsError(
                "AWS_SECRET_ACCESS_KEY" if self.aws_access_key_id else "AWS_ACCESS_KEY_ID",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together",
            )
