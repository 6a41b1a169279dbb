"""Build a boto3 S3 client from explicit settings, ``TIERSTORE_*`` env, or the AWS chain."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REGION",
    "S3Client",
    "S3Settings",
    "credentials_of",
    "make_s3_client",
    "resolve_settings",
]

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
DEFAULT_REGION = "us-east-1"

# A ``botocore`` S3 client. botocore ships no type information; we do not depend on
# boto3-stubs, so the alias documents intent rather than constraining calls.
S3Client: TypeAlias = Any


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom to connect. ``access_key=None`` means the standard AWS credential chain."""

    endpoint_url: str
    access_key: str | None = None
    secret_key: str | None = None
    region: str = DEFAULT_REGION

    def __post_init__(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both an access key and a secret key, or neither")

    def __repr__(self) -> str:  # never print the secret
        return f"S3Settings(endpoint_url={self.endpoint_url!r}, access_key={self.access_key!r}, region={self.region!r})"


def resolve_settings(
    endpoint_url: str | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
) -> S3Settings:
    """Explicit values win; then ``TIERSTORE_ENDPOINT``/``AWS_ENDPOINT_URL`` and
    ``TIERSTORE_ACCESS_KEY``/``TIERSTORE_SECRET_KEY``; then the defaults (local endpoint,
    boto3's own credential chain). Raises ``ValueError`` if only half a key pair is given."""
    env = os.environ if env is None else env
    endpoint = endpoint_url or env.get("TIERSTORE_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT
    ak = access_key or env.get("TIERSTORE_ACCESS_KEY") or None
    sk = secret_key or env.get("TIERSTORE_SECRET_KEY") or None
    return S3Settings(endpoint_url=endpoint, access_key=ak, secret_key=sk, region=region or DEFAULT_REGION)


def credentials_of(settings: S3Settings) -> Any:
    """botocore credentials for signing our own requests: the settings' key pair, else the AWS
    chain's; None when there is neither."""
    from botocore.credentials import Credentials
    from botocore.session import Session

    if settings.access_key is not None:
        return Credentials(settings.access_key, settings.secret_key)
    return Session().get_credentials()


def make_s3_client(settings: S3Settings, *, max_pool_connections: int = 10, max_attempts: int = 3) -> S3Client:
    """A thread-safe botocore S3 client with SigV4 and path-style addressing."""
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )
    return service_client("s3", settings, config)


def service_client(service: str, settings: S3Settings, config: Any) -> Any:
    """A botocore client of ``service`` (``s3``, ``iam``, ``sts``) for ``settings``."""
    import boto3

    # A private session: boto3's default session is not thread-safe to create clients from.
    session = boto3.session.Session()
    return session.client(
        service,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
        config=config,
    )
