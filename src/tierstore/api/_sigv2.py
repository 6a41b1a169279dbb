"""AWS Signature Version 2 (HMAC-SHA1) string-to-sign for S3.

Reference: botocore ``HmacV1Auth`` / ``HmacV1QueryAuth`` and the S3 "Signing and
Authenticating REST Requests" page. Pure functions; ``tierstore.api._auth`` decides errors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, unquote_to_bytes

__all__ = ["SUBRESOURCES", "canonical_resource_variants", "signature_matches", "string_to_sign_variants"]

# The query parameters that belong to the canonicalized resource: the documented S3 list, the
# ones botocore's HmacV1Auth adds, and every subresource the router dispatches on (api/_routes.py
# _SUBRESOURCES; a test keeps the two in step). A name the router acts on but the signature does
# not cover would let anyone holding a presigned URL turn it into another operation
# (``&retention`` on a presigned PUT). Clients that do not sign one of these fail closed.
SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "defaultObjectAcl", "delete",
        "encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location",
        "logging", "metadataTable", "metrics", "notification", "object-lock", "ownershipControls",
        "partNumber", "policy", "policyStatus", "publicAccessBlock", "renameObject", "replication",
        "requestPayment", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "response-content-language", "response-content-type",
        "response-expires", "restore", "retention", "select", "select-type", "session",
        "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning",
        "versions", "website",
    }
)  # fmt: skip


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def canonical_resource_variants(
    raw_path: bytes, query_string: bytes, virtual_bucket: str | None
) -> list[str]:
    """``/bucket/key`` (percent-encoded as sent, then re-encoded from the decoded path like
    botocore encodes a key) plus the sub-resources, sorted by name, values decoded.
    ``virtual_bucket`` is prefixed for virtual-hosted requests (``/`` becomes ``/bucket/``)."""
    raw = raw_path.decode("latin-1") or "/"
    paths = _dedupe((raw, quote(unquote_to_bytes(raw), safe="/~")))
    if virtual_bucket:
        paths = [f"/{virtual_bucket}{p}" for p in paths]
    elif raw.count("/") == 1 and len(raw) > 1:
        # Path-style bucket request "/bucket": botocore signs "/bucket/" (its authPath).
        paths = _dedupe([*paths, *(p + "/" for p in paths)])
    sub: list[tuple[str, str | None]] = []
    for segment in query_string.split(b"&") if query_string else ():
        k, eq, v = segment.partition(b"=")
        # Decoded as the router decodes it: "%72etention" selects ?retention, so it is signed too.
        key = unquote_to_bytes(k).decode("utf-8", "surrogateescape")
        if key in SUBRESOURCES:  # "?uploads" and "?uploads=" sign differently, as in botocore
            sub.append((key, unquote_to_bytes(v).decode("utf-8", "surrogateescape") if eq else None))
    suffix = ""
    if sub:
        sub.sort(key=lambda kv: kv[0])
        suffix = "?" + "&".join(k if v is None else f"{k}={v}" for k, v in sub)
    return [p + suffix for p in paths]


def string_to_sign_variants(
    method: str,
    *,
    content_md5: str,
    content_type: str,
    date_lines: Sequence[str],
    amz_headers: Mapping[str, str],
    resources: Sequence[str],
) -> list[bytes]:
    """Every string-to-sign a client may have produced, as UTF-8 bytes (botocore's encoding)."""
    custom = "".join(f"{k}:{amz_headers[k].strip()}\n" for k in sorted(amz_headers))
    out: list[bytes] = []
    for date in date_lines:
        head = f"{method}\n{content_md5.strip()}\n{content_type.strip()}\n{date.strip()}\n{custom}"
        for resource in resources:
            text = head + resource
            out.append(text.encode("utf-8", "surrogateescape"))
            with contextlib.suppress(UnicodeEncodeError):  # a client that hashed the bytes it sent
                out.append(text.encode("latin-1"))
    return list(dict.fromkeys(out))


def signature_matches(secret: str, candidates: Sequence[bytes], provided: str) -> bool:
    """True when base64(HMAC-SHA1(secret, candidate)) equals ``provided`` for some candidate."""
    key = secret.encode("utf-8")
    provided_b = provided.strip().encode("utf-8", "surrogateescape")
    for candidate in candidates:
        computed = base64.b64encode(hmac.digest(key, candidate, hashlib.sha1))
        if hmac.compare_digest(computed, provided_b):
            return True
    return False
