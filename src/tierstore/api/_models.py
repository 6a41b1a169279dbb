"""``/_tierstore/models``: the model registry (docs/checkpoints.md). JSON in and out.

- ``GET    /_tierstore/models[?name=NAME]``            -> ``{"models": [record, ...]}``
- ``POST   /_tierstore/models``                        -> the new version's record (201). Body:
  ``{"name", "rows": [{bucket, key, version_id?, offset?, size?, member}], "info": {step, run, ...}}``
- ``GET    /_tierstore/models/NAME[/N | /ALIAS]``      -> the record (latest version without N)
- ``GET    /_tierstore/models/NAME/N|ALIAS/manifest``  -> the Parquet manifest (``?head=K``: its first K
  rows as JSON, as a dataset's: api/_datasets.py)
- ``DELETE /_tierstore/models/NAME/N``                 -> 204; pins released (refused while aliased)
- ``GET    /_tierstore/models/NAME/aliases``           -> ``{"aliases": {ALIAS: N, ...}}``
- ``PUT    /_tierstore/models/NAME/aliases/ALIAS``     -> ``{"version": N}``: create or move, atomically
- ``DELETE /_tierstore/models/NAME/aliases/ALIAS``     -> 204
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from tierstore import errors as e
from tierstore.api._datasets import ObjectReads, manifest_answer
from tierstore.api._datasets import record_json as dataset_record_json
from tierstore.engine import DatasetRecord, ModelService
from tierstore.types import ModelRef, check_alias

__all__ = ["model_record_json", "model_request", "refuse"]

_JSON = "application/json"


def model_record_json(r: DatasetRecord, aliases: list[str]) -> dict[str, Any]:
    """A model version's record: name, version, ref, rows, bytes, manifest_bytes, created,
    created_ns, source, checkpoint {uri, version_id, step, run, kind, metrics, datasets, tags},
    aliases."""
    return {**dataset_record_json(r), "aliases": sorted(aliases)}


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _ref(name: str, text: str) -> ModelRef:
    return ModelRef.parse(f"{name}@{text}")


async def model_request(
    method: str,
    key: str,
    query: dict[str, str],
    read_json: Callable[[], Awaitable[dict[str, Any]]],
    models: ModelService,
    may_read: ObjectReads | None = None,
) -> tuple[int, str, bytes]:
    """Answer one request under ``/_tierstore/models``: (status, content type, body).
    ``may_read``: the caller's read rights on objects, as for datasets (``_datasets``)."""
    parts = key.split("/")[1:]  # after "models"
    if not parts:
        if method == "GET":
            name = query.get("name")
            if name is not None:
                models.check_name(name)
            aliases = await models.aliases(name)
            found = [model_record_json(r, aliases.get((r.name, r.version), [])) for r in await models.list(name)]
            return 200, _JSON, _json({"models": found})
        if method == "POST":
            doc = await read_json()
            name, rows, info = doc.get("name"), doc.get("rows"), doc.get("info", {})
            if not isinstance(name, str):
                raise e.InvalidRequest("A model needs a name.")
            if not isinstance(rows, list):
                raise e.InvalidRequest("rows is a list of objects.")
            record = await models.register(name, rows, info, may_read=may_read)
            return 201, _JSON, _json(model_record_json(record, []))
        raise e.MethodNotAllowed()
    name = parts[0]
    models.check_name(name)

    async def record_of(r: DatasetRecord) -> bytes:
        return _json(model_record_json(r, (await models.aliases(r.name)).get((r.name, r.version), [])))

    if len(parts) == 1:
        if method != "GET":
            raise e.MethodNotAllowed()
        return 200, _JSON, await record_of(await models.resolve(name))
    if parts[1] == "aliases":
        if len(parts) == 2:
            if method != "GET":
                raise e.MethodNotAllowed()
            pointing = {alias: v for (_, v), names in (await models.aliases(name)).items() for alias in names}
            return 200, _JSON, _json({"name": name, "aliases": dict(sorted(pointing.items()))})
        if len(parts) != 3:
            raise e.NotImplementedOperation(f"No model operation {key[:60]!r}.")
        alias = check_alias(parts[2])
        if method == "PUT":
            version = (await read_json()).get("version")
            if type(version) is not int:
                raise e.InvalidRequest('Expected {"version": N}.')
            previous = await models.set_alias(name, alias, version)
            return 200, _JSON, _json({"name": name, "alias": alias, "version": version, "previous": previous})
        if method == "DELETE":
            await models.delete_alias(name, alias)
            return 204, _JSON, b""
        if method == "GET":
            record = await models.resolve(ModelRef(name, alias=alias))
            return 200, _JSON, _json({"name": name, "alias": alias, "version": record.version})
        raise e.MethodNotAllowed()
    ref = _ref(name, parts[1])
    if len(parts) == 2:
        if method == "GET":
            return 200, _JSON, await record_of(await models.resolve(ref))
        if method == "DELETE":
            if ref.version is None:
                raise e.InvalidRequest("Delete names one version: NAME@N (not an alias).")
            await models.delete(name, ref.version)
            return 204, _JSON, b""
        raise e.MethodNotAllowed()
    if len(parts) == 3 and parts[2] == "manifest":
        if method != "GET":
            raise e.MethodNotAllowed()
        return await manifest_answer(models, await models.resolve(ref), may_read, query)
    raise e.NotImplementedOperation(f"No model operation {key[:60]!r}.")


def refuse(key: str, models: ModelService) -> None:
    """Raise the error of a request under ``/_tierstore/models`` that names no action (the route
    table's Unknown), checking the name, alias or version first as ``model_request`` does."""
    parts = key.split("/")[1:]
    if not parts:
        raise e.MethodNotAllowed()
    models.check_name(parts[0])
    if len(parts) >= 2 and parts[1] == "aliases":
        if len(parts) > 3:
            raise e.NotImplementedOperation(f"No model operation {key[:60]!r}.")
        if len(parts) == 3:
            check_alias(parts[2])
    elif len(parts) >= 2:
        _ref(parts[0], parts[1])
        if len(parts) > 3 or (len(parts) == 3 and parts[2] != "manifest"):
            raise e.NotImplementedOperation(f"No model operation {key[:60]!r}.")
    raise e.MethodNotAllowed()
