"""The catalog's records and domain exceptions: what every ``Catalog`` (catalog/_protocol.py)
takes and returns, defined once for the embedded SQLite catalog and a networked one alike (no
import of any engine's code)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tierstore.types import ObjectMeta

__all__ = [
    "PINNING_TABLES",
    "AccessKeyRecord",
    "BlobRef",
    "BlobTier",
    "BucketChanged",
    "DatasetRecord",
    "GatewayInfo",
    "Guard",
    "HeldBlob",
    "HoldInfo",
    "JobLease",
    "KmsKeyRecord",
    "ModelAliasInUse",
    "PendingWrite",
    "PinGone",
    "RoleRecord",
    "SseVersion",
    "TierProgress",
    "TierRecord",
    "TierUsage",
    "UserRecord",
    "VersionName",
    "VersionRecord",
    "VersionTaken",
    "VersioningChanged",
]


@dataclass(frozen=True, slots=True)
class BlobRef:
    blob_id: str
    size_bytes: int
    tier: str | None = None  # where the blob's bytes are: None, the local drives; else that remote tier
    cached: bool = False  # a blob in a tier that also has a local copy (catalog/sqlite/_hot.py): read locally


class BlobTier(NamedTuple):
    """Where a blob named by id is (``blob_tiers``): its remote tier, and whether it also has a
    local copy (a restore's or a pin's: catalog/sqlite/_hot.py). A cached blob *is* in its tier — an
    archive or a move counts it there and moves its remote copy — and is read locally."""

    tier: str
    cached: bool = False


@dataclass(slots=True)
class VersionRecord:
    """One object version as the catalog stores it: what clients see plus where the bytes are.

    The bytes are either in the blob store (``blobs``, in order) or, for a small body, in the
    catalog itself (docs/inline.md): ``inline_id`` names its row, and ``inline_data`` holds the
    bytes when a read asked for them (verified against their CRC32C). To publish an inline
    version, give ``put_version`` a record with ``inline_data`` set and no blobs: the catalog
    picks the id."""

    meta: ObjectMeta
    blobs: list[BlobRef] = field(default_factory=list)
    is_delete_marker: bool = False
    inline_id: str | None = None
    inline_data: bytes | None = None
    # The bucket's versioning state ("Enabled", "Suspended", None: never versioned) read in the
    # same statement as the version: set by get_latest/get_version only (a GET needs it for
    # x-amz-version-id, and a second query per GET cost ~5 us).
    bucket_versioning: str | None = None


Guard = Callable[["VersionRecord", dict[str, Any]], None]


@dataclass(slots=True)
class DatasetRecord:
    """One dataset version as the catalog stores it (docs/datasets.md)."""

    name: str
    version: int
    manifest_blob: str
    manifest_bytes: int
    created_ns: int
    rows: int
    bytes: int
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DatasetRecord:
        name, version, manifest_blob, manifest_bytes, created_ns, rows, size, info = row
        return cls(name, int(version), manifest_blob, int(manifest_bytes), int(created_ns), int(rows), int(size),
                   json.loads(info))

    def to_row(self) -> tuple[Any, ...]:
        info = json.dumps(self.info, separators=(",", ":"))
        return (self.name, self.version, self.manifest_blob, self.manifest_bytes, self.created_ns, self.rows,
                self.bytes, info)


# The tables of versions that pin bytes (docs/datasets.md): dataset versions and model versions
# share one record shape and one create/delete/pin code path, told apart by table name.
PINNING_TABLES = ("datasets", "models")


class PinGone(Exception):
    """A blob or inline body a new dataset (or model) version would pin was deleted meanwhile."""


class VersionTaken(Exception):
    """Another writer published the dataset (or model) version first."""


class VersioningChanged(Exception):
    """``put_version(fixed_version_id=True)``: the bucket's versioning state, read inside the
    commit, asks for another kind of version id (a new id or ``null``) than the record carries.
    The record's encryption binds its version id, so the catalog refuses instead of rewriting
    the id; the engine binds the other id and tries again (docs/encryption.md)."""


class BucketChanged(Exception):
    """``put_version(expect=...)``: a bucket property the caller decided by (its default
    encryption, its object-lock configuration, read from a worker's cache) is not what the
    commit reads; nothing was written. The engine decides again from the bucket's current
    properties (docs/scale-out.md "The PUT path")."""


class ModelAliasInUse(Exception):
    """A model version an alias points at cannot be deleted; ``aliases``: which."""

    def __init__(self, name: str, version: int, aliases: list[str]) -> None:
        super().__init__(f"{name}@{version} is aliased as {', '.join(aliases)}")
        self.aliases = aliases


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """One holder: its copy's state and what it holds (remote blobs; local ones need no copy)."""

    holder: str
    created_ns: int
    expires_ns: int | None  # None: until released (or, with ttl_ns, not yet known: the copy runs)
    ttl_ns: int | None
    done_ns: int | None  # None: the copy is ongoing
    blobs: int = 0  # held blobs that are in a tier
    bytes: int = 0
    cached_blobs: int = 0  # of those, copied locally
    cached_bytes: int = 0

    @property
    def ongoing(self) -> bool:
        return self.done_ns is None


@dataclass(frozen=True, slots=True)
class HeldBlob:
    """A held remote blob without a local copy yet: what the copier fetches."""

    blob_id: str
    size_bytes: int
    tier: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    user_id: str
    enabled: bool
    tags: dict[str, str]
    created_ns: int


@dataclass(frozen=True, slots=True)
class AccessKeyRecord:
    """One access key row. ``sealed_secret`` is opaque here (crypto/ opens it)."""

    access_key_id: str
    user_name: str | None  # None: the root
    kind: str  # 'user' | 'service'
    sealed_secret: bytes = field(repr=False)
    status: str
    created_ns: int
    last_used_ns: int | None
    expires_ns: int | None
    policy: str | None
    name: str = ""


@dataclass(frozen=True, slots=True)
class RoleRecord:
    name: str
    role_id: str
    trust_policy: str
    max_session_s: int
    description: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class KmsKeyRecord:
    """One key id's status: never its material."""

    key_id: str
    enabled: bool
    description: str
    created_ns: int
    updated_ns: int
    newest_version: int
    rotated_ns: int | None  # when the newest version was added (None: never rotated)


@dataclass(frozen=True, slots=True)
class TierRecord:
    """One tier as stored: ``config`` is the JSON document, ``sealed_secret`` stays sealed."""

    name: str
    config: dict[str, Any]
    sealed_secret: bytes | None
    created_ns: int

    def __repr__(self) -> str:  # never the sealed bytes either
        return f"TierRecord(name={self.name!r}, config={self.config!r}, created_ns={self.created_ns})"


@dataclass(frozen=True, slots=True)
class TierUsage:
    """What the catalog says names one tier: blobs (and their bytes) it holds, remote objects
    waiting in the outbox, multipart uploads in progress whose storage class it is."""

    blobs: int = 0
    bytes: int = 0
    outbox: int = 0
    uploads: int = 0

    @property
    def in_use(self) -> bool:
        return bool(self.blobs or self.outbox or self.uploads)


@dataclass(frozen=True, slots=True)
class TierProgress:
    """One tier's counters (``tier_stats``) and backlog: transitions due now (``due``), versions
    written in its class waiting for it (``pending``), remote objects to delete (``outbox``)."""

    moved_bytes: int = 0
    moved_objects: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None
    due: int = 0
    pending: int = 0
    outbox: int = 0

    @property
    def backlog(self) -> int:
        return self.due + self.pending + self.outbox


@dataclass(frozen=True, slots=True)
class PendingWrite:
    bucket: str
    key: str
    version_id: str
    tier: str
    attempts: int


VersionName = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """One gateway process in the registry (docs/scale-out.md "Background work"): its id is the
    owner of every lease it takes; ``seen_ns`` is its last heartbeat."""

    id: str
    host: str
    pid: int
    started_ns: int
    seen_ns: int


@dataclass(frozen=True, slots=True)
class JobLease:
    """A named background job's row (``jobs``): who holds it until when, and where it stands.
    ``cursor`` is the job's own text (the scrub's last blob id; "" at the start)."""

    name: str
    owner: str | None
    lease_until_ns: int
    cursor: str


@dataclass(frozen=True, slots=True)
class LeaseBacklog:
    """The leased queues' backlog shared by every gateway (metrics; docs/observability.md), each
    count capped at the ``bound`` it was asked with: trash rows, and of them those whose lease ran
    out unfinished (among the first ``bound``); outbox rows due, and of them those a holder's lease
    ran out on; named jobs whose holder's lease ran out."""

    trash: int
    trash_expired: int
    outbox_due: int
    outbox_expired: int
    jobs_expired: int


@dataclass(frozen=True, slots=True)
class SseVersion:
    """One encrypted version as a walk sees it: its name and its ``"e"`` document."""

    bucket: str
    key: str
    version_id: str
    encryption: dict[str, Any]

    @property
    def name(self) -> VersionName:
        return (self.bucket, self.key, self.version_id)


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a key as the planner sees it: ``meta`` is the stored metadata document
    (``t`` tags, ``sc`` storage class, ``l`` object lock)."""

    version_id: str
    is_delete_marker: bool
    size_bytes: int
    modified_ns: int
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedAction:
    version_id: str
    action: str
    due_ns: int
    storage_class: str | None = None  # a transition's target


@dataclass(frozen=True, slots=True)
class DueRow:
    due_ns: int
    bucket: str
    key: str
    version_id: str
    action: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``lifecycle_apply`` did: ``done`` names the action taken (None: nothing was due
    any more, the rows were recomputed); ``transition`` is the class a due transition goes to
    (the mover acts outside the transaction)."""

    done: str | None = None
    transition: str | None = None
    marker_id: str | None = None


@dataclass(frozen=True, slots=True)
class InlineMove:
    """An inline body the mover wrote as a new remote blob: the version switches to it."""

    inline_id: str
    blob_id: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    tier: str
    blob_id: str
    attempts: int
