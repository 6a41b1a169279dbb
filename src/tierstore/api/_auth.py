"""Server-side verification of S3 request authentication (SigV4 header/query, SigV2 header/query).

``Authenticator.authenticate`` is pure and synchronous: it takes the request line and headers as
the ASGI server saw them and either returns who signed the request and how the body must be
checked, or raises a ``tierstore.errors`` auth error. ``wrap_body`` then applies that body check
while streaming: the SHA-256 of a signed payload, or the aws-chunked decoding with its chunk and
trailer signatures.

Secrets never leave this module: error messages carry no secret, no signing key and no computed
signature.
"""

from __future__ import annotations

import calendar
import enum
import functools
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from tierstore._hashing import ThreadedHash
from tierstore.api import _sigv2, _sigv4
from tierstore.api._chunked import ChunkedDecoder
from tierstore.api._sigv4 import ChunkVerifier, Credential, StreamSigning
from tierstore.engine import SecretNotLoaded
from tierstore.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BadPresignExpires,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    InvalidToken,
    NegativeExpires,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)

__all__ = ["AuthRequest", "AuthResult", "Authenticator", "PayloadMode", "SignedRequest", "wrap_body"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_PRESIGN_EXPIRES_S = 604800  # 7 days, the SigV4 limit

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_OUT_BYTES = 64 * 1024  # decoded aws-chunked payload is yielded in pieces of at least this much
_KEY_CACHE_SIZE = 1024

_V4_QUERY_KEYS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_V2_QUERY_KEYS = ("AWSAccessKeyId", "Signature")


class SignedRequest(Protocol):
    """What authentication reads of a request: ``AuthRequest``, or the dispatcher's own parsed
    request (``_request.Request`` has these attributes: no copy per request)."""

    @property
    def method(self) -> str: ...
    @property
    def raw_path(self) -> bytes: ...
    @property
    def query_string(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def virtual_bucket(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """The parts of an HTTP request that authentication looks at, as they arrived."""

    method: str
    raw_path: bytes  # percent-encoded, as on the wire, without the query
    query_string: bytes  # raw, as on the wire; may be b""
    headers: Mapping[str, str]  # lower-case names, latin-1 values; repeats joined with ","
    virtual_bucket: str | None = None  # bucket from the Host header (virtual-hosted style)


class PayloadMode(enum.Enum):
    """How the request body must be checked (see ``wrap_body``)."""

    NONE = "none"  # no check: anonymous, SigV2
    UNSIGNED = "unsigned"  # UNSIGNED-PAYLOAD, or a presigned v4 URL without a content hash
    SIGNED = "signed"  # body must hash to AuthResult.expected_sha256
    STREAMING_SIGNED = "streaming-signed"  # aws-chunked with chunk signatures
    STREAMING_SIGNED_TRAILER = "streaming-signed-trailer"  # ... plus a signed trailer
    STREAMING_UNSIGNED_TRAILER = "streaming-unsigned-trailer"  # aws-chunked, unsigned, trailer


@dataclass(slots=True)
class AuthResult:
    """Who signed the request (``access_key`` None: nobody) and how to check its body."""

    access_key: str | None
    scheme: str  # "v4-header" | "v4-query" | "v2-header" | "v2-query" | "v4-post" | "v2-post" | "anonymous"
    payload: PayloadMode
    expected_sha256: str | None = None  # lower-case hex, for PayloadMode.SIGNED
    _stream: StreamSigning | None = field(default=None, repr=False, compare=False)  # chunk chain
    session: Any = field(default=None, repr=False, compare=False)  # temporary credentials' session (STS)


_ANONYMOUS_SCHEME = "anonymous"
_PAYLOAD_LITERALS = {
    UNSIGNED_PAYLOAD: PayloadMode.UNSIGNED,
    STREAMING_SIGNED: PayloadMode.STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER: PayloadMode.STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER: PayloadMode.STREAMING_UNSIGNED_TRAILER,
}
_STREAMING_SIGNED_MODES = (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)


@dataclass(frozen=True, slots=True)
class _V4Claim:
    """What a SigV4 request claims, parsed from its Authorization header or query."""

    scheme: str
    cred: Credential
    signed: Sequence[str]
    signature: str
    amz_date: str
    payload_line: str  # the last line of the canonical request
    pairs: list[tuple[bytes, bytes]]  # the signed query parameters, raw
    token: str | None = None  # x-amz-security-token: temporary credentials (never logged)


class Authenticator:
    """Verifies S3 request signatures against secrets from ``lookup_secret(access_key)``.

    ``region`` is the region this server reports; any region in a SigV4 credential scope is
    accepted (the signature is checked with the region the client used). ``clock`` returns epoch
    seconds. Derived SigV4 signing keys are cached per (secret, date, region, service).
    ``session_secret(access_key, token)``: for a request carrying a session token
    (``x-amz-security-token``), the secret that must have signed it and its session (STS; it
    raises ``InvalidToken``/``ExpiredToken``/``InvalidAccessKeyId``); None: tokens are refused.
    """

    def __init__(
        self,
        lookup_secret: Callable[[str], str | None],
        *,
        region: str = "us-east-1",
        max_skew_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        session_secret: Callable[[str, str], tuple[str, Any]] | None = None,
        fetch_secret: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self._lookup_secret = lookup_secret
        self._fetch_secret = fetch_secret
        self._fetched: tuple[str, str | None] | None = None  # verify's secret for its second try
        self._session_secret = session_secret
        self.region = region
        self.max_skew_s = max_skew_s
        self._clock = clock
        self._signing_key = functools.lru_cache(maxsize=_KEY_CACHE_SIZE)(_sigv4.derive_signing_key)

    def __repr__(self) -> str:
        return f"Authenticator(region={self.region!r}, max_skew_s={self.max_skew_s!r})"

    async def verify(self, req: SignedRequest) -> AuthResult:
        """``authenticate``, reading the secret first (``fetch_secret``) when ``lookup_secret``
        does not hold it now (``SecretNotLoaded``: a worker's cache miss). Every S3 request:
        ``_verified``'s steps inline."""
        try:
            return self.authenticate(req)
        except SecretNotLoaded as missing:
            await self._fetch(missing)
        try:
            return self.authenticate(req)
        finally:
            self._fetched = None

    async def verify_query(self, req: SignedRequest, service: str, payload_sha256: str) -> AuthResult:
        """``authenticate_query`` as ``verify`` does ``authenticate``."""
        return await self._verified(lambda: self.authenticate_query(req, service, payload_sha256))

    async def verify_form(self, fields: Mapping[str, str]) -> AuthResult:
        """``authenticate_form`` as ``verify`` does ``authenticate``."""
        return await self._verified(lambda: self.authenticate_form(fields))

    async def _verified(self, attempt: Callable[[], AuthResult]) -> AuthResult:
        try:
            return attempt()
        except SecretNotLoaded as missing:
            await self._fetch(missing)
        try:
            return attempt()
        finally:
            self._fetched = None

    async def _fetch(self, missing: SecretNotLoaded) -> None:
        """Read the secret ``missing`` names for the second, synchronous try (no await between
        it and that try, so no other request sees ``_fetched``)."""
        if self._fetch_secret is None:
            raise missing
        self._fetched = (missing.access_key, await self._fetch_secret(missing.access_key))

    def authenticate(self, req: SignedRequest) -> AuthResult:
        """Return the verified identity and payload mode of ``req``; raise on any failure."""
        authorization = req.headers.get("authorization")
        if req.query_string:
            pairs = _sigv4.parse_query(req.query_string)
            params = _decode_params(pairs)
            v4_query = not params.keys().isdisjoint(_V4_QUERY_KEYS)
            v2_query = not params.keys().isdisjoint(_V2_QUERY_KEYS)
        else:  # most requests (a GET of a key): no parameters to decode or look through
            pairs, params, v4_query, v2_query = [], {}, False, False
        if (authorization is not None) + v4_query + v2_query > 1:
            raise InvalidArgument(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified."
            )
        if authorization is not None:
            if authorization.startswith(_sigv4.ALGORITHM + " "):
                return self._v4_header(req, authorization, pairs)
            if authorization.startswith("AWS "):
                return self._v2_header(req, authorization)
            raise InvalidArgument("Unsupported Authorization Type")
        if v4_query:
            return self._v4_query(req, pairs, params)
        if v2_query:
            return self._v2_query(req, params)
        return AuthResult(access_key=None, scheme=_ANONYMOUS_SCHEME, payload=PayloadMode.NONE)

    def authenticate_query(self, req: SignedRequest, service: str, payload_sha256: str) -> AuthResult:
        """A query-API request (``api/_query.py``: IAM, STS): SigV4 in the Authorization header,
        signed for ``service`` (the credential scope's), over the form body that hashes to
        ``payload_sha256`` (the canonical request's payload line: the SDKs send no
        x-amz-content-sha256 here; one that is sent must be that hash). Unsigned: anonymous, for
        the dispatcher to refuse unless the action allows it."""
        authorization = req.headers.get("authorization")
        if authorization is None:
            params = _decode_params(_sigv4.parse_query(req.query_string))
            if any(k in params for k in (*_V4_QUERY_KEYS, *_V2_QUERY_KEYS)):
                raise InvalidArgument("The IAM and STS APIs accept only a SigV4 Authorization header.")
            return AuthResult(access_key=None, scheme=_ANONYMOUS_SCHEME, payload=PayloadMode.NONE)
        if not authorization.startswith(_sigv4.ALGORITHM + " "):
            raise InvalidArgument("The IAM and STS APIs accept only AWS Signature Version 4.")
        scope = _parse_v4_authorization(authorization)["Credential"].rsplit("/", 4)
        if len(scope) == 5 and scope[3] != service:  # as AWS answers a key scoped to another service
            raise SignatureDoesNotMatch(f"Credential should be scoped to correct service: '{service}'.")
        pairs = _sigv4.parse_query(req.query_string)
        result = self._v4_header(req, authorization, pairs, service=service, payload_sha256=payload_sha256)
        if result.payload is not PayloadMode.SIGNED or result.expected_sha256 != payload_sha256:
            raise XAmzContentSHA256Mismatch("The signed payload hash does not match the request body.")
        return result

    # --- SigV4 -----------------------------------------------------------------------------
    def _v4_header(
        self,
        req: SignedRequest,
        authorization: str,
        pairs: list[tuple[bytes, bytes]],
        *,
        service: str = "s3",
        payload_sha256: str | None = None,
    ) -> AuthResult:
        """``service``/``payload_sha256``: a query API's (``authenticate_query``)."""
        fields = _parse_v4_authorization(authorization)
        cred, signed = _v4_header_scope(fields["Credential"], fields["SignedHeaders"], service)
        provided = fields["Signature"]
        if not _HEX64.fullmatch(provided):
            raise AuthorizationHeaderMalformed("The Signature is not a 64-character hex string.")

        amz_date, request_time = self._v4_request_time(req.headers)
        if cred.date != amz_date[:8]:
            raise AuthorizationHeaderMalformed(
                f"Invalid credential date {cred.date!r}: it does not match the request date {amz_date[:8]!r}."
            )
        if abs(self._clock() - request_time) > self.max_skew_s:
            raise RequestTimeTooSkewed()

        content_sha256 = req.headers.get("x-amz-content-sha256") or payload_sha256
        if content_sha256 is None:
            raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
        token = req.headers.get("x-amz-security-token")
        claim = _V4Claim("v4-header", cred, signed, provided, amz_date, content_sha256, pairs, token)
        return self._verify_v4(req, claim)

    def _v4_query(
        self, req: SignedRequest, pairs: list[tuple[bytes, bytes]], params: Mapping[str, str]
    ) -> AuthResult:
        required = (
            "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
            "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires",
        )  # fmt: skip
        if any(k not in params for k in required):
            raise AuthorizationQueryParametersError(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
            )
        if params["X-Amz-Algorithm"] != _sigv4.ALGORITHM:
            raise AuthorizationQueryParametersError("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
        cred = _sigv4.parse_credential(params["X-Amz-Credential"], AuthorizationQueryParametersError)
        signed = _parse_signed_headers(params["X-Amz-SignedHeaders"], AuthorizationQueryParametersError)
        provided = params["X-Amz-Signature"]
        if not _HEX64.fullmatch(provided):
            raise AuthorizationQueryParametersError("X-Amz-Signature is not a 64-character hex string.")
        amz_date = params["X-Amz-Date"]
        request_time = _parse_amz_date(amz_date)
        if request_time is None:
            raise AuthorizationQueryParametersError(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
            )
        if cred.date != amz_date[:8]:
            raise AuthorizationQueryParametersError(
                f"Invalid credential date {cred.date!r}: it does not match X-Amz-Date {amz_date[:8]!r}."
            )
        expires_s = _parse_int(params["X-Amz-Expires"])
        if expires_s is None:
            raise BadPresignExpires("X-Amz-Expires should be a number")
        if expires_s < 0:
            raise NegativeExpires()
        if expires_s > MAX_PRESIGN_EXPIRES_S:
            raise BadPresignExpires(
                "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
                "must be less than 604800 seconds"
            )
        now = self._clock()
        if request_time - now > self.max_skew_s:
            raise RequestTimeTooSkewed("X-Amz-Date is too far in the future.")
        if now > request_time + expires_s:
            raise AccessDenied("Request has expired")

        payload_line = (
            params.get("X-Amz-Content-Sha256") or req.headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD
        )
        signed_pairs = [(k, v) for k, v in pairs if unquote_to_bytes(k) != b"X-Amz-Signature"]
        token = params.get("X-Amz-Security-Token", req.headers.get("x-amz-security-token"))
        claim = _V4Claim("v4-query", cred, signed, provided, amz_date, payload_line, signed_pairs, token)
        return self._verify_v4(req, claim)

    def _verify_v4(self, req: SignedRequest, claim: _V4Claim) -> AuthResult:
        payload, expected = _payload_mode(claim.payload_line)
        _require_signed(req.headers, claim.signed)
        key, session = self._key_for(claim.cred, claim.token)
        provided = claim.signature.lower()
        common = {
            "amz_date": claim.amz_date,
            "scope": claim.cred.scope,
            "method": req.method,
            "signed_headers": ";".join(claim.signed),
            "payload_hash": claim.payload_line,
            "provided": provided,
        }
        # What nearly every client signs first (one HMAC); the equivalent variants only if not.
        queries = _sigv4.canonical_query_variants(claim.pairs) if claim.pairs else [b""]
        if not _sigv4.signature_matches(
            key,
            uris=[req.raw_path or b"/"],
            queries=queries[:1],
            header_blocks=[_sigv4.canonical_header_block(req.headers, claim.signed)],
            **common,
        ) and not _sigv4.signature_matches(
            key,
            uris=_sigv4.canonical_uri_variants(req.raw_path),
            queries=queries,
            header_blocks=_sigv4.canonical_header_blocks(req.headers, claim.signed),
            **common,
        ):
            raise SignatureDoesNotMatch()
        stream = None
        if payload in _STREAMING_SIGNED_MODES:  # the request signature seeds the chunk chain
            stream = StreamSigning(key, claim.amz_date, claim.cred.scope, provided)
        return AuthResult(claim.cred.access_key, claim.scheme, payload, expected, stream, session)

    def _v4_request_time(self, headers: Mapping[str, str]) -> tuple[str, float]:
        """The ISO 8601 basic timestamp of the string-to-sign and its epoch seconds."""
        value = headers.get("x-amz-date")
        if value is not None:
            seconds = _parse_amz_date(value.strip())
            if seconds is not None:
                return value.strip(), seconds
        else:
            date = headers.get("date")
            seconds = _parse_http_date(date) if date is not None else None
            if seconds is not None:
                return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds)), seconds
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")

    def _key_for(self, cred: Credential, token: str | None) -> tuple[bytes, Any]:
        secret, session = self._secret(cred.access_key, token)
        key: bytes = self._signing_key(secret, cred.date, cred.region, cred.service)
        return key, session

    def _secret(self, access_key: str, token: str | None) -> tuple[str, Any]:
        """(the secret that must have signed a request of ``access_key``, its STS session or None).

        With a session token the secret is the session's (``session_secret``); without, the
        long-term key's (``lookup_secret``). ``InvalidAccessKeyId``, ``InvalidToken``, ``ExpiredToken``."""
        if token is not None:
            if self._session_secret is None:
                raise InvalidToken()
            return self._session_secret(access_key, token)
        fetched = self._fetched
        secret = fetched[1] if fetched is not None and fetched[0] == access_key else self._lookup_secret(access_key)
        if secret is None:
            raise InvalidAccessKeyId()
        return secret, None

    # --- SigV2 -----------------------------------------------------------------------------
    def _v2_header(self, req: SignedRequest, authorization: str) -> AuthResult:
        access_key, sep, provided = authorization[4:].strip().rpartition(":")
        if not sep or not access_key or not provided:
            raise AuthorizationHeaderMalformed('The Authorization header must be "AWS AccessKey:Signature".')
        headers = req.headers
        amz_date = headers.get("x-amz-date")
        date = headers.get("date")
        stamp = amz_date if amz_date is not None else date
        seconds = _parse_http_date(stamp) if stamp is not None else None
        if seconds is None:
            raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
        if abs(self._clock() - seconds) > self.max_skew_s:
            raise RequestTimeTooSkewed()
        secret, session = self._secret(access_key, headers.get("x-amz-security-token"))
        # With x-amz-date the spec signs an empty Date line; botocore signs the Date it sent.
        date_lines = [date or ""] if amz_date is None else ["", date or ""]
        amz_headers = {k: v for k, v in headers.items() if k.startswith("x-amz-")}
        candidates = _sigv2.string_to_sign_variants(
            req.method,
            content_md5=headers.get("content-md5", ""),
            content_type=headers.get("content-type", ""),
            date_lines=date_lines,
            amz_headers=amz_headers,
            resources=_sigv2.canonical_resource_variants(req.raw_path, req.query_string, req.virtual_bucket),
        )
        if not _sigv2.signature_matches(secret, candidates, provided):
            raise SignatureDoesNotMatch()
        return AuthResult(access_key, "v2-header", PayloadMode.NONE, session=session)

    def _v2_query(self, req: SignedRequest, params: Mapping[str, str]) -> AuthResult:
        if any(k not in params for k in ("AWSAccessKeyId", "Signature", "Expires")):
            raise AccessDenied(
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
            )
        expires = params["Expires"]
        expires_at = _parse_int(expires)
        if expires_at is None:
            raise AccessDenied("Invalid date (should be seconds since epoch): Expires")
        now = self._clock()
        if now > expires_at:
            raise AccessDenied("Request has expired")
        if expires_at > now + MAX_PRESIGN_EXPIRES_S + self.max_skew_s:
            # A SigV2 URL carries no signing time: cap its lifetime as SigV4's (AWS allows more).
            raise AccessDenied("Presigned URLs must expire within 7 days (604800 seconds)")
        access_key = params["AWSAccessKeyId"]
        # botocore's HmacV1QueryAuth moves Content-MD5, Content-Type and x-amz-* into the query.
        lowered = {k.lower(): v for k, v in params.items()}
        secret, session = self._secret(
            access_key, lowered.get("x-amz-security-token", req.headers.get("x-amz-security-token"))
        )
        amz_headers = {k: v for k, v in req.headers.items() if k.startswith("x-amz-")}
        amz_headers.update({k: v for k, v in lowered.items() if k.startswith("x-amz-")})
        candidates = _sigv2.string_to_sign_variants(
            req.method,
            content_md5=lowered.get("content-md5", req.headers.get("content-md5", "")),
            content_type=lowered.get("content-type", req.headers.get("content-type", "")),
            date_lines=[expires],
            amz_headers=amz_headers,
            resources=_sigv2.canonical_resource_variants(req.raw_path, req.query_string, req.virtual_bucket),
        )
        if not _sigv2.signature_matches(secret, candidates, params["Signature"]):
            raise SignatureDoesNotMatch()
        return AuthResult(access_key, "v2-query", PayloadMode.NONE, session=session)


    # --- browser POST forms (api/_post_object.py) -------------------------------------------
    def authenticate_form(self, fields: Mapping[str, str]) -> AuthResult:
        """Who signed a POST form (``fields``: lower-case names): SigV4 fields (``x-amz-signature``
        is the hex HMAC-SHA256 of the ``policy`` field under the signing key), the SigV2 pair
        (``signature``: base64 HMAC-SHA1 of it), or nobody. The policy's own expiration and
        conditions bound the form's lifetime; the caller checks them. A form signed with temporary
        credentials carries their ``x-amz-security-token`` field: the secret and session come from
        it as for a header or presigned request (``_secret``), and the policy must name the field
        in a condition as every other field (``PostPolicy.check``), so the token is signed too."""
        if any(k in fields for k in ("x-amz-signature", "x-amz-credential", "x-amz-algorithm")):
            return self._v4_form(fields)
        if "awsaccesskeyid" in fields or "signature" in fields:
            return self._v2_form(fields)
        return AuthResult(access_key=None, scheme=_ANONYMOUS_SCHEME, payload=PayloadMode.NONE)

    def _v4_form(self, fields: Mapping[str, str]) -> AuthResult:
        for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature", "policy"):
            if not fields.get(name):
                raise InvalidArgument(_missing_form_field(name))
        if fields["x-amz-algorithm"] != _sigv4.ALGORITHM:
            raise InvalidArgument('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
        cred = _sigv4.parse_credential(fields["x-amz-credential"], InvalidArgument)
        amz_date = fields["x-amz-date"]
        if _parse_amz_date(amz_date) is None or cred.date != amz_date[:8]:
            raise InvalidArgument("X-Amz-Date must be the ISO 8601 basic time of the credential's date.")
        provided = fields["x-amz-signature"].strip().lower()
        key, session = self._key_for(cred, fields.get("x-amz-security-token"))
        expected = hmac.new(key, fields["policy"].encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace")):
            raise SignatureDoesNotMatch()
        return AuthResult(cred.access_key, "v4-post", PayloadMode.NONE, session=session)

    def _v2_form(self, fields: Mapping[str, str]) -> AuthResult:
        for name in ("awsaccesskeyid", "signature", "policy"):
            if not fields.get(name):
                raise InvalidArgument(_missing_form_field(name))
        access_key = fields["awsaccesskeyid"]
        secret, session = self._secret(access_key, fields.get("x-amz-security-token"))
        if not _sigv2.signature_matches(secret, [fields["policy"].encode("utf-8")], fields["signature"]):
            raise SignatureDoesNotMatch()
        return AuthResult(access_key, "v2-post", PayloadMode.NONE, session=session)


def _missing_form_field(name: str) -> str:
    shown = {"awsaccesskeyid": "AWSAccessKeyId", "policy": "Policy", "signature": "Signature"}.get(name, name)
    return (
        f"Bucket POST must contain a field named '{shown}'.  If it is specified, please check the order of the fields."
    )


# --- parsing helpers -------------------------------------------------------------------------


def _decode_params(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Decoded query parameters; the first occurrence of a name wins."""
    params: dict[str, str] = {}
    for k, v in pairs:
        name = unquote_to_bytes(k).decode("utf-8", "replace")
        if name not in params:
            params[name] = unquote_to_bytes(v).decode("utf-8", "replace")
    return params


@functools.lru_cache(maxsize=256)  # a client sends the same two fields all day
def _v4_header_scope(
    credential: str, signed_headers: str, service: str = "s3"
) -> tuple[_sigv4.Credential, tuple[str, ...]]:
    cred = _sigv4.parse_credential(credential, AuthorizationHeaderMalformed, service)
    return cred, tuple(_parse_signed_headers(signed_headers, AuthorizationHeaderMalformed))


def _parse_v4_authorization(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value[len(_sigv4.ALGORITHM) + 1 :].split(","):
        name, sep, val = part.strip().partition("=")
        if not sep or name in fields:
            raise AuthorizationHeaderMalformed(f"The authorization header is malformed near {name[:32]!r}.")
        fields[name] = val.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise AuthorizationHeaderMalformed(f"The authorization header is missing {name}.")
    return fields


def _parse_signed_headers(
    value: str, error: type[AuthorizationHeaderMalformed | AuthorizationQueryParametersError]
) -> list[str]:
    names = value.split(";")
    if not all(_HEADER_NAME.fullmatch(n) for n in names):
        raise error("SignedHeaders must be lower-case header names separated by ';'.")
    if "host" not in names:
        raise error("The host header must be signed.")
    return names


def _require_signed(headers: Mapping[str, str], signed: Sequence[str]) -> None:
    """Every x-amz-* header sent must be signed, or it could have been added by anyone."""
    signed_set = set(signed)
    unsigned = [k for k in headers if k.startswith("x-amz-") and k not in signed_set]
    if unsigned:
        raise AccessDenied(
            f"There were headers present in the request which were not signed: {', '.join(sorted(unsigned))}"
        )


def _payload_mode(content_sha256: str) -> tuple[PayloadMode, str | None]:
    mode = _PAYLOAD_LITERALS.get(content_sha256)
    if mode is not None:
        return mode, None
    if _HEX64.fullmatch(content_sha256):
        return PayloadMode.SIGNED, content_sha256.lower()
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a SHA-256 hex digest."
    )


def _parse_int(value: str) -> int | None:
    value = value.strip()
    if value.isascii() and (value.isdigit() or (value[:1] == "-" and value[1:].isdigit())):
        return int(value)
    return None


@functools.lru_cache(maxsize=256)  # concurrent requests mostly carry the same second
def _parse_amz_date(value: str) -> float | None:
    """Epoch seconds of ``yyyymmddThhmmssZ``, or None."""
    match = _AMZ_DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _parse_http_date(value: str) -> float | None:
    """Epoch seconds of an RFC 7231 date (or the ISO basic form some clients put in x-amz-date)."""
    value = value.strip()
    iso = _parse_amz_date(value)
    if iso is not None:
        return iso
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    offset = parsed[9] or 0
    try:
        return float(calendar.timegm(parsed[:9])) - offset
    except (ValueError, OverflowError):
        return None


# --- body --------------------------------------------------------------------------------------


def wrap_body(
    body: AsyncIterator[bytes], auth: AuthResult, headers: Mapping[str, str]
) -> tuple[AsyncIterator[bytes], dict[str, str]]:
    """Return (payload iterator, trailers) for a request authenticated as ``auth``.

    The iterator yields the decoded payload; the trailers dict (lower-case names, only those
    declared in ``x-amz-trailer``) is filled by the time the iterator is exhausted. Every
    verification failure is raised from the iterator before it signals exhaustion, so a consumer
    that commits only after exhausting it never commits bad data. Bad framing headers
    (``x-amz-decoded-content-length``) raise here, before any byte is read.
    """
    trailers: dict[str, str] = {}
    mode = auth.payload
    if mode in (PayloadMode.NONE, PayloadMode.UNSIGNED):
        return body, trailers
    if mode is PayloadMode.SIGNED:
        assert auth.expected_sha256 is not None
        return _sha256_checked(body, auth.expected_sha256), trailers

    decoded_length: int | None = None
    raw_length = headers.get("x-amz-decoded-content-length")
    if raw_length is not None:
        decoded_length = _parse_int(raw_length)
        if decoded_length is None or decoded_length < 0:
            raise InvalidArgument("x-amz-decoded-content-length must be a non-negative integer.")
    has_trailer = mode is not PayloadMode.STREAMING_SIGNED
    allowed = frozenset(
        n.strip().lower() for n in headers.get("x-amz-trailer", "").split(",") if n.strip()
    ) if has_trailer else frozenset()
    verifier = None
    if mode in _STREAMING_SIGNED_MODES:
        assert auth._stream is not None
        verifier = ChunkVerifier(auth._stream)
    decoder = ChunkedDecoder(
        verifier=verifier, has_trailer=has_trailer, allowed_trailers=allowed, decoded_length=decoded_length
    )
    return _decoded(body, decoder, trailers), trailers


async def _sha256_checked(body: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    hasher = ThreadedHash(hashlib.sha256())  # on a worker thread: ~15% of a large PUT's CPU
    async for piece in body:
        await hasher.update(piece)
        yield piece
    if not hmac.compare_digest((await hasher.result()).hexdigest(), expected):
        raise XAmzContentSHA256Mismatch()


async def _decoded(
    body: AsyncIterator[bytes], decoder: ChunkedDecoder, trailers: dict[str, str]
) -> AsyncIterator[bytes]:
    out = bytearray()
    async for piece in body:
        for segment in decoder.feed(piece):
            if not out and len(segment) >= _OUT_BYTES:
                yield piece if len(segment) == len(piece) else bytes(segment)
            else:
                out += segment
                if len(out) >= _OUT_BYTES:
                    yield bytes(out)
                    out.clear()
    trailers.update(decoder.finish())
    if out:
        yield bytes(out)

