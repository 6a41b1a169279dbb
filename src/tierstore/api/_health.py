"""Health probes with MinIO's paths and meaning, answered before authentication.

- ``/minio/health/live``, ``/health/live``: the process answers (200).
- ``/minio/health/ready``, ``/health/ready``: the catalog could commit a write now and a write
  quorum of drives is online (200), else 503.
- ``/minio/health/cluster``: data readable and writable at quorum: ready, and the catalog
  answers a read (200), else 503. ``/minio/health/cluster/read``: a read quorum of drives is
  online and the catalog answers a read.

They reveal nothing about objects: a one-line text body and MinIO's ``x-minio-write-quorum``
header (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import logging

from tierstore.engine import ObjectService, Repairer, StoreHealth

__all__ = ["PROBE_TIMEOUT_S", "probe"]

log = logging.getLogger("tierstore.health")

PROBE_TIMEOUT_S = 5.0  # a catalog that cannot take the write lock this fast is not ready


async def probe(action: str, service: ObjectService, admin: Repairer | None) -> tuple[int, list[tuple[str, str]], str]:
    """(status, headers, text) for a health action of the route table."""
    if action == "tierstore:HealthLive":
        return 200, [], "live"
    health = await asyncio.to_thread(admin.health) if admin is not None else None
    headers = [("x-minio-write-quorum", str(health.write_quorum))] if health is not None else []
    if action == "tierstore:HealthClusterRead":
        problem = _drives(health, write=False) or await _catalog_reads(service)
    else:
        problem = _drives(health, write=True) or await _catalog_writes(service)
        if problem is None and action == "tierstore:HealthCluster":
            problem = _drives(health, write=False) or await _catalog_reads(service)
    if problem is not None:
        return 503, headers, f"not ready: {problem}"
    return 200, headers, "ready" if action == "tierstore:HealthReady" else "ok"


def _drives(health: StoreHealth | None, *, write: bool) -> str | None:
    if health is None:
        return None
    need = health.write_quorum if write else health.read_quorum
    if health.online < need:
        what = "write" if write else "read"
        return f"{health.online} of {len(health.drives)} drives online, {need} needed to {what}"
    return None


async def _catalog_writes(service: ObjectService) -> str | None:
    try:
        await asyncio.wait_for(service.probe_catalog_write(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return "the catalog did not take a write within the probe timeout"
    except Exception as exc:
        log.warning("health: the catalog cannot be written: %s", exc)
        return "the catalog cannot be written"
    return None


async def _catalog_reads(service: ObjectService) -> str | None:
    try:
        await asyncio.wait_for(service.bucket_count(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return "the catalog did not answer a read within the probe timeout"
    except Exception as exc:
        log.warning("health: the catalog cannot be read: %s", exc)
        return "the catalog cannot be read"
    return None
