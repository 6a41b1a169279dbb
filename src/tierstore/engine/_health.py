"""What health probes and metrics read from the engine: drive states at quorum, bucket usage.

Cheap by construction: ``store_health`` stats each drive once; ``BucketUsage`` comes from one
aggregate catalog query (``ObjectService.bucket_usage``), which callers cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierstore.catalog import LeaseBacklog

__all__ = ["Backlog", "BucketUsage", "DriveHealth", "StoreHealth"]


@dataclass(frozen=True, slots=True)
class DriveHealth:
    index: int
    path: str
    state: str  # online | offline | unformatted | foreign (drives.DriveState values)
    total_bytes: int | None
    free_bytes: int | None


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Drives and quorums now. A single data directory is a set of one drive (quorums 1)."""

    mode: str  # single | erasure | replicas
    drives: tuple[DriveHealth, ...]
    write_quorum: int
    read_quorum: int

    @property
    def online(self) -> int:
        return sum(1 for d in self.drives if d.state == "online")

    @property
    def writable(self) -> bool:
        return self.online >= self.write_quorum

    @property
    def readable(self) -> bool:
        return self.online >= self.read_quorum


@dataclass(frozen=True, slots=True)
class Backlog:
    """The work every gateway shares (metrics, docs/observability.md "Cluster"): the leased queues
    (each count capped at the bound asked for), the rows in the lifecycle due index, and the
    gateways that heartbeat within a lease."""

    leases: LeaseBacklog
    lifecycle_due: int
    gateways: int


@dataclass(frozen=True, slots=True)
class BucketUsage:
    bucket: str
    objects: int  # current versions that are not delete markers
    object_bytes: int  # their bytes
    versions: int  # every version, delete markers included
    delete_markers: int
    stored_bytes: int  # bytes of every version
