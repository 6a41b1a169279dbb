"""What the operator pages (identity, tiers, health) share: IAM calls through the dispatcher,
and sections that show the dispatcher's refusal instead of failing the whole page."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tierstore.console._app import Web
from tierstore.console._dispatch import S3Error

__all__ = ["Section", "iam", "section"]

T = TypeVar("T")


@dataclass
class Section(Generic[T]):
    """One part of a page: its data, or the error the dispatcher answered instead (``denied``:
    the principal may not do this — the page says "not allowed", with the server's message)."""

    data: T | None
    error: S3Error | None = None

    @property
    def denied(self) -> bool:
        return self.error is not None and self.error.code == "AccessDenied"


async def section(call: Awaitable[T]) -> Section[T]:
    try:
        return Section(await call)
    except S3Error as exc:
        return Section(None, exc)


async def iam(web: Web, operation: str, **params: Any) -> dict[str, Any]:
    """One IAM query-API call (botocore's ``iam`` client, e.g. ``create_policy``) through the
    dispatcher, as the session's principal; ``S3Error`` on refusal."""
    client = web.app.dispatch.client("iam", web.endpoint, web.creds)
    return await web.app.dispatch.call(client, operation, web.client_addr, **params)
