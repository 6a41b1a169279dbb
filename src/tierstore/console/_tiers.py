"""Page 8, Tiers and lifecycle: the remote tiers, each one's mover backlog (lifecycle
transitions due, writes waiting to move, remote deletes queued) and errors, and the restores
in progress (RestoreObject's hot copies). Through ``/_tierstore/admin/tiers`` and
``/_tierstore/admin/restores``, as the session's principal: a section it may not read says so."""

from __future__ import annotations

import json
from urllib.parse import quote

from tierstore.console._admin import section
from tierstore.console._app import Refused, Reply, Web, console_url, route

__all__: list[str] = []

_TIERS = "/_tierstore/admin/tiers"
_FIELDS = ("name", "endpoint", "bucket", "prefix", "region", "access_key_id", "secret_key")


@route("GET", "tiers")
async def tiers(web: Web) -> Reply:
    registry = await section(web.extension("GET", _TIERS))
    status = await section(web.extension("GET", _TIERS + "/status"))
    restores = await section(web.extension("GET", "/_tierstore/admin/restores"))
    by_name = {s["name"]: s for s in (status.data or {}).get("tiers", [])}
    return web.render(
        "tiers.html", page="tiers", title="Tiers and lifecycle", registry=registry, tier_status=status,
        by_name=by_name, restores=restores, ok=web.query.get("ok", ""),
    )  # fmt: skip


@route("POST", "tiers")
async def add_tier(web: Web) -> Reply:
    form = await web.form()
    doc: dict[str, object] = {k: form[k].strip() for k in _FIELDS if form.get(k, "").strip()}
    if "name" not in doc or "endpoint" not in doc or "bucket" not in doc:
        raise Refused(400, "A tier needs a name, an endpoint and a bucket.")
    for flag in ("restore_required", "allow_private"):
        doc[flag] = flag in form
    await web.extension("POST", _TIERS, body=json.dumps(doc).encode())  # the secret goes in this body only
    return web.redirect(console_url("tiers", ok=f"Tier {doc['name']} added."))


@route("POST", "tiers/{name}/delete")
async def delete_tier(web: Web) -> Reply:
    name = web.params["name"]
    await web.extension("DELETE", f"{_TIERS}/{quote(name, safe='')}")
    return web.redirect(console_url("tiers", ok=f"Tier {name} removed."))
