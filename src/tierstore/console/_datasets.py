"""Page 4, Datasets: every dataset with its versions (samples, bytes), a version's source, its
derivation back to the store, a sample preview (the head of its manifest: ``manifest?head=K``),
the pins that hold it on the hot tier (pin for a job, unpin), and the diff between two versions
(``NAME/diff``, computed by the server). Every read and move is a ``/_tierstore/datasets`` or
``/_tierstore/jobs`` call through the dispatcher."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._dispatch import S3Error
from tierstore.console._ml import dataset_path, derivation, ext_raw, source_text

__all__: list[str] = []

PREVIEW_ROWS = 20  # samples shown from the head of a manifest
DIFF_SHOWN = 200  # keys listed per kind in a diff (the counts are exact)
DIFF_WAIT_MS = 150  # how long the diff fragment waits for the server's diff before it polls


def _version(web: Web) -> int:
    text = web.params["version"]
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise Refused(404, "A dataset version is a number from 1.")
    return int(text)


async def _pins(web: Web, ref: str | None = None, name: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The pins holding versions of dataset ``name`` (or version ``ref``) on the hot tier, and
    an error to show when this principal may not list them (``tierstore:ListJobs``)."""
    try:
        pins = (await web.extension("GET", "/_tierstore/jobs")).get("pins", [])
    except S3Error as exc:
        return [], f"{exc.code}: {exc.message}"
    keep = [p for p in pins if p.get("dataset") == ref or (name and str(p.get("dataset", "")).startswith(name + "@"))]
    return keep, ""


@route("GET", "datasets")
async def datasets(web: Web) -> Reply:
    records = (await web.extension("GET", "/_tierstore/datasets")).get("datasets", [])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    rows = [{"name": n, "versions": len(v), "latest": v[-1]} for n, v in sorted(by_name.items())]
    return web.render("datasets.html", page="datasets", title="Datasets", rows=rows, source=source_text)


@route("GET", "datasets/{name}")
async def dataset(web: Web) -> Reply:
    name = web.params["name"]
    query = urlencode({"name": name})
    versions = (await web.extension("GET", "/_tierstore/datasets", query=query)).get("datasets", [])
    if not versions:
        raise S3Error("NoSuchDataset", f"There is no dataset {name}.", 404)
    pins, pins_error = await _pins(web, name=name)
    return web.render(
        "dataset.html", page="datasets", title=name, name=name, versions=versions, pins=pins,
        pins_error=pins_error, source=source_text, ok=web.query.get("ok", ""),
    )  # fmt: skip


# before datasets/{name}/{version}: the first route that matches a path answers it
@route("GET", "datasets/{name}/diff")
async def diff(web: Web) -> Reply:
    """The diff page answers at once with both versions' records and a progress note; the diff
    itself (``?part=result``: counts and the first ``DIFF_SHOWN`` samples of each kind, computed
    by the server from the two manifests) is loaded into it by htmx, since a first diff of two
    1,000,000-sample versions takes longer than a page may (docs/console.md "Datasets"): the
    fragment waits ``DIFF_WAIT_MS`` for it, else answers "still comparing" and asks again."""
    name = web.params["name"]
    a, b = web.query.get("a", ""), web.query.get("b", "")
    if not all(v.isascii() and v.isdigit() for v in (a, b)):
        raise Refused(400, "Choose two versions to compare.")
    title = f"{name}@{a} → {name}@{b}"
    if web.query.get("part") == "result":
        try:
            query = urlencode({"a": a, "b": b, "limit": DIFF_SHOWN, "wait_ms": DIFF_WAIT_MS})
            d = await web.extension("GET", dataset_path(name) + "/diff", query=query)
        except S3Error as exc:  # shown in place of the diff (htmx swaps only a 2xx answer in)
            return web.render("dataset_diff_result.html", error=f"{exc.code}: {exc.message}")
        if d.get("state") == "computing":  # the fragment asks again (no request waits long)
            again = console_url(f"datasets/{name}/diff", a=a, b=b, part="result")
            return web.render("dataset_diff_result.html", computing=True, again=again)
        return web.render("dataset_diff_result.html", d=d, shown=DIFF_SHOWN)
    old, new = await asyncio.gather(*(web.extension("GET", dataset_path(name, int(v))) for v in (a, b)))
    return web.render(
        "dataset_diff.html", page="datasets", title=title, name=name, a=a, b=b, old=old, new=new,
    )  # fmt: skip


@route("GET", "datasets/{name}/{version}")
async def dataset_version(web: Web) -> Reply:
    name, version = web.params["name"], _version(web)
    rec: dict[str, Any] = await web.extension("GET", dataset_path(name, version))
    # the first rows only: the server reads the manifest's footer and first row group, and
    # authorizes the objects those rows name (not the whole manifest)
    head = await web.extension("GET", dataset_path(name, version) + "/manifest", query=f"head={PREVIEW_ROWS}")
    chain = await derivation(web, rec)
    pins, pins_error = await _pins(web, ref=rec["ref"])
    return web.render(
        "dataset_version.html", page="datasets", title=rec["ref"], name=name, rec=rec, samples=head["head"],
        chain=chain, pins=pins, pins_error=pins_error, source=source_text, ok=web.query.get("ok", ""),
        lineage=json.dumps(rec.get("lineage"), indent=2, sort_keys=True) if rec.get("lineage") else "",
    )  # fmt: skip


@route("POST", "datasets/{name}/{version}/pin")
async def pin(web: Web) -> Reply:
    """Copy the version's samples to the hot tier and hold them for a job (until unpinned or the
    TTL ends). The copy runs while the page waits: its last progress line says how it ended."""
    name, version = web.params["name"], _version(web)
    form = await web.form()
    job, ttl = form.get("job", "").strip(), form.get("ttl_hours", "").strip()
    if not job:
        raise Refused(400, "A pin is held for a job: name it.")
    params = {"job": job}
    if ttl:
        try:
            params["ttl"] = f"{float(ttl) * 3600:g}"
        except ValueError:
            raise Refused(400, "The TTL is a number of hours.") from None
    lines = await ext_raw(web, "POST", dataset_path(name, version) + "/pin", query=urlencode(params))
    last: dict[str, Any] = {}
    for line in lines.splitlines():
        if line.strip():
            last = json.loads(line)
    if last.get("state") != "done":
        err = last.get("error") or {}
        raise S3Error(err.get("code", "InternalError"), err.get("message", "The pin did not finish."), 500)
    copied, local = last.get("items", 0), last.get("skipped", 0)
    ok = f"Pinned {name}@{version} for {job}: {copied} blobs from remote tiers ({local} of them already local)."
    return web.redirect(console_url(f"datasets/{name}/{version}", ok=ok))


@route("POST", "datasets/{name}/{version}/unpin")
async def unpin(web: Web) -> Reply:
    name, version = web.params["name"], _version(web)
    job = (await web.form()).get("job", "")
    await ext_raw(web, "DELETE", dataset_path(name, version) + "/pin", query=urlencode({"job": job}))
    return web.redirect(console_url(f"datasets/{name}/{version}", ok=f"Unpinned {name}@{version} for {job}."))
