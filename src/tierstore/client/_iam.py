"""A boto3 IAM client for a tierstore server's IAM query API (the same endpoint as S3)."""

from __future__ import annotations

from typing import Any, TypeAlias

from tierstore.client._s3 import S3Settings, service_client

__all__ = ["IamClient", "make_iam_client"]

IamClient: TypeAlias = Any  # a botocore IAM client (botocore ships no types)


def make_iam_client(settings: S3Settings, *, max_attempts: int = 3) -> IamClient:
    """A botocore IAM client signing for the ``iam`` service against ``settings.endpoint_url``."""
    from botocore.config import Config

    return service_client("iam", settings, Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
