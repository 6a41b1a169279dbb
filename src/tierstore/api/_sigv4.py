"""AWS Signature Version 4 primitives for S3: canonical forms, key derivation, chunk signatures.

Pure functions over bytes; the request-level decisions (which scheme, which errors) live in
``tierstore.api._auth``. Reference: botocore ``S3SigV4Auth`` / ``S3SigV4QueryAuth`` and the
S3 "Signature Version 4" and "aws-chunked" documentation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from tierstore.crypto import HmacSha256Keys
from tierstore.errors import SignatureDoesNotMatch, TierstoreError

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "ChunkVerifier",
    "Credential",
    "StreamSigning",
    "canonical_header_blocks",
    "canonical_query_variants",
    "canonical_uri_variants",
    "derive_signing_key",
    "parse_credential",
    "parse_query",
    "signature_matches",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# The request signature's HMAC per signing key (one per caller and day, as _auth.py's key cache),
# its padded key blocks hashed once: about half of hmac.digest's cost per request.
_SIGNATURES = HmacSha256Keys(1024)

_QUERY_SAFE = "-_.~"  # RFC 3986 unreserved, the only characters left unencoded in a query
_PATH_SAFE = "/~"  # what botocore leaves unencoded in an S3 key
_DATE8 = re.compile(r"[0-9]{8}")


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """``kSigning`` of the SigV4 spec (HMAC chain over date, region, service, terminator)."""
    k = hmac.digest(("AWS4" + secret).encode("utf-8"), date.encode("utf-8"), "sha256")
    k = hmac.digest(k, region.encode("utf-8"), "sha256")
    k = hmac.digest(k, service.encode("utf-8"), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


@dataclass(frozen=True, slots=True)
class Credential:
    """The parsed ``AK/yyyymmdd/region/service/aws4_request`` credential."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_credential(value: str, error: type[TierstoreError], expected_service: str = "s3") -> Credential:
    """Parse a credential; ``error`` is the class raised for a malformed one (header vs query);
    ``expected_service`` the scope's service the request must be signed for (``s3``; a query API's
    ``iam`` or ``sts``)."""
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not parts[0]:
        raise error('The Credential is mal-formed; expecting "<AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"')
    access_key, date, region, service, terminator = parts
    if not _DATE8.fullmatch(date):
        raise error(f"invalid credential date {date!r}; the date must be in YYYYMMDD format")
    if not region:
        raise error("the Credential has an empty region")
    if service != expected_service:
        raise error(f"the Credential has the wrong service {service[:32]!r}; expecting {expected_service!r}")
    if terminator != "aws4_request":
        raise error(f"the Credential has a wrong terminator {terminator!r}; expecting 'aws4_request'")
    return Credential(access_key, date, region, service)


# --- canonical request pieces --------------------------------------------------------------
#
# Every function below returns the *variants* a correct client may have signed, most likely
# first, without duplicates. Each variant is a pure function of what arrived, and two wire forms
# that map to the same variant decode to the same path/query, so accepting any of them never lets
# a signature cover a different resource than the one the router sees.


def _dedupe(items: Iterable[bytes]) -> list[bytes]:
    return list(dict.fromkeys(items))


def canonical_uri_variants(raw_path: bytes) -> list[bytes]:
    """The path as sent (what botocore signs for S3: no normalization, no double encoding), then
    the path re-encoded from its decoded form the way botocore encodes a key (RFC 3986, '/' kept),
    for clients that send a different but equivalent escaping (lower-case hex, unescaped '!')."""
    raw = raw_path or b"/"
    return _dedupe((raw, quote(unquote_to_bytes(raw), safe=_PATH_SAFE).encode("ascii")))


def parse_query(query_string: bytes) -> list[tuple[bytes, bytes]]:
    """Raw ``(key, value)`` pairs in wire order; a key without '=' has value ``b""``."""
    pairs: list[tuple[bytes, bytes]] = []
    if query_string:
        for segment in query_string.split(b"&"):
            if segment:
                key, _, value = segment.partition(b"=")
                pairs.append((key, value))
    return pairs


def canonical_query_variants(pairs: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """Sorted ``k=v&...``: first each key and value decoded and re-encoded per RFC 3986 (the spec;
    what botocore produces), then the pairs as sent, only sorted (what botocore signs when the
    query was already in the URL)."""
    encoded = sorted(
        (quote(unquote_to_bytes(k), safe=_QUERY_SAFE), quote(unquote_to_bytes(v), safe=_QUERY_SAFE))
        for k, v in pairs
    )
    first = "&".join(f"{k}={v}" for k, v in encoded).encode("ascii")
    second = b"&".join(k + b"=" + v for k, v in sorted(pairs))
    return _dedupe((first, second))


def canonical_header_block(headers: Mapping[str, str], signed: Sequence[str]) -> bytes:
    """The first of ``canonical_header_blocks``: what botocore signs (all a client with ASCII
    header values can have signed)."""
    return "".join([f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed]).encode()


def canonical_header_blocks(headers: Mapping[str, str], signed: Sequence[str]) -> list[bytes]:
    """``name:trimall(value)\\n`` per signed header, in the signed order. Header values reach us
    latin-1 decoded; botocore hashes its (latin-1 sent) ``str`` as UTF-8, other clients hash the
    bytes they sent. For ASCII values both are the same single variant."""
    as_unicode: list[bytes] = []
    as_sent: list[bytes] = []
    for name in signed:
        value = headers.get(name, "")
        as_unicode.append(f"{name}:{' '.join(value.split())}\n".encode())
        try:
            wire = value.encode("latin-1")
        except UnicodeEncodeError:
            wire = value.encode("utf-8")
        as_sent.append(name.encode("ascii") + b":" + b" ".join(wire.split()) + b"\n")
    return _dedupe((b"".join(as_unicode), b"".join(as_sent)))


def signature_matches(
    key: bytes,
    *,
    amz_date: str,
    scope: str,
    method: str,
    uris: Sequence[bytes],
    queries: Sequence[bytes],
    header_blocks: Sequence[bytes],
    signed_headers: str,
    payload_hash: str,
    provided: str,
) -> bool:
    """True when some combination of the variants yields ``provided`` (constant-time compare)."""
    prefix = f"{ALGORITHM}\n{amz_date}\n{scope}\n".encode()
    tail = signed_headers.encode("ascii") + b"\n" + payload_hash.encode("ascii")
    method_b = method.encode("ascii")
    try:
        provided_raw = bytes.fromhex(provided)
    except ValueError:
        return False
    for creq in _canonical_requests(method_b, uris, queries, header_blocks, tail):
        string_to_sign = prefix + hashlib.sha256(creq).hexdigest().encode("ascii")
        if hmac.compare_digest(_SIGNATURES.digest(key, string_to_sign), provided_raw):
            return True
    return False


def _canonical_requests(
    method: bytes, uris: Sequence[bytes], queries: Sequence[bytes], blocks: Sequence[bytes], tail: bytes
) -> Iterator[bytes]:
    for uri in uris:
        for query in queries:
            for block in blocks:
                yield b"\n".join((method, uri, query, block, tail))


# --- aws-chunked signatures ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSigning:
    """What a chunk-signature chain is verified with. ``repr`` omits the signing key."""

    signing_key: bytes = field(repr=False)
    amz_date: str
    scope: str
    seed_signature: str


class ChunkVerifier:
    """Verifies the signature chain of one aws-chunked body, chunk by chunk, then the trailer."""

    __slots__ = ("_chunk_prefix", "_key", "_prev", "_trailer_prefix")

    def __init__(self, signing: StreamSigning) -> None:
        self._key = signing.signing_key
        self._prev = signing.seed_signature.encode("ascii")
        scope = f"{signing.amz_date}\n{signing.scope}\n".encode()
        self._chunk_prefix = b"AWS4-HMAC-SHA256-PAYLOAD\n" + scope
        self._trailer_prefix = b"AWS4-HMAC-SHA256-TRAILER\n" + scope

    def verify_chunk(self, chunk_sha256_hex: bytes, signature: bytes) -> None:
        sts = b"%s%s\n%s\n%s" % (self._chunk_prefix, self._prev, EMPTY_SHA256.encode(), chunk_sha256_hex)
        self._check(sts, signature, "chunk")

    def verify_trailer(self, trailer_sha256_hex: bytes, signature: bytes) -> None:
        sts = b"%s%s\n%s" % (self._trailer_prefix, self._prev, trailer_sha256_hex)
        self._check(sts, signature, "trailer")

    def _check(self, string_to_sign: bytes, signature: bytes, what: str) -> None:
        computed = hmac.new(self._key, string_to_sign, hashlib.sha256).hexdigest().encode("ascii")
        if not hmac.compare_digest(computed, signature.lower()):
            raise SignatureDoesNotMatch(f"The {what} signature we calculated does not match yours.")
        self._prev = computed
