"""The model registry: named, numbered model versions that pin the bytes of a checkpoint.

A model version is a dataset version in another table (docs/checkpoints.md): its Parquet
manifest has one row per byte range of each checkpoint data file (``member``: the file's path in
the checkpoint) plus one row for the commit object itself (``member`` ``COMMIT.json``), and
publishing it pins every byte those rows read in one catalog transaction, exactly as
engine/_datasets.py does. So a registered model survives retention, overwrites and deletes of
the checkpoint's objects. The client reads the commit and sends the rows (the engine does not
know the checkpoint format, which lives in the ML layer); the engine checks that every row's
object version exists while it pins it.

Aliases (``production``, ``staging``) are rows of ``model_aliases``; moving one is one catalog
statement in one transaction, so a reader resolves either the old version or the new one. A
version an alias points at cannot be deleted.

Registration also tags the commit object version ``model=NAME@N`` (so checkpoint retention, which
keeps tagged checkpoints, keeps it, and the metadata query finds ``tag.model = 'NAME@N'``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tierstore.catalog import DatasetRecord, ModelAliasInUse
from tierstore.engine._datasets import DatasetService, DatasetSpec, MayRead
from tierstore.engine._tags import MAX_OBJECT_TAGS
from tierstore.errors import InvalidRequest, NoSuchModel, TierstoreError
from tierstore.types import MODEL_COMMIT_MEMBER, ModelRef, check_alias

__all__ = ["MODEL_TAG", "ModelService"]

log = logging.getLogger("tierstore.models")

MODEL_TAG = "model"  # the commit object's tag: model=NAME@N
MAX_INFO_BYTES = 64 * 1024
_RESOLVE_ATTEMPTS = 3
# What a registration's ``info`` may say about its checkpoint, and the JSON type of each.
_INFO_TYPES: dict[str, type | tuple[type, ...]] = {
    "checkpoint": str,
    "commit_version_id": (str, type(None)),
    "step": int,
    "run": str,
    "kind": str,
    "created_ns": int,
    "metrics": dict,
    "datasets": list,
    "tags": dict,
}


class ModelService(DatasetService):
    """Register, list, show, alias and delete model versions and read their rows; reached by
    api/ as ``app.models``. Reading, pinning and releasing are DatasetService's, on ``models``."""

    table = "models"
    kind = "model"
    missing = NoSuchModel

    def check_name(self, name: str) -> None:
        ref = ModelRef.parse(name)
        if ref.version is not None or ref.alias is not None:
            raise InvalidRequest(f"Expected a model name without @, got {name[:140]!r}.")

    # --- metadata ------------------------------------------------------------------
    async def resolve(self, ref: str | ModelRef) -> DatasetRecord:
        """The version ``NAME@N``, ``NAME@ALIAS`` or ``NAME`` (latest) names."""
        parsed = ModelRef.parse(ref)
        if parsed.alias is None:
            return await self.get(parsed.name, parsed.version)
        for _ in range(_RESOLVE_ATTEMPTS):  # the alias may move, and its old version go, in between
            version = await self.catalog.model_alias(parsed.name, parsed.alias)
            if version is None:
                raise NoSuchModel(f"No model alias {parsed}.", resource=str(parsed))
            record = await self.catalog.get_dataset(parsed.name, version, table=self.table)
            if record is not None:
                return record
        raise NoSuchModel(f"The model alias {parsed} kept moving; try again.", resource=str(parsed))

    async def aliases(self, name: str | None = None) -> dict[tuple[str, int], list[str]]:
        """The aliases of each version (of model ``name``): {(name, version): [alias, ...]}."""
        found: dict[tuple[str, int], list[str]] = {}
        for model, alias, version, _updated_ns in await self.catalog.model_aliases(name):
            found.setdefault((model, version), []).append(alias)
        return found

    # --- register ------------------------------------------------------------------
    async def register(
        self, name: str, rows: list[dict[str, Any]], info: dict[str, Any], *, may_read: MayRead | None = None
    ) -> DatasetRecord:
        """Publish the next version of model ``name`` pinning ``rows`` (dicts: bucket, key,
        version_id?, offset?, size?, member) — the checkpoint's data files plus exactly one whole
        object row with member ``COMMIT.json`` — described by ``info`` (the commit's step, run,
        kind, metrics, datasets, tags). A row whose object version does not exist is refused;
        ``may_read``: the caller's read rights on every row's object (``DatasetService.create``)."""
        self.check_name(name)
        checkpoint = _checked_info(info)
        if not isinstance(rows, list) or not rows:
            raise InvalidRequest("A model version needs rows: the checkpoint's files and its commit object.")
        commits = [i for i, r in enumerate(rows) if isinstance(r, dict) and r.get("member") == MODEL_COMMIT_MEMBER]
        if len(commits) != 1:
            raise InvalidRequest(f"Exactly one row names the commit object (member {MODEL_COMMIT_MEMBER!r}).")
        row = dict(rows[commits[0]])
        bucket, key, version_id = row.get("bucket"), row.get("key"), row.get("version_id")
        if not isinstance(bucket, str) or not isinstance(key, str) or not isinstance(version_id, (str, type(None))):
            raise InvalidRequest("The commit row needs a bucket and a key (and a version_id string, if any).")
        if row.get("offset") is not None or row.get("size") is not None:
            raise InvalidRequest("The commit row names the whole commit object (no offset or size).")
        if may_read is not None:
            await may_read(bucket, key, version_id)  # before the commit object's existence shows
        try:  # pin the version read now, and tag that same version
            commit = await self.service.version_record(bucket, key, version_id)
        except TierstoreError as exc:
            raise InvalidRequest(f"The commit object s3://{bucket}/{key}: {exc}") from exc
        if may_read is not None and version_id is None:
            may_read = _except_row(may_read, (bucket, key, commit.meta.version_id))
        row["version_id"] = commit.meta.version_id
        rows = [*rows[: commits[0]], row, *rows[commits[0] + 1 :]]
        checkpoint["uri"] = f"s3://{bucket}/{key}"
        checkpoint["version_id"] = commit.meta.version_id
        checkpoint.pop("checkpoint", None)
        checkpoint.pop("commit_version_id", None)
        spec = DatasetSpec(rows=rows)
        spec.validate()
        record = await self._publish(name, spec, {"checkpoint": checkpoint}, may_read)
        await self._tag_commit(bucket, key, commit.meta.version_id, f"{name}@{record.version}")
        return record

    async def _tag_commit(self, bucket: str, key: str, version_id: str, value: str) -> None:
        """Add ``model=value`` to the commit version's tags, keeping the others. Best effort:
        the model is registered (and its bytes pinned) whatever happens here."""
        try:
            tags = dict((await self.service.get_object_tagging(bucket, key, version_id)).tags)
            if tags.get(MODEL_TAG) == value:
                return
            if MODEL_TAG not in tags and len(tags) >= MAX_OBJECT_TAGS:
                log.warning("s3://%s/%s: %d tags already, not tagging it %s=%s (the model is registered)",
                            bucket, key, len(tags), MODEL_TAG, value)  # fmt: skip
                return
            if MODEL_TAG in tags:
                log.info("s3://%s/%s: tag %s=%s replaces %s", bucket, key, MODEL_TAG, value, tags[MODEL_TAG])
            tags[MODEL_TAG] = value
            await self.service.put_object_tagging(bucket, key, tags.items(), version_id)
        except TierstoreError as exc:  # the commit version was deleted meanwhile: its bytes stay pinned
            log.warning("s3://%s/%s: could not tag it %s=%s: %s", bucket, key, MODEL_TAG, value, exc)

    async def _untag_commit(self, record: DatasetRecord) -> None:
        checkpoint = record.info.get("checkpoint") or {}
        uri, version_id = checkpoint.get("uri", ""), checkpoint.get("version_id")
        bucket, _, key = str(uri).removeprefix("s3://").partition("/")
        value = f"{record.name}@{record.version}"
        try:
            tags = dict((await self.service.get_object_tagging(bucket, key, version_id)).tags)
            if tags.get(MODEL_TAG) == value:
                del tags[MODEL_TAG]
                await self.service.put_object_tagging(bucket, key, tags.items(), version_id)
        except TierstoreError:
            pass  # the commit object is gone: nothing to untag

    # --- aliases -------------------------------------------------------------------
    async def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``name@alias`` at ``version`` atomically; returns the version it pointed at before."""
        self.check_name(name)
        check_alias(alias)
        if type(version) is not int or version < 1:
            raise InvalidRequest("An alias points at a version: an integer from 1.")
        previous = await self.catalog.set_model_alias(name, alias, version, self.service.clock.now_ns())
        log.info("model alias %s@%s -> %d (was %s)", name, alias, version, previous)
        return previous

    async def delete_alias(self, name: str, alias: str) -> int:
        self.check_name(name)
        check_alias(alias)
        return await self.catalog.delete_model_alias(name, alias)

    # --- delete --------------------------------------------------------------------
    async def delete(self, name: str, version: int) -> None:
        """Remove ``name@version`` and release its pins; refused while an alias points at it."""
        record = await self.get(name, version)
        try:
            await super().delete(name, version)
        except ModelAliasInUse as exc:
            raise InvalidRequest(
                f"{name}@{version} is aliased as {', '.join(exc.aliases)}: move or delete the alias first.",
                resource=f"{name}@{version}",
            ) from exc
        await self._untag_commit(record)


def _except_row(may_read: MayRead, row: tuple[str, str, str]) -> MayRead:
    """``may_read``, but for the commit row the server gave the version of (checked already,
    as the caller named it: without a version, s3:GetObject rather than s3:GetObjectVersion)."""

    async def checked(bucket: str, key: str | None, version_id: str | None) -> None:
        if (bucket, key, version_id) != row:
            await may_read(bucket, key, version_id)

    return checked


def _checked_info(info: Any) -> dict[str, Any]:
    """A copy of a registration's ``info``, checked: known keys, JSON types, bounded size."""
    if not isinstance(info, dict):
        raise InvalidRequest("info is a JSON object.")
    for name, value in info.items():
        want = _INFO_TYPES.get(name)
        if want is None:
            raise InvalidRequest(f"Unknown info field {str(name)[:40]!r} (known: {', '.join(_INFO_TYPES)}).")
        if not isinstance(value, want) or isinstance(value, bool):
            raise InvalidRequest(f"info field {name!r} has the wrong type.")
    if len(json.dumps(info)) > MAX_INFO_BYTES:
        raise InvalidRequest(f"info is larger than {MAX_INFO_BYTES} bytes.")
    return dict(info)
