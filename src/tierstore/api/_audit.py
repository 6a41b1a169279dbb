"""The audit log: who asked for what, and what the authorizer decided (docs/security.md "Audit log").

One JSON line per request that reached the dispatcher, allowed or denied, refused by the
authenticator too: the time, the request id, the principal (access key, the user, the parent
user of a service account, the role session of temporary credentials), the source IP, the
action (IAM action and S3 API name), the resource ARN, the decision and the policy statement
that made it, the HTTP status and the error code. Like the access log (``_accesslog``), nothing
of the request's headers or query string is copied: no secret, signature, session token or
presigned query can reach it.

``AuditLog`` reuses the access log's buffer (``AccessLog``: lines gathered in memory, written
out every metrics tick) and adds rotation by size that holds with several worker processes: all
workers append to the same file, each flush under an exclusive ``flock`` on ``FILE.lock``.
Under the lock a worker notices that another one rotated (the path's inode changed) and reopens,
rotates when the next line would take the file past ``max_bytes`` (``FILE.N-1`` -> ``FILE.N``
..., ``FILE`` -> ``FILE.1``, the oldest dropped), then writes. So every file stays within
``max_bytes`` (a single line longer than that gets a file of its own) and no line is lost or
cut at a rotation.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from tierstore.api._accesslog import AccessLog, Exchange, iso_time, json_str

__all__ = ["DEFAULT_BACKUPS", "DEFAULT_MAX_BYTES", "AuditLog", "audit_line"]

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_BACKUPS = 5
_ARN_CHARS = 2048  # arn:aws:s3::: + a bucket + a key of up to 1024 bytes: never cut
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class AuditLog(AccessLog):
    """``AccessLog``'s buffer, flushed into a size-rotated file shared by the workers."""

    def __init__(self, path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes <= 0:
            raise ValueError("the audit log's max bytes must be positive")
        if backups < 0:
            raise ValueError("the audit log's backups must be 0 or more")
        super().__init__(os.open(path, _FLAGS, 0o600))  # who did what: not for every local user
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        with self._locked():
            self._follow()
            size = os.fstat(self._fd).st_size
            chunk: list[bytes] = []
            for line in lines:
                data = line.encode() + b"\n"
                if size and size + len(data) > self.max_bytes:
                    self._write(b"".join(chunk))
                    chunk = []
                    self._rotate()
                    size = 0
                chunk.append(data)
                size += len(data)
            self._write(b"".join(chunk))

    def close(self) -> None:
        super().close()
        os.close(self._lock_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _follow(self) -> None:
        """Reopen the path when another worker rotated the file this one holds (or it is gone)."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        held = os.fstat(self._fd)
        if current is None or (current.st_ino, current.st_dev) != (held.st_ino, held.st_dev):
            self._reopen()

    def _rotate(self) -> None:
        """FILE.N-1 -> FILE.N, ..., FILE -> FILE.1 (the lock is held); with no backups, truncate."""
        if self.backups == 0:
            os.truncate(self.path, 0)
            return
        for n in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._reopen()

    def _reopen(self) -> None:
        fd = os.open(self.path, _FLAGS, 0o600)
        os.close(self._fd)
        self._fd = fd


def audit_line(
    x: Exchange,
    *,
    request_id: str,
    source_ip: str,
    access_key: str,
    principal: Any,
    action: str,
    api: str,
    resource: str,
    status: int,
    error_code: str,
    decision: str,
    policy: str | None,
) -> str:
    """One JSON object (the keys in this order). ``principal`` is the identity the key acts as:
    ``engine.Principal`` (``kind`` ``root``/``user``/``service``, ``user_name``), or for
    temporary credentials an ``engine.Session`` (``kind`` ``role``/``user``/``root``, ``name``,
    ``arn``: a role session's ``role_session`` is its assumed-role ARN), or None when the request
    did not authenticate."""
    kind = getattr(principal, "kind", "") or ""
    if hasattr(principal, "session_name"):  # an STS session (engine.Session)
        name = getattr(principal, "name", None)
        session = getattr(principal, "arn", None) if kind == "role" else None
    else:
        name = getattr(principal, "user_name", None)
        session = None
    user = name if kind == "user" else None
    parent = name if kind == "service" else None
    return (
        f'{{"time": "{iso_time(x.wall_started)}", "request_id": "{request_id}", "source_ip": "{source_ip}", '
        f'"access_key": {json_str(access_key)}, "principal_type": {json_str(kind)}, "user": {json_str(user)}, '
        f'"parent_user": {json_str(parent)}, "role_session": {json_str(session)}, '
        f'"action": {json_str(action)}, "api": "{api}", "resource": {json_str(resource, _ARN_CHARS)}, '
        f'"decision": "{decision}", "policy": {json_str(policy)}, "status": {int(status)}, '
        f'"error": "{error_code}"}}'
    )
