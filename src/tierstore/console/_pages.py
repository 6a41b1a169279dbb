"""The pages not built yet: each says so plainly (issue 19 builds them in later slices)."""

from __future__ import annotations

from tierstore.console._app import PAGES, Reply, Web, route

__all__: list[str] = []


def _unbuilt(slug: str, title: str) -> None:
    async def page(web: Web) -> Reply:
        return web.render("todo.html", page=slug, title=title)

    route("GET", slug)(page)


for _page in PAGES:
    if not _page.built:
        _unbuilt(_page.slug, _page.title)
