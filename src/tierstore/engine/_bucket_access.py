"""Bucket access settings: the bucket policy and the Block Public Access configuration, kept in
the bucket's properties (``props["policy"]``: the document as the client sent it;
``props["public_access_block"]``: the four flags), and a per-worker cache of those properties
that the authorizer reads on every request.

The cache holds a bucket's properties (or that it does not exist) for ``cache_ttl_s`` (1 s), so
a policy changed through any worker is enforced by every worker within about a second, as
``IdentityService`` does for keys and identity policies; on PostgreSQL, as long as its
notifications say (``watch``: tierstore/_watch.py). A change made through this worker is seen by
it at once.

Validation of the policy document (the IAM policy language, resources inside the bucket,
whether it is public) is the api layer's (``tierstore.iam``); this module stores what it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tierstore._watch import ConfigWatch
from tierstore.catalog import Catalog
from tierstore.engine._cached import NOT_CACHED, NotCached
from tierstore.errors import AccessDenied, NoSuchBucket, NoSuchBucketPolicy, NoSuchPublicAccessBlockConfiguration

__all__ = ["PUBLIC_ACCESS_BLOCK_FLAGS", "BucketAccessService"]

# The Block Public Access flags, in AWS's order (the XML and props["public_access_block"] keys).
PUBLIC_ACCESS_BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_CACHE_MAX = 4096
_NO_BUCKET: Mapping[str, Any] = {}


class BucketAccessService:
    """Get/put/delete a bucket's policy and Block Public Access flags; ``props`` is the cached
    read the authorizer uses."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        cache_ttl_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._props: dict[str, tuple[float, Mapping[str, Any] | None]] = {}
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep entries as ``watch`` says, dropped by its ``bucket`` changes."""
        self.watch = watch
        watch.on("bucket", self.forget)

    def __repr__(self) -> str:
        return f"BucketAccessService(cache_ttl_s={self.cache_ttl_s!r})"

    # --- the authorizer's hot path -------------------------------------------------------
    def cached(self, bucket: str) -> Mapping[str, Any] | NotCached | None:
        """``props``' answer while this worker holds it, else ``NOT_CACHED`` (the authorizer's
        synchronous hot path: no coroutine on a hit)."""
        hit = self._props.get(bucket)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        return NOT_CACHED

    async def props(self, bucket: str) -> Mapping[str, Any] | None:
        """The bucket's properties as of at most ``cache_ttl_s`` ago, or as ``watch`` says (None: no such bucket).
        Read-only: the same mapping is handed to every caller until it expires."""
        now = self._monotonic()
        hit = self._props.get(bucket)
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        try:
            found: Mapping[str, Any] | None = await self.catalog.bucket_props(bucket)
        except NoSuchBucket:
            found = None
        if self.watch.current(epoch):
            if len(self._props) >= _CACHE_MAX:
                self._props.clear()
            self._props[bucket] = (now + self.watch.lifetime(self.cache_ttl_s), found)
        return found

    def forget(self, bucket: str | None = None) -> None:
        """Drop this worker's cached properties (of one bucket, or all)."""
        if bucket is None:
            self._props.clear()
        else:
            self._props.pop(bucket, None)

    # --- bucket policy -------------------------------------------------------------------
    async def get_policy(self, bucket: str) -> str:
        """The stored policy document; ``NoSuchBucketPolicy`` when there is none."""
        policy = (await self.catalog.bucket_props(bucket)).get("policy")
        if not policy:
            raise NoSuchBucketPolicy(resource=bucket)
        return str(policy)

    async def put_policy(self, bucket: str, document: str, *, public: bool) -> None:
        """Store ``document`` (already validated). ``public``: whether it grants public access,
        refused (``AccessDenied``) while the bucket's BlockPublicPolicy is on — checked in the
        same transaction as the write, so a concurrent PutPublicAccessBlock cannot slip between."""

        def update(props: dict[str, Any]) -> dict[str, Any]:
            if public and (props.get("public_access_block") or {}).get("BlockPublicPolicy"):
                raise AccessDenied("Access Denied", resource=bucket)
            props["policy"] = document
            return props

        await self._update(bucket, update)

    async def delete_policy(self, bucket: str) -> None:
        """Remove the policy (none: nothing to do, as AWS)."""

        def update(props: dict[str, Any]) -> dict[str, Any]:
            props.pop("policy", None)
            return props

        await self._update(bucket, update)

    # --- Block Public Access -------------------------------------------------------------
    async def get_public_access_block(self, bucket: str) -> dict[str, bool]:
        """The four flags; ``NoSuchPublicAccessBlockConfiguration`` when none was put."""
        config = (await self.catalog.bucket_props(bucket)).get("public_access_block")
        if config is None:
            raise NoSuchPublicAccessBlockConfiguration(resource=bucket)
        return {flag: bool(config.get(flag)) for flag in PUBLIC_ACCESS_BLOCK_FLAGS}

    async def put_public_access_block(self, bucket: str, flags: Mapping[str, bool]) -> None:
        """Store all four flags (one missing from ``flags``: false). An existing policy stays,
        public or not, as AWS: BlockPublicPolicy refuses the next public one."""
        config = {flag: bool(flags.get(flag, False)) for flag in PUBLIC_ACCESS_BLOCK_FLAGS}

        def update(props: dict[str, Any]) -> dict[str, Any]:
            props["public_access_block"] = config
            return props

        await self._update(bucket, update)

    async def delete_public_access_block(self, bucket: str) -> None:
        def update(props: dict[str, Any]) -> dict[str, Any]:
            props.pop("public_access_block", None)
            return props

        await self._update(bucket, update)

    async def _update(self, bucket: str, update: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        try:
            await self.catalog.update_bucket_props(bucket, update)
        finally:
            self.forget(bucket)
