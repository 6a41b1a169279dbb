"""boto3 IAM and STS clients for a tierstore server's query APIs (the same endpoint as S3)."""

from __future__ import annotations

from typing import Any, TypeAlias

from tierstore.client._s3 import S3Settings, service_client

__all__ = ["IamClient", "StsClient", "make_iam_client", "make_sts_client"]

IamClient: TypeAlias = Any  # a botocore IAM client (botocore ships no types)
StsClient: TypeAlias = Any  # a botocore STS client


def make_iam_client(settings: S3Settings, *, max_attempts: int = 3) -> IamClient:
    """A botocore IAM client signing for the ``iam`` service against ``settings.endpoint_url``."""
    from botocore.config import Config

    return service_client("iam", settings, Config(retries={"max_attempts": max_attempts, "mode": "standard"}))


def make_sts_client(settings: S3Settings, *, max_attempts: int = 3) -> StsClient:
    """A botocore STS client signing for the ``sts`` service against ``settings.endpoint_url``
    (GetCallerIdentity needs no permission: any valid key, long-term or temporary, may call it)."""
    from botocore.config import Config

    return service_client("sts", settings, Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
