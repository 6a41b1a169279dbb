"""The registry of remote tiers (docs/tiers.md "Tiers"): ``TierService`` (``ObjectService.tiers``).

A tier is a bucket (and prefix) on an S3-compatible service, named by a storage class
(``[A-Z][A-Z0-9_]{0,31}``, never ``STANDARD``: that is the local drives). ``add`` validates the
name and the fields, refuses endpoints the SSRF guard refuses (``blob.check_endpoint``: cloud
metadata and link-local always; loopback, private and CGNAT unless ``allow_private``), seals the
secret key under the server master key bound to the tier's name, and stores the row. Listings
(``list``, ``status``) never carry a secret: whether keys are set, and the access key id.
``get_config`` opens the credentials for the blob store factory (internal use only; its repr
hides them). ``remove`` is refused while a blob, an outbox entry or an upload names the tier.

``class_names()`` is on the hot paths of PUT (``x-amz-storage-class``) and lifecycle
validation: a per-process set of tier names, re-read from the catalog at most every
``cache_ttl_s`` (1 s), so a tier added through one worker is a storage class in every worker
within about a second (at once in the worker that added it; on PostgreSQL the names are kept
until a ``tier`` notification, tierstore/_watch.py).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tierstore._watch import ConfigWatch
from tierstore.blob import check_endpoint
from tierstore.catalog import Catalog, TierProgress, TierRecord, TierUsage
from tierstore.crypto import MasterKey, SealedSecretError
from tierstore.errors import DeleteConflict, EntityAlreadyExists, InternalError, InvalidArgument, NoSuchEntity

__all__ = [
    "LOCAL_CLASS",
    "NoSuchTier",
    "TierAlreadyExists",
    "TierConfig",
    "TierInUse",
    "TierInfo",
    "TierProgress",
    "TierService",
    "TierSpec",
    "TierStatus",
    "check_tier_name",
]

log = logging.getLogger("tierstore.tiers")

LOCAL_CLASS = "STANDARD"  # the local drives: never a tier
_TIER_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")  # lenient: other services' rules differ
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_ACCESS_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no space
_MAX_ENDPOINT = 2048
_MAX_PREFIX = 512
_MAX_SECRET = 256


class NoSuchTier(NoSuchEntity):
    """The tier does not exist."""


class TierAlreadyExists(EntityAlreadyExists):
    """A tier of that name already exists."""


class TierInUse(DeleteConflict):
    """The tier still holds data (blobs, objects waiting to be deleted, uploads): it cannot be removed."""


def check_tier_name(name: object) -> str:
    """``name`` if it may name a tier (a storage class); ``InvalidArgument`` otherwise."""
    if not isinstance(name, str) or not _TIER_NAME.fullmatch(name):
        shown = repr(name)[:40]
        raise InvalidArgument(
            f"A tier name is a storage class: an uppercase letter, then up to 31 of A-Z, 0-9, _ (got {shown})."
        )
    if name == LOCAL_CLASS:
        raise InvalidArgument(f"{LOCAL_CLASS} is the local drives' storage class; it cannot name a tier.")
    return name


def _secret_context(name: str) -> bytes:
    """What a tier's sealed secret is bound to: its name, in a namespace of its own (an access
    key's secret is bound to its bare key id, which a tier name could equal)."""
    return b"tier\x00" + name.encode()


@dataclass(frozen=True, slots=True)
class TierSpec:
    """What ``add`` is given (validated there)."""

    name: str
    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    restore_required: bool = False
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class TierInfo:
    """A tier as listings show it: never its secret (``keys_set``: whether it has one)."""

    name: str
    endpoint: str
    bucket: str
    prefix: str
    region: str
    restore_required: bool
    allow_private: bool
    access_key_id: str | None
    keys_set: bool
    created_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "restore_required": self.restore_required,
            "allow_private": self.allow_private,
            "access_key_id": self.access_key_id,
            "keys_set": self.keys_set,
            "created_ns": self.created_ns,
        }


@dataclass(frozen=True, slots=True)
class TierConfig(TierInfo):
    """A tier with its opened credentials, for the blob store factory only (``secret_key`` None:
    the server process's AWS credential chain). Its repr and ``to_dict`` never show the secret."""

    secret_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TierStatus:
    """What one tier holds by the catalog (blobs and their bytes, uploads in progress in its
    class) and the movers' progress (``TierProgress``: bytes and objects moved, errors, the last
    error and its time, and the backlog: transitions due, writes waiting for the tier, outbox)."""

    name: str
    blobs: int
    bytes: int
    outbox: int
    uploads: int
    progress: TierProgress = field(default_factory=TierProgress)

    def to_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "name": self.name,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "outbox": self.outbox,
            "uploads": self.uploads,
            "backlog": {"total": p.backlog, "due": p.due, "pending": p.pending, "outbox": p.outbox},
            "moved_bytes": p.moved_bytes,
            "moved_objects": p.moved_objects,
            "errors": p.errors,
            "last_error": p.last_error,
            "last_error_ns": p.last_error_ns,
        }


def _info(rec: TierRecord) -> TierInfo:
    c = rec.config
    return TierInfo(
        rec.name,
        c["endpoint"],
        c["bucket"],
        c.get("prefix", ""),
        c.get("region", "us-east-1"),
        bool(c.get("restore_required", False)),
        bool(c.get("allow_private", False)),
        c.get("access_key_id"),
        rec.sealed_secret is not None,
        rec.created_ns,
    )


def _check_fields(spec: TierSpec) -> None:
    """``InvalidArgument`` for a field ``add`` cannot take (the name is checked before)."""
    if not isinstance(spec.endpoint, str) or not spec.endpoint or len(spec.endpoint) > _MAX_ENDPOINT:
        raise InvalidArgument(f"A tier needs an endpoint URL of at most {_MAX_ENDPOINT} characters.")
    if "?" in spec.endpoint or "#" in spec.endpoint or any(ch.isspace() for ch in spec.endpoint):
        raise InvalidArgument("The tier endpoint is a base URL: no query, fragment or spaces.")
    if not isinstance(spec.bucket, str) or not _BUCKET.fullmatch(spec.bucket):
        raise InvalidArgument("The tier bucket must be 2 to 255 of A-Z, a-z, 0-9, '.', '_', '-'.")
    prefix = spec.prefix
    if not isinstance(prefix, str) or len(prefix) > _MAX_PREFIX or prefix.startswith("/"):
        raise InvalidArgument(f"The tier prefix is at most {_MAX_PREFIX} characters and does not start with '/'.")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in prefix):
        raise InvalidArgument("The tier prefix must not contain control characters.")
    if not isinstance(spec.region, str) or not _REGION.fullmatch(spec.region):
        raise InvalidArgument("The tier region is 1 to 32 of a-z, 0-9, '-'.")
    has_id, has_secret = spec.access_key_id is not None, spec.secret_key is not None
    if has_id != has_secret:
        raise InvalidArgument("Give both the tier's access key id and its secret key, or neither.")
    if spec.access_key_id is not None and not _ACCESS_KEY.fullmatch(spec.access_key_id):
        raise InvalidArgument("The tier access key id is 1 to 128 printable ASCII characters.")
    secret = spec.secret_key
    if secret is not None and (
        not secret or len(secret) > _MAX_SECRET or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in secret)
    ):  # the message never shows the secret
        raise InvalidArgument(f"The tier secret key is 1 to {_MAX_SECRET} printable characters.")


class TierService:
    """Add, list, remove tiers and report what they hold (module docstring). ``master_key``:
    seals and opens the tiers' credentials (None: an embedded engine that cannot, e.g.
    ``server.open_service`` on a store never served; then adding a tier with keys or opening
    them is an ``InternalError``). ``check``: the SSRF guard (``blob.check_endpoint``)."""

    def __init__(
        self,
        catalog: Catalog,
        master_key: MasterKey | None = None,
        *,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        check: Callable[..., None] = check_endpoint,
    ) -> None:
        self.catalog = catalog
        self._key = master_key
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._monotonic = monotonic
        self._check = check
        self._names: tuple[float, frozenset[str]] | None = None
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep the tier names as ``watch`` says (tierstore/_watch.py), dropped by its ``tier`` changes."""
        self.watch = watch
        watch.on("tier", lambda _name: self.forget())

    def __repr__(self) -> str:
        return f"TierService(master_key={self._key!r}, cache_ttl_s={self.cache_ttl_s!r})"

    # --- the hot path ----------------------------------------------------------------------
    async def class_names(self) -> frozenset[str]:
        """The storage classes that are tiers, as of at most ``cache_ttl_s`` ago."""
        now = self._monotonic()
        hit = self._names
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        names = frozenset(await self.catalog.tier_names())
        if self.watch.current(epoch):
            self._names = (now + self.watch.lifetime(self.cache_ttl_s), names)
        return names

    def forget(self) -> None:
        """Drop this process's cached tier names."""
        self._names = None

    # --- admin -----------------------------------------------------------------------------
    async def add(self, spec: TierSpec) -> TierInfo:
        """Register a tier (module docstring); ``TierAlreadyExists`` when the name is taken."""
        name = check_tier_name(spec.name)
        _check_fields(spec)
        endpoint = spec.endpoint.rstrip("/")
        # getaddrinfo blocks: off the event loop. EndpointRefused is an InvalidArgument.
        await asyncio.to_thread(self._check, endpoint, allow_private=spec.allow_private)
        sealed = None
        if spec.secret_key is not None:
            if self._key is None:
                raise InternalError("This server has no master key to seal the tier's credentials.")
            sealed = self._key.seal(spec.secret_key.encode(), context=_secret_context(name))
        config: dict[str, Any] = {
            "endpoint": endpoint,
            "bucket": spec.bucket,
            "prefix": spec.prefix,
            "region": spec.region,
            "restore_required": spec.restore_required,
            "allow_private": spec.allow_private,
            "access_key_id": spec.access_key_id,
        }
        record = TierRecord(name, config, sealed, int(self._clock() * 1e9))
        if not await self.catalog.tier_create(record):
            raise TierAlreadyExists(f"A tier named {name} already exists.")
        self.forget()
        log.info("tier %s added: %s bucket %s (keys %s)", name, endpoint, spec.bucket, "set" if sealed else "not set")
        return _info(record)

    async def list(self) -> list[TierInfo]:
        return [_info(r) for r in await self.catalog.tier_list()]

    async def get(self, name: str) -> TierInfo:
        rec = await self.catalog.tier_get(check_tier_name(name))
        if rec is None:
            raise NoSuchTier(f"There is no tier named {name}.")
        return _info(rec)

    async def get_config(self, name: str) -> TierConfig:
        """The tier with its credentials opened: for the blob store factory, never for an answer."""
        rec = await self.catalog.tier_get(name)
        if rec is None:
            raise NoSuchTier(f"There is no tier named {name}.")
        info = _info(rec)
        secret = None
        if rec.sealed_secret is not None:
            if self._key is None:
                raise InternalError(f"This server has no master key to open the credentials of tier {name}.")
            try:
                secret = self._key.open_sealed(rec.sealed_secret, context=_secret_context(name)).decode()
            except SealedSecretError as exc:
                log.warning("tier %s: its sealed credentials do not open: %s", name, exc)
                raise InternalError(f"The credentials of tier {name} do not open (see the server log).") from None
        return TierConfig(**dataclasses.asdict(info), secret_key=secret)

    async def remove(self, name: str) -> None:
        """Remove a tier that holds nothing; ``TierInUse`` (what it holds) otherwise."""
        outcome = await self.catalog.tier_delete(check_tier_name(name))
        if outcome == "missing":
            raise NoSuchTier(f"There is no tier named {name}.")
        if isinstance(outcome, TierUsage):
            raise TierInUse(
                f"Tier {name} is in use: {outcome.blobs} blobs ({outcome.bytes} bytes), {outcome.outbox} remote "
                f"objects waiting to be deleted, {outcome.uploads} uploads in progress name it. Move the data "
                "back (or let the outbox drain) first."
            )
        self.forget()
        log.info("tier %s removed", name)

    async def status(self, name: str | None = None) -> builtins.list[TierStatus]:
        """What each tier (or the one named) holds by the catalog, and the movers' progress."""
        names = [(await self.get(name)).name] if name is not None else await self.catalog.tier_names()
        now_ns = int(self._clock() * 1e9)
        out = []
        for n in names:
            u = await self.catalog.tier_usage(n)
            progress = await self.catalog.tier_progress(n, now_ns)
            out.append(TierStatus(n, u.blobs, u.bytes, u.outbox, u.uploads, progress))
        return out
