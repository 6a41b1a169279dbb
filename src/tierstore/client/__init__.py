"""Python SDK for a tierstore (or any S3) endpoint.

Today: a boto3 S3 client configured the way every tierstore tool expects (endpoint,
credentials and region resolved from flags, then ``TIERSTORE_*``, then the AWS chain;
path-style addressing). The SDK proper (extensions under ``/_tierstore/``) grows here.
"""

from tierstore.client._ext import BatchItem, QueryPage, TierstoreClient, TierstoreClientError
from tierstore.client._iam import IamClient, StsClient, make_iam_client, make_sts_client
from tierstore.client._s3 import (
    DEFAULT_ENDPOINT,
    DEFAULT_REGION,
    S3Client,
    S3Settings,
    make_s3_client,
    resolve_settings,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REGION",
    "BatchItem",
    "IamClient",
    "QueryPage",
    "S3Client",
    "S3Settings",
    "StsClient",
    "TierstoreClient",
    "TierstoreClientError",
    "make_iam_client",
    "make_s3_client",
    "make_sts_client",
    "resolve_settings",
]
