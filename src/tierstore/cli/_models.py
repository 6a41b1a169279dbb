"""``tierstore models register|ls|show|alias|unalias|pull|rm`` and ``tierstore lineage``.

The model registry is kept by the server (docs/checkpoints.md): a model version pins the bytes
of one checkpoint, aliases (``production``, ``staging``) move atomically, and ``pull`` writes a
verified copy for an inference server. Expected failures end with one line on stderr and exit
code 1 (2 for bad usage), never a traceback — as ``tierstore dataset`` does.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.cli._datasets import _entry as _command
from tierstore.cli._datasets import _human, _Usage
from tierstore.client import TierstoreClient
from tierstore.types import dataset_source_text

__all__ = ["add_model_commands"]


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conn = _connection_options()
    models = sub.add_parser(
        "models",
        help="the model registry: register, ls, show, alias, unalias, pull, rm (docs/checkpoints.md)",
        description="A model version (NAME@N) pins the bytes of one checkpoint, so retention, overwrites and "
        "deletes of the checkpoint's objects never take it away. Aliases (NAME@production) move atomically.",
    )
    msub = models.add_subparsers(dest="models_command", required=True)

    p = msub.add_parser("register", parents=[conn], help="register a checkpoint as the next version of NAME")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--from", dest="from_uri", required=True, metavar="CKPT",
                   help="s3://BUCKET/PREFIX (its latest checkpoint), s3://BUCKET/PREFIX@STEP, or the commit object "
                   "s3://BUCKET/PREFIX/commits/NAME.json")  # fmt: skip
    p.add_argument("--alias", metavar="ALIAS", help="also point NAME@ALIAS at the new version")
    p.add_argument("--json", action="store_true", help="print the new version's record as JSON")
    p.set_defaults(func=_entry(_cmd_register))

    p = msub.add_parser("ls", parents=[conn], help="list models, their versions and aliases")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(func=_entry(_cmd_ls))

    p = msub.add_parser("show", parents=[conn], help="a version's checkpoint, metrics, aliases and files")
    p.add_argument("ref", metavar="NAME[@N|@ALIAS]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_entry(_cmd_show))

    p = msub.add_parser("alias", parents=[conn], help="point NAME@ALIAS at VERSION (create or move, atomically)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("version", metavar="VERSION", help="N or NAME@N")
    p.set_defaults(func=_entry(_cmd_alias))

    p = msub.add_parser("unalias", parents=[conn], help="remove NAME@ALIAS")
    p.add_argument("name", metavar="NAME")
    p.add_argument("alias", metavar="ALIAS")
    p.set_defaults(func=_entry(_cmd_unalias))

    p = msub.add_parser("pull", parents=[conn], help="fetch a version into DIR, checksums verified")
    p.add_argument("ref", metavar="NAME[@N|@ALIAS]")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--replace", action="store_true", help="swap out an existing DIR once the new copy is verified")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_entry(_cmd_pull))

    p = msub.add_parser("rm", parents=[conn], help="delete a version (refused while an alias points at it)")
    p.add_argument("ref", metavar="NAME@N")
    p.set_defaults(func=_entry(_cmd_rm))

    p = sub.add_parser(
        "lineage",
        parents=[conn],
        help="model -> checkpoint -> dataset versions -> their sources",
        description="Print what a model version was trained from: its checkpoint (step, run, metrics), the dataset "
        "versions the checkpoint recorded, and for derived datasets the chain back to the prefix or query of the "
        "first ancestor.",
    )
    p.add_argument("ref", metavar="NAME[@N|@ALIAS]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_entry(_cmd_lineage))


def _registry_errors() -> tuple[type[BaseException], ...]:
    from tierstore.checkpoints import ModelPullError, ObjectError

    return (ObjectError, ModelPullError)


def _entry(command: Callable[[argparse.Namespace, TierstoreClient], int]) -> Callable[[argparse.Namespace], int]:
    return _command(command, expected=_registry_errors)


def _aliases(rec: dict[str, Any]) -> str:
    return ", ".join(rec.get("aliases") or []) or "-"


def _cmd_register(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.checkpoints import register_model

    if not args.from_uri.startswith("s3://"):
        raise _Usage(f"--from takes s3://BUCKET/PREFIX[@STEP] or a commit object's s3:// key, got {args.from_uri!r}")
    rec = register_model(client, args.name, args.from_uri, alias=args.alias)
    if args.json:
        print(json.dumps(rec))
        return 0
    cp = rec.get("checkpoint") or {}
    alias = f" as {rec['name']}@{args.alias}" if args.alias else ""
    print(f"registered {rec['ref']}{alias}: step {cp.get('step')} of {cp.get('uri')}, {_human(rec['bytes'])}")
    return 0


def _cmd_ls(args: argparse.Namespace, client: TierstoreClient) -> int:
    records = client.list_models(args.name)
    if args.json:
        for rec in records:
            print(json.dumps(rec))
        return 0
    if not records:
        print("(no models)")
        return 0
    rows = [[r["ref"], _human(r["bytes"]), r["created"][:19].replace("T", " "), _aliases(r),
             str((r.get("checkpoint") or {}).get("uri", ""))] for r in records]  # fmt: skip
    header = ["MODEL", "SIZE", "CREATED (UTC)", "ALIASES", "CHECKPOINT"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip())
    return 0


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _cmd_show(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore._parquet import read_parquet

    rec = client.model_info(args.ref)
    table = read_parquet(client.model_manifest(rec["ref"]))
    files: dict[str, dict[str, Any]] = defaultdict(lambda: {"rows": 0, "bytes": 0, "inline": 0, "blobs": 0})
    for row in table.to_pylist():
        f = files[row["member"]]
        f["rows"] += 1
        f["bytes"] += row["size"]
        f["object"] = f"s3://{row['bucket']}/{row['key']}?versionId={row['version_id']}"
        if row["loc"].startswith("i:"):
            f["inline"] += 1
        else:
            f["blobs"] += len(row["loc"][2:].split(",")) if len(row["loc"]) > 2 else 0
    if args.json:
        print(json.dumps({**rec, "files": files}))
        return 0
    cp = rec.get("checkpoint") or {}
    print(f"model       {rec['ref']}")
    print(f"aliases     {_aliases(rec)}")
    print(f"created     {rec['created']}")
    print(f"size        {_human(rec['bytes'])} ({rec['bytes']} bytes) in {len(files)} files; "
          f"manifest {_human(rec['manifest_bytes'])}")  # fmt: skip
    print(f"checkpoint  {cp.get('uri')} (version {cp.get('version_id')})")
    print(f"step        {cp.get('step')}   run {cp.get('run')}   kind {cp.get('kind')}")
    if cp.get("metrics"):
        print(f"metrics     {_metrics(cp['metrics'])}")
    if cp.get("tags"):
        print(f"tags        {', '.join(f'{k}={v}' for k, v in sorted(cp['tags'].items()))}")
    if cp.get("datasets"):
        print(f"datasets    {', '.join(cp['datasets'])}")
    print("files (pinned: read from the bytes of these object versions, whatever happens to the keys since):")
    for member, f in sorted(files.items()):
        where = f"{f['inline']} inline" if f["inline"] else f"{f['blobs']} blobs"
        print(f"  {f['bytes']:>12}  {member}  [{f['rows']} rows, {where}]  {f['object']}")
    return 0


def _version(name: str, text: str) -> int:
    if text.startswith(name + "@"):
        text = text[len(name) + 1 :]
    if not text.isdigit() or int(text) < 1:
        raise _Usage(f"VERSION is a number from 1 (or {name}@N), got {text!r}")
    return int(text)


def _cmd_alias(args: argparse.Namespace, client: TierstoreClient) -> int:
    out = client.set_model_alias(args.name, args.alias, _version(args.name, args.version))
    was = f" (was {args.name}@{out['previous']})" if out.get("previous") is not None else ""
    print(f"{args.name}@{args.alias} -> {args.name}@{out['version']}{was}")
    return 0


def _cmd_unalias(args: argparse.Namespace, client: TierstoreClient) -> int:
    client.delete_model_alias(args.name, args.alias)
    print(f"removed {args.name}@{args.alias}")
    return 0


def _cmd_pull(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.checkpoints import pull_model

    rec = client.model_info(args.ref)  # resolve an alias once, and report what was pulled
    dest = pull_model(client, rec["ref"], args.dir, progress=not args.no_progress, replace=args.replace)
    print(f"pulled {rec['ref']} ({args.ref}) into {dest}: {_human(rec['bytes'])}, checksums verified")
    return 0


def _cmd_rm(args: argparse.Namespace, client: TierstoreClient) -> int:
    if "@" not in args.ref or not args.ref.rpartition("@")[2].isdigit():
        raise _Usage("rm deletes one version: NAME@N")
    client.delete_model(args.ref)
    print(f"deleted {args.ref}")
    return 0


def _dataset_lines(node: dict[str, Any], indent: str) -> list[str]:
    if not node.get("found"):
        return [f"{indent}└─ dataset {node['ref']} (not found: {node.get('error', 'deleted')})"]
    rec = node["record"]
    lineage = rec.get("lineage") or {}
    if "source" in lineage:
        how = f" by {lineage['transform']}" if lineage.get("transform") else ""
        what = f"derived from {lineage['source']}{how}"
    else:
        what = dataset_source_text(rec)
    lines = [f"{indent}└─ dataset {rec['ref']}  {rec['rows']} samples, {_human(rec['bytes'])}  <- {what}"]
    if "derived_from" in node:
        lines += _dataset_lines(node["derived_from"], indent + "   ")
    return lines


def _cmd_lineage(args: argparse.Namespace, client: TierstoreClient) -> int:
    from tierstore.checkpoints import lineage

    doc = lineage(client, args.ref)
    if args.json:
        for node in doc["datasets"]:
            _drop_records(node)
        print(json.dumps(doc))
        return 0
    model, cp = doc["model"], doc["checkpoint"]
    aliases = f"  (aliases: {', '.join(model['aliases'])})" if model.get("aliases") else ""
    print(f"model {model['ref']}{aliases}")
    print(f"└─ checkpoint {cp.get('uri')}  step {cp.get('step')}, run {cp.get('run')}, kind {cp.get('kind')}")
    if cp.get("metrics"):
        print(f"   metrics: {_metrics(cp['metrics'])}")
    if not doc["datasets"]:
        print("   └─ (no dataset versions recorded)")
    for node in doc["datasets"]:
        for line in _dataset_lines(node, "   "):
            print(line)
    return 0


def _drop_records(node: dict[str, Any]) -> None:
    node.pop("record", None)
    if "derived_from" in node:
        _drop_records(node["derived_from"])
