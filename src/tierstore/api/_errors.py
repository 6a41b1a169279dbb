"""The one table from domain errors to S3 error codes and HTTP statuses."""

from __future__ import annotations

from tierstore import errors as e
from tierstore.api._xml import E, document
from tierstore.crypto import KmsError, KmsUnavailable

__all__ = ["error_body", "status_of"]

_STATUS: dict[type[e.TierstoreError], int] = {
    e.NoSuchBucket: 404,
    e.NoSuchKey: 404,
    e.NoSuchUpload: 404,
    e.NoSuchVersion: 404,
    e.NoSuchTagSet: 404,
    e.NoSuchDataset: 404,
    e.NoSuchModel: 404,
    e.NoSuchEntity: 404,  # IAM entities (docs/identities.md)
    e.EntityAlreadyExists: 409,
    KmsError: 400,  # the key service: KMS.NotFoundException, .DisabledException, ... (crypto/_kms.py), as S3
    KmsUnavailable: 500,  # an external key service unreachable or refusing the server (KMS.KMSInternalException)
    e.DeleteConflict: 409,
    e.MalformedPolicyDocument: 400,
    e.InvalidAction: 400,
    e.LimitExceeded: 409,
    e.ObjectLockConfigurationNotFoundError: 404,
    e.NoSuchObjectLockConfiguration: 404,
    e.NoSuchBucketPolicy: 404,
    e.NoSuchPublicAccessBlockConfiguration: 404,
    e.BucketAlreadyOwnedByYou: 409,
    e.BucketAlreadyExists: 409,
    e.BucketNotEmpty: 409,
    e.InvalidBucketState: 409,
    e.InvalidArgument: 400,
    e.InvalidQuery: 400,
    e.InvalidRequest: 400,
    e.InvalidBucketName: 400,
    e.InvalidStorageClass: 400,
    e.InvalidTag: 400,
    e.InvalidRetentionPeriod: 400,
    e.InvalidURI: 400,
    e.KeyTooLongError: 400,
    e.MetadataTooLarge: 400,
    e.MalformedXML: 400,
    e.MalformedACLError: 400,
    e.UnresolvableGrantByEmailAddress: 400,
    e.MissingSecurityHeader: 400,
    e.UnexpectedContent: 400,
    e.AccessControlListNotSupported: 400,
    e.InvalidBucketAclWithObjectOwnership: 400,
    e.OwnershipControlsNotFoundError: 404,
    e.ServerSideEncryptionConfigurationNotFoundError: 404,
    e.NoSuchLifecycleConfiguration: 404,
    e.MalformedPolicy: 400,
    e.InvalidDigest: 400,
    e.BadDigest: 400,
    e.XAmzContentSHA256Mismatch: 400,
    e.IncompleteBody: 400,
    e.RequestTimeout: 400,
    e.MissingContentLength: 411,
    e.RequestHeaderSectionTooLarge: 400,
    e.EntityTooLarge: 400,
    e.EntityTooSmall: 400,
    e.InvalidPart: 400,
    e.InvalidPartOrder: 400,
    e.InvalidRange: 416,
    e.MethodNotAllowed: 405,
    e.PreconditionFailed: 412,
    e.NotModified: 304,
    e.AccessDenied: 403,
    e.InvalidObjectState: 403,  # GET of an object in a restore-required tier (docs/tiers.md)
    e.RestoreAlreadyInProgress: 409,  # RestoreObject while a restore of that version runs
    e.InvalidAccessKeyId: 403,
    e.SignatureDoesNotMatch: 403,
    e.RequestTimeTooSkewed: 403,
    e.AuthorizationHeaderMalformed: 400,
    e.AuthorizationQueryParametersError: 400,
    e.NegativeExpires: 403,  # S3 answers 403 for a negative X-Amz-Expires
    e.ExpiredToken: 400,  # STS session credentials (docs/security.md "STS")
    e.InvalidToken: 400,
    e.InvalidIdentityToken: 400,
    e.ExpiredTokenException: 400,
    e.IDPRejectedClaim: 403,
    e.IDPCommunicationError: 400,
    e.BadPresignExpires: 403,  # S3 answers 403 for an X-Amz-Expires out of 0..604800 or not a number
    e.NotImplementedOperation: 501,
    e.InsufficientStorage: 507,
    e.SlowDown: 503,
    e.TierUnavailable: 503,  # a remote tier down or timing out; Retry-After set by the error
    e.InternalError: 500,
    # browser POST uploads and CORS
    e.NoSuchCORSConfiguration: 404,
    e.CORSResponse: 403,
    e.BadRequest: 400,
    e.InvalidPolicyDocument: 400,
    e.MalformedPOSTRequest: 400,
    e.MaxPostPreDataLengthExceeded: 400,
}


def status_of(exc: e.TierstoreError) -> int:
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(exc: e.TierstoreError, resource: str, request_id: str) -> bytes:
    return document(
        "Error",
        E("Code", exc.code),
        E("Message", exc.message),
        E("Resource", exc.resource or resource),
        *(E(name, value) for name, value in exc.fields.items()),
        E("RequestId", request_id),
        E("HostId", request_id),
        ns=False,
    )
