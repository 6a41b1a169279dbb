"""Key rotation's second half: re-wrap the data keys of every version under a key service key
to its newest version (docs/encryption.md "Rotation"), without touching any object's bytes.

``LocalKeyStore.rotate`` adds a KEK version; data keys wrapped by older versions still open.
``rewrap_page`` walks the encrypted versions whose ``"e"."kid"`` names the key, a page at a
time in (bucket, key, version id) order, and for each one whose wrapped key (``"wk"``) is not at
the newest version: unwraps it under the version's own encryption context, wraps the same data
key again under the newest version (``LocalKeyStore.rewrap``) and swaps ``"wk"`` in the row if
it is unchanged meanwhile. The MAC, nonce prefixes, blobs and ETag stay as they are: the data
key does not change, and the MAC does not cover ``"wk"``.

Resumable: the page returns a cursor (``next``) to continue from, and a version already at the
newest KEK version is skipped without a key service call, so a walk stopped anywhere (a crash,
a cancelled CLI) is simply started again, from the cursor or from the start. Pages are small
(one catalog write per re-wrapped version, each a compare-and-swap): a request never holds the
writer long.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tierstore.catalog._records import VersionName
from tierstore.crypto import KmsKeyDisabled, LocalKeyStore, WrappedKeyError, check_key_id, wrapped_key_version
from tierstore.engine._encryption import kms_context  # the context a DK is wrapped under
from tierstore.errors import InvalidArgument

if TYPE_CHECKING:
    from tierstore.catalog import Catalog

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "RewrapPage", "decode_cursor", "encode_cursor", "rewrap_page"]

log = logging.getLogger("tierstore.kms")

DEFAULT_PAGE = 200
MAX_PAGE = 1000
_MAX_LISTED = 100  # failures named per page (the count is exact)


@dataclass(slots=True)
class RewrapPage:
    """What one page of the walk found and did; ``next`` is None when the walk is complete."""

    key_id: str
    newest_version: int
    scanned: int = 0  # versions under the key looked at
    rewrapped: int = 0  # moved to the newest key version
    current: int = 0  # already there (no key service call)
    changed: int = 0  # deleted, overwritten or re-wrapped by someone else meanwhile: left alone
    failed: int = 0  # the wrapped key does not open: damaged metadata (named in ``failures``)
    failures: list[str] = field(default_factory=list)
    next: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_cursor(name: VersionName) -> str:
    """An opaque, URL-safe cursor for the version the walk stopped after."""
    return base64.urlsafe_b64encode(json.dumps(list(name)).encode()).decode()


def decode_cursor(cursor: str) -> VersionName:
    try:
        bucket, key, version_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument("The rewrap cursor is not one this server gave out.") from None
    if not all(isinstance(x, str) for x in (bucket, key, version_id)):
        raise InvalidArgument("The rewrap cursor is not one this server gave out.")
    return bucket, key, version_id


async def rewrap_page(
    catalog: Catalog, keys: LocalKeyStore, key_id: str, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> RewrapPage:
    """Re-wrap up to ``limit`` versions under ``key_id`` after cursor ``after`` (module docstring).
    Raises the key service's errors for the key itself (missing: ``KMS.NotFoundException``,
    disabled: ``KMS.DisabledException``) before touching any row."""
    check_key_id(key_id)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be 1 to {MAX_PAGE}.")
    status = await keys.describe(key_id)
    if not status.enabled:
        raise KmsKeyDisabled(f"Key '{key_id}' is disabled.", resource=key_id)
    page = RewrapPage(key_id=key_id, newest_version=status.versions)
    start = decode_cursor(after) if after else None
    versions = await catalog.sse_versions_page(key_id=key_id, after=start, limit=limit)
    for v in versions:
        page.scanned += 1
        where = f"{v.bucket}/{v.key}@{v.version_id}"
        try:
            old = str(v.encryption["wk"])
            wrapped = base64.b64decode(old, validate=True)
            if wrapped_key_version(wrapped) == status.versions:
                page.current += 1
                continue
            new = await keys.rewrap(key_id, wrapped, kms_context(v.encryption, v.bucket, v.key))
        except (WrappedKeyError, KeyError, TypeError, ValueError) as exc:
            page.failed += 1
            if len(page.failures) < _MAX_LISTED:
                page.failures.append(where)
            log.error("rewrap %s: %s: the wrapped data key does not open (%s)", key_id, where, type(exc).__name__)
            continue
        if await catalog.sse_replace_wrapped_key(v.name, old, base64.b64encode(new).decode()):
            page.rewrapped += 1
        else:
            page.changed += 1
    if len(versions) == limit:
        page.next = encode_cursor(versions[-1].name)
    log.info(
        "rewrap %s to version %d: %d versions, %d re-wrapped, %d current, %d changed, %d failed",
        key_id,
        page.newest_version,
        page.scanned,
        page.rewrapped,
        page.current,
        page.changed,
        page.failed,
    )
    return page
