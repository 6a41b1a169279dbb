"""Page 1, Buckets: the list with sizes and counts, create and delete, each bucket's settings."""

from __future__ import annotations

from tierstore.console._app import Reply, Web, console_url, route

__all__: list[str] = []


@route("GET", "buckets")
async def buckets(web: Web) -> Reply:
    answer = await web.s3("list_buckets")
    rows = [{"name": b["Name"], "created": b.get("CreationDate")} for b in answer.get("Buckets", [])]
    return web.render("buckets.html", page="buckets", title="Buckets", buckets=rows)


@route("POST", "buckets")
async def create_bucket(web: Web) -> Reply:
    form = await web.form()
    name = form.get("name", "").strip()
    await web.s3("create_bucket", Bucket=name)
    return web.redirect(console_url("buckets"))
