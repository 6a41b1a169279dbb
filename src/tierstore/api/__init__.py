"""S3 over HTTP: the ASGI app, SigV4/SigV2 verification, S3 XML and the error table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierstore.api._accesslog import AccessLog
    from tierstore.api._app import S3App, note_send_failure
    from tierstore.api._audit import AuditLog
    from tierstore.api._auth import Authenticator
    from tierstore.api._authorize import AllowAuthenticated, Authorizer, RequestContext
    from tierstore.api._metrics import Metrics

__all__ = [
    "AccessLog",
    "AllowAuthenticated",
    "AuditLog",
    "Authenticator",
    "Authorizer",
    "Metrics",
    "RequestContext",
    "S3App",
    "note_send_failure",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one api submodule does not import the whole engine.
    if name == "S3App":
        from tierstore.api._app import S3App

        return S3App
    if name == "note_send_failure":
        from tierstore.api._app import note_send_failure

        return note_send_failure
    if name == "Authenticator":
        from tierstore.api._auth import Authenticator

        return Authenticator
    if name in ("AllowAuthenticated", "Authorizer", "RequestContext"):
        from tierstore.api import _authorize

        return getattr(_authorize, name)
    if name == "AccessLog":
        from tierstore.api._accesslog import AccessLog

        return AccessLog
    if name == "AuditLog":
        from tierstore.api._audit import AuditLog

        return AuditLog
    if name == "Metrics":
        from tierstore.api._metrics import Metrics

        return Metrics
    raise AttributeError(name)
