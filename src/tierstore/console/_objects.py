"""Page 2, the object browser."""

from __future__ import annotations

from tierstore.console._app import Reply, Web, route

__all__: list[str] = []


@route("GET", "browse")
async def browse_any(web: Web) -> Reply:
    return web.redirect("/console/buckets")
