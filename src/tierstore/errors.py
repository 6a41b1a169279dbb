"""Domain errors.

Three tiers (docs/architecture.md): drive/OS errors are translated into these domain errors
by blob/ and catalog/; these are translated into an S3 code and HTTP status in exactly one
table, ``tierstore.api._errors``. Each class that has a natural builtin counterpart also
subclasses it (``NoSuchKey`` is a ``KeyError``), so embedded users can catch either.

The class name is the S3 error code unless ``code`` says otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessControlListNotSupported",
    "AccessDenied",
    "AuthorizationHeaderMalformed",
    "AuthorizationQueryParametersError",
    "BadDigest",
    "BadPresignExpires",
    "BadRequest",
    "BucketAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
    "CORSResponse",
    "ChecksumMismatch",
    "CorruptBlob",
    "DeleteConflict",
    "EntityAlreadyExists",
    "EntityTooLarge",
    "EntityTooSmall",
    "ExpiredToken",
    "ExpiredTokenException",
    "IDPCommunicationError",
    "IDPRejectedClaim",
    "IncompleteBody",
    "InsufficientStorage",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidAction",
    "InvalidArgument",
    "InvalidBucketAclWithObjectOwnership",
    "InvalidBucketName",
    "InvalidBucketState",
    "InvalidDigest",
    "InvalidEncryptionAlgorithmError",
    "InvalidIdentityToken",
    "InvalidObjectState",
    "InvalidPart",
    "InvalidPartNumber",
    "InvalidPartOrder",
    "InvalidPolicyDocument",
    "InvalidQuery",
    "InvalidRange",
    "InvalidRequest",
    "InvalidRetentionPeriod",
    "InvalidStorageClass",
    "InvalidTag",
    "InvalidToken",
    "InvalidURI",
    "KeyTooLongError",
    "LimitExceeded",
    "MalformedACLError",
    "MalformedPOSTRequest",
    "MalformedPolicy",
    "MalformedPolicyDocument",
    "MalformedXML",
    "MaxPostPreDataLengthExceeded",
    "MetadataTooLarge",
    "MethodNotAllowed",
    "MissingAuthenticationToken",
    "MissingContentLength",
    "MissingSecurityHeader",
    "NegativeExpires",
    "NoSuchBucket",
    "NoSuchBucketPolicy",
    "NoSuchCORSConfiguration",
    "NoSuchDataset",
    "NoSuchEntity",
    "NoSuchKey",
    "NoSuchLifecycleConfiguration",
    "NoSuchModel",
    "NoSuchObjectLockConfiguration",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchTagSet",
    "NoSuchUpload",
    "NoSuchVersion",
    "NotImplementedOperation",
    "NotModified",
    "ObjectLockConfigurationNotFoundError",
    "OwnershipControlsNotFoundError",
    "PreconditionFailed",
    "RequestHeaderSectionTooLarge",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "RestoreAlreadyInProgress",
    "ServerSideEncryptionConfigurationNotFoundError",
    "SignatureDoesNotMatch",
    "SlowDown",
    "TierUnavailable",
    "TierstoreError",
    "UnexpectedContent",
    "UnresolvableGrantByEmailAddress",
    "ValidationError",
    "XAmzContentSHA256Mismatch",
]


class TierstoreError(Exception):
    """Base of every domain error. ``message`` is safe to show to a client."""

    code: str = "InternalError"

    def __init__(
        self,
        message: str = "",
        *,
        resource: str = "",
        headers: dict[str, str] | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.resource = resource
        self.headers = headers or {}  # extra response headers, e.g. x-amz-delete-marker
        # Extra elements of the S3 error body, e.g. RangeRequested / ActualObjectSize of InvalidRange.
        self.fields = fields or {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = cls.__name__

    def __str__(self) -> str:
        return self.message


# --- not found ---------------------------------------------------------------------------
class NoSuchBucket(TierstoreError, KeyError):
    """The specified bucket does not exist."""


class NoSuchKey(TierstoreError, KeyError):
    """The specified key does not exist."""


class NoSuchVersion(TierstoreError, KeyError):
    """The specified version does not exist."""


class NoSuchUpload(TierstoreError, KeyError):
    """The specified multipart upload does not exist."""


class NoSuchTagSet(TierstoreError, KeyError):
    """The TagSet does not exist."""


class ObjectLockConfigurationNotFoundError(TierstoreError, KeyError):
    """Object Lock configuration does not exist for this bucket."""


class NoSuchObjectLockConfiguration(TierstoreError, KeyError):
    """The specified object does not have a ObjectLock configuration."""


class NoSuchBucketPolicy(TierstoreError, KeyError):
    """The bucket policy does not exist"""


class NoSuchPublicAccessBlockConfiguration(TierstoreError, KeyError):
    """The public access block configuration was not found"""


class NoSuchDataset(TierstoreError, KeyError):
    """The specified dataset (or dataset version) does not exist."""


class NoSuchModel(TierstoreError, KeyError):
    """The specified model (or model version, or alias) does not exist."""


class NoSuchEntity(TierstoreError, KeyError):
    """The IAM entity (user, access key, group, policy, role, provider) does not exist."""


# --- conflicts ---------------------------------------------------------------------------
class BucketAlreadyOwnedByYou(TierstoreError, FileExistsError):
    """Your previous request to create the named bucket succeeded and you already own it."""


class BucketAlreadyExists(TierstoreError, FileExistsError):
    """The requested bucket name is not available."""


class InvalidBucketState(TierstoreError, OSError):
    """The request is not valid with the current state of the bucket."""


class BucketNotEmpty(TierstoreError, OSError):
    """The bucket you tried to delete is not empty."""


class EntityAlreadyExists(TierstoreError, FileExistsError):
    """An IAM entity of that name already exists."""


class DeleteConflict(TierstoreError, OSError):
    """The IAM entity still has subordinate entities (keys, members, policies): remove them first."""


# --- bad input ---------------------------------------------------------------------------
class InvalidArgument(TierstoreError, ValueError):
    """Invalid argument."""


class MalformedPolicyDocument(TierstoreError, ValueError):
    """The policy document is malformed."""


class ValidationError(InvalidArgument):
    """A parameter of an IAM or STS query request is missing or invalid."""


class InvalidAction(TierstoreError, ValueError):
    """The query request names no action, or one this service does not have."""


class LimitExceeded(TierstoreError, OSError):
    """An IAM quota would be exceeded (e.g. more than two access keys for a user)."""


class InvalidQuery(InvalidArgument):
    """The metadata query is not valid."""

    code = "InvalidQuery"

    def __init__(self, message: str = "", *, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column  # 1-based position of the error in the query text, when known


class InvalidEncryptionAlgorithmError(InvalidArgument):
    """The encryption request you specified is not valid. The valid value is AES256."""

    code = "InvalidEncryptionAlgorithmError"


class InvalidRequest(TierstoreError, ValueError):
    """Invalid request."""


class InvalidBucketName(TierstoreError, ValueError):
    """The specified bucket is not valid."""


class InvalidObjectState(TierstoreError, PermissionError):
    """The operation is not valid for the object's storage class"""


class RestoreAlreadyInProgress(TierstoreError, RuntimeError):
    """Object restore is already in progress"""


class InvalidStorageClass(TierstoreError, ValueError):
    """The storage class you specified is not valid."""


class InvalidTag(TierstoreError, ValueError):
    """The tag provided was not a valid tag."""


class InvalidRetentionPeriod(TierstoreError, ValueError):
    """Default retention period must be a positive integer value."""


class InvalidURI(TierstoreError, ValueError):
    """Couldn't parse the specified URI."""


class KeyTooLongError(TierstoreError, ValueError):
    """Your key is too long."""


class MetadataTooLarge(TierstoreError, ValueError):
    """Your metadata headers exceed the maximum allowed metadata size."""


class MalformedPolicy(TierstoreError, ValueError):
    """Policies must be valid JSON and the first byte must be '{'."""


class MalformedXML(TierstoreError, ValueError):
    """The XML you provided was not well-formed or did not validate against our published schema."""


class InvalidDigest(TierstoreError, ValueError):
    """The Content-MD5 or checksum value you specified is not valid."""


class BadDigest(TierstoreError, ValueError):
    """The Content-MD5 or checksum value you specified did not match what was received."""


class XAmzContentSHA256Mismatch(TierstoreError, ValueError):
    """The provided 'x-amz-content-sha256' header does not match what was computed."""


class IncompleteBody(TierstoreError, ValueError):
    """You did not provide the number of bytes specified by the Content-Length HTTP header."""


class RequestHeaderSectionTooLarge(TierstoreError, ValueError):
    """Your request header section exceeds the maximum allowed size."""


class RequestTimeout(TierstoreError, TimeoutError):
    """Your socket connection to the server was not read from or written to within the timeout period."""


class MissingContentLength(TierstoreError, ValueError):
    """You must provide the Content-Length HTTP header."""


class EntityTooLarge(TierstoreError, ValueError):
    """Your proposed upload exceeds the maximum allowed object size."""


class EntityTooSmall(TierstoreError, ValueError):
    """Your proposed upload is smaller than the minimum allowed object size."""


class InvalidPart(TierstoreError, ValueError):
    """One or more of the specified parts could not be found, or its entity tag did not match."""


class InvalidPartOrder(TierstoreError, ValueError):
    """The list of parts was not in ascending order."""


class InvalidRange(TierstoreError, ValueError):
    """The requested range is not satisfiable."""


class InvalidPartNumber(InvalidRange):
    """The requested partnumber is not satisfiable."""


class MethodNotAllowed(TierstoreError, ValueError):
    """The specified method is not allowed against this resource."""


# --- preconditions (not errors to the client, but control flow to the api layer) ----------
class PreconditionFailed(TierstoreError):
    """At least one of the preconditions you specified did not hold."""


class NotModified(TierstoreError):
    """Not Modified"""


# --- auth --------------------------------------------------------------------------------
class AccessDenied(TierstoreError, PermissionError):
    """Access Denied"""


class MissingAuthenticationToken(AccessDenied):
    """Request is missing Authentication Token"""


class InvalidAccessKeyId(TierstoreError, PermissionError):
    """The AWS access key Id you provided does not exist in our records."""


class SignatureDoesNotMatch(TierstoreError, PermissionError):
    """The request signature we calculated does not match the signature you provided."""


class AuthorizationHeaderMalformed(TierstoreError, PermissionError):
    """The authorization header you provided is invalid."""


class AuthorizationQueryParametersError(TierstoreError, PermissionError):
    """Error parsing the X-Amz-Credential parameter."""


class BadPresignExpires(AuthorizationQueryParametersError):
    """X-Amz-Expires is not a number of seconds from 0 to 604800 (7 days)."""

    code = "AuthorizationQueryParametersError"  # as S3 names it, but 403 where the others are 400


class NegativeExpires(BadPresignExpires):
    """X-Amz-Expires must be non-negative"""

    code = "AuthorizationQueryParametersError"


class RequestTimeTooSkewed(TierstoreError, PermissionError):
    """The difference between the request time and the server's time is too large."""


# --- STS: temporary credentials and web identities (docs/security.md "STS") -------------------
class ExpiredToken(TierstoreError, PermissionError):
    """The provided token has expired."""


class InvalidToken(TierstoreError, PermissionError):
    """The provided token is malformed or otherwise invalid."""


class InvalidIdentityToken(TierstoreError, PermissionError):
    """The web identity token that was passed could not be validated."""


class ExpiredTokenException(TierstoreError, PermissionError):
    """The web identity token that was passed is expired or is not valid."""


class IDPRejectedClaim(TierstoreError, PermissionError):
    """The identity provider rejected the claim of the web identity token."""


class IDPCommunicationError(TierstoreError, OSError):
    """The request could not be fulfilled because the identity provider could not be reached."""


# --- server side -------------------------------------------------------------------------
class NotImplementedOperation(TierstoreError, NotImplementedError):
    """A header or operation you provided implies functionality that is not implemented."""

    code = "NotImplemented"


class InsufficientStorage(TierstoreError, OSError):
    """Not enough storage space left to complete the request."""


class SlowDown(TierstoreError, OSError):
    """Please reduce your request rate."""


class TierUnavailable(TierstoreError, ConnectionError):
    """A remote tier (docs/tiers.md) cannot be reached or did not answer in time; retry later."""

    code = "ServiceUnavailable"
    retry_after_s = 5

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(self.retry_after_s))


class InternalError(TierstoreError):
    """We encountered an internal error. Please try again."""


class ChecksumMismatch(InternalError):
    """Stored data failed its checksum; refusing to return it."""

    code = "InternalError"


class CorruptBlob(ChecksumMismatch):
    """A stored blob is damaged (checksum mismatch or truncated)."""

    code = "InternalError"


# --- ACLs and Object Ownership (api/_acl.py) ---------------------------------------------------
class MalformedACLError(TierstoreError, ValueError):
    """The XML you provided was not well-formed or did not validate against our published schema."""


class UnresolvableGrantByEmailAddress(TierstoreError, ValueError):
    """The email address you provided does not match any account on record."""


class MissingSecurityHeader(TierstoreError, ValueError):
    """Your request was missing a required header."""


class UnexpectedContent(TierstoreError, ValueError):
    """This request does not support content."""


class AccessControlListNotSupported(TierstoreError, ValueError):
    """The bucket does not allow ACLs."""


class InvalidBucketAclWithObjectOwnership(TierstoreError, ValueError):
    """Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting."""


class OwnershipControlsNotFoundError(TierstoreError, KeyError):
    """The bucket ownership controls were not found."""

# --- browser POST uploads and CORS (api/_post_object.py, api/_cors.py) -------------------------
class NoSuchCORSConfiguration(TierstoreError, KeyError):
    """The CORS configuration does not exist"""


# --- bucket lifecycle (api/_lifecycle.py) ------------------------------------------------------
class NoSuchLifecycleConfiguration(TierstoreError, KeyError):
    """The lifecycle configuration does not exist"""


# --- server-side encryption (api/_sse.py, api/_bucket_encryption.py) --------------------------
class ServerSideEncryptionConfigurationNotFoundError(TierstoreError, KeyError):
    """The server side encryption configuration was not found"""


class CORSResponse(TierstoreError, PermissionError):
    """CORSResponse: This CORS request is not allowed."""

    code = "AccessForbidden"  # S3's code for a refused preflight; the message starts "CORSResponse: "


class BadRequest(TierstoreError, ValueError):
    """Bad Request"""


class InvalidPolicyDocument(TierstoreError, ValueError):
    """The content of the form does not meet the conditions specified in the policy document."""


class MalformedPOSTRequest(TierstoreError, ValueError):
    """The body of your POST request is not well-formed multipart/form-data."""


class MaxPostPreDataLengthExceeded(TierstoreError, ValueError):
    """Your POST request fields preceding the upload file were too large."""
