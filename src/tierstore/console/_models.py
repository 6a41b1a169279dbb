"""Page 6, Models: every model with its versions and aliases; a version's checkpoint, metrics,
files, the pull command, and its lineage drawn as a graph (model -> checkpoint -> dataset
versions -> sources; laid out on the server, ``_ml.lineage_graph``); moving an alias such as
``production`` (a POST with the session's CSRF token, a ``PutModelAlias`` through the dispatcher)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._dispatch import S3Error
from tierstore.console._ml import lineage_graph, model_path, set_alias

__all__: list[str] = []


async def _versions(web: Web, name: str | None = None) -> list[dict[str, Any]]:
    query = urlencode({"name": name}) if name else ""
    found: list[dict[str, Any]] = (await web.extension("GET", "/_tierstore/models", query=query)).get("models", [])
    return found


@route("GET", "models")
async def models(web: Web) -> Reply:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in await _versions(web):
        by_name.setdefault(r["name"], []).append(r)
    rows = [
        {"name": n, "versions": len(v), "latest": v[-1], "aliases": {a: r["version"] for r in v for a in r["aliases"]}}
        for n, v in sorted(by_name.items())
    ]
    return web.render("models.html", page="models", title="Models", rows=rows)


@route("GET", "models/{name}")
async def model(web: Web) -> Reply:
    name = web.params["name"]
    versions = await _versions(web, name)
    if not versions:
        raise S3Error("NoSuchModel", f"There is no model {name}.", 404)
    aliases = {a: r["version"] for r in versions for a in r["aliases"]}
    return web.render(
        "model.html", page="models", title=name, name=name, versions=versions, aliases=aliases,
        ok=web.query.get("ok", ""),
    )  # fmt: skip


@route("GET", "models/{name}/{ref}")
async def model_version(web: Web) -> Reply:
    """A version (``N``, or an alias: the version it points at now) with its lineage graph."""
    name, ref = web.params["name"], web.params["ref"]
    rec: dict[str, Any] = await web.extension("GET", model_path(name, ref))
    graph = await lineage_graph(web, rec)
    ckpt = rec.get("checkpoint") or {}
    pull = rec["aliases"][0] if rec.get("aliases") else rec["version"]
    return web.render(
        "model_version.html", page="models", title=rec["ref"], name=name, rec=rec, ckpt=ckpt, graph=graph,
        pull_ref=f"{name}@{pull}", ok=web.query.get("ok", ""),
    )  # fmt: skip


@route("POST", "models/{name}/alias")
async def move_alias(web: Web) -> Reply:
    name, form = web.params["name"], await web.form()
    alias, version = form.get("alias", "").strip(), form.get("version", "")
    if not alias or not version.isdigit():
        raise Refused(400, "Moving an alias needs its name and a version.")
    answer = await set_alias(web, name, alias, int(version))
    before = answer.get("previous")
    was = f" (was {name}@{before})" if before else ""
    return web.redirect(console_url(f"models/{name}", ok=f"{name}@{alias} now points at {name}@{version}{was}."))
