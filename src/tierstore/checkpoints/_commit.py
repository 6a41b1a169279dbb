"""The checkpoint layout and its commit object (docs/checkpoints.md).

::

    PREFIX/data/<name>/<file>          the data: any number of files, uploaded in parallel
    PREFIX/commits/<name>.json         the commit object, written last with If-None-Match: *

``<name>`` is ``<step, 12 digits>-<run id>``, so commits list in step order. A checkpoint exists
exactly when its commit object does: readers only ever look at ``commits/``, and the commit
names every data file by key, version id, size and CRC64NVME. Its metrics are also the commit
object's user metadata and its tags the object's tags, so the metadata query finds
"the lowest loss tagged tested" over ``commits/`` without reading a single commit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMMITS_DIR",
    "DATA_DIR",
    "FORMAT",
    "Commit",
    "CommitFile",
    "CommitFormatError",
    "checkpoint_name",
    "parse_name",
]

FORMAT = "tierstore.checkpoint/1"
COMMITS_DIR = "commits"
DATA_DIR = "data"
MAX_COMMIT_BYTES = 64 << 20

_RUN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAME = re.compile(r"^(\d{12})-([a-z0-9][a-z0-9_-]{0,62})$")
# metric names become x-amz-meta-<name>: lower case, no spaces, one header token
_METRIC = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_RESERVED_META = {"step", "run", "kind", "format", "datasets"}


class CommitFormatError(ValueError):
    """A commit object that is not one this version can read (or bad input for one)."""


def check_run(run: str) -> str:
    if not _RUN.match(run):
        raise ValueError(f"run id {run!r}: 1-63 of a-z 0-9 _ -, starting with a letter or digit")
    return run


def check_metric_name(name: str) -> str:
    if not _METRIC.match(name) or name in _RESERVED_META:
        raise ValueError(
            f"metric name {name!r}: 1-63 of a-z 0-9 _ . -, not one of {sorted(_RESERVED_META)}"
            " (metrics are object metadata, and S3 metadata names are lower case)"
        )
    return name


def checkpoint_name(step: int, run: str) -> str:
    if not 0 <= step < 10**12:
        raise ValueError(f"step {step}: 0 <= step < 10**12")
    return f"{step:012d}-{check_run(run)}"


def parse_name(name: str) -> tuple[int, str]:
    """(step, run) of ``<step>-<run>``; CommitFormatError if it is not one."""
    m = _NAME.match(name)
    if not m:
        raise CommitFormatError(f"not a checkpoint name: {name!r}")
    return int(m.group(1)), m.group(2)


@dataclass(frozen=True, slots=True)
class CommitFile:
    """One data file: ``path`` relative to the checkpoint's data directory."""

    path: str
    key: str
    version_id: str | None
    size: int
    crc64nvme: str  # base64 of the 8 bytes, as S3 reports it

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key, "version_id": self.version_id, "size": self.size,
                "crc64nvme": self.crc64nvme}  # fmt: skip


@dataclass(slots=True)
class Commit:
    """What a commit object says. ``kind``: ``state_dict`` (CheckpointStore.save) or ``dcp``
    (torch.distributed.checkpoint); ``body``: the kind's own index (tensor table and structure,
    or the DCP metadata file's name)."""

    step: int
    run: str
    kind: str
    created_ns: int
    files: list[CommitFile]
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return checkpoint_name(self.step, self.run)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def user_metadata(self) -> dict[str, str]:
        """The commit object's ``x-amz-meta-*``: step, run, kind, datasets and every metric."""
        meta = {"step": str(self.step), "run": self.run, "kind": self.kind}
        if self.datasets:
            meta["datasets"] = " ".join(self.datasets)
        for k, v in self.metrics.items():
            meta[check_metric_name(k)] = repr(float(v))
        return meta

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "step": self.step,
            "run": self.run,
            "kind": self.kind,
            "created_ns": self.created_ns,
            "files": [f.to_json() for f in self.files],
            "metrics": self.metrics,
            "tags": self.tags,
            "datasets": self.datasets,
            "body": self.body,
        }
        return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        if len(data) > MAX_COMMIT_BYTES:
            raise CommitFormatError(f"a commit object of {len(data)} bytes (at most {MAX_COMMIT_BYTES})")
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise CommitFormatError(f"a commit object that is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CommitFormatError(f"not a {FORMAT} commit object (format {doc.get('format')!r})"
                                    if isinstance(doc, dict) else "not a commit object")  # fmt: skip
        try:
            files = [
                CommitFile(str(f["path"]), str(f["key"]), f.get("version_id"), int(f["size"]), str(f["crc64nvme"]))
                for f in doc["files"]
            ]
            return cls(
                step=int(doc["step"]),
                run=str(doc["run"]),
                kind=str(doc["kind"]),
                created_ns=int(doc["created_ns"]),
                files=files,
                metrics={str(k): float(v) for k, v in doc.get("metrics", {}).items()},
                tags={str(k): str(v) for k, v in doc.get("tags", {}).items()},
                datasets=[str(d) for d in doc.get("datasets", [])],
                body=dict(doc.get("body", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CommitFormatError(f"a malformed commit object: {exc!r}") from exc
