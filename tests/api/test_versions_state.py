"""S3 versioning as a Hypothesis state machine: random PutObject, DeleteObject (with and without
a version id: real versions, delete markers, the null version, ids that do not exist),
DeleteObjects, CopyObject (from any version, onto any key) and PutBucketVersioning
(Enabled/Suspended) through boto3 against the real server, checked after every step against a
dict model of S3's rules: GET of each key and of every version id, a paged ListObjectVersions
walk, and ListObjectsV2.

Every example gets a bucket of its own, deleted version by version at the end. The run is
seeded: set TIERSTORE_TEST_SEED to replay one (the seed is printed)."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.api.test_versions import Item, doc_order, purge, raw_versions
from tests.conftest import ServerProcess

SEED = int(os.environ.get("TIERSTORE_TEST_SEED", "20261122"))
KEYS = ("a", "b", "c/d")
PAGE_SIZE = 2  # small, so the ListObjectVersions walk crosses page boundaries inside one key
MISSING_VID = "f" * 24  # well-formed; issued ids start with the clock, so never this one

PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("TIERSTORE_STATE_SHRINK"):
    PHASES.append(Phase.shrink)

Pick = int | str | None  # an index into a key's versions, a literal version id, or the current version


@dataclass
class Version:
    version_id: str
    body: bytes | None  # None: a delete marker

    @property
    def is_marker(self) -> bool:
        return self.body is None


@dataclass
class Model:
    """S3 versioning, as a dict: each key's versions, newest first."""

    status: str | None = None
    keys: dict[str, list[Version]] = field(default_factory=lambda: {k: [] for k in KEYS})

    def write(self, key: str, version_id: str, body: bytes | None) -> None:
        """A PUT, copy or delete marker. Unless versioning is Enabled it is the null version,
        which replaces the key's previous null version wherever that was."""
        versions = self.keys[key]
        if self.status != "Enabled":
            assert version_id == "null"
            versions[:] = [v for v in versions if v.version_id != "null"]
        versions.insert(0, Version(version_id, body))

    def find(self, key: str, version_id: str) -> Version | None:
        return next((v for v in self.keys[key] if v.version_id == version_id), None)

    def resolve(self, key: str, pick: Pick) -> str | None:
        """The version id a pick names (None: the current version)."""
        if isinstance(pick, int):
            versions = self.keys[key]
            return versions[pick % len(versions)].version_id if versions else MISSING_VID
        return pick

    def listing(self) -> list[Item]:
        out = []
        for key in sorted(KEYS, key=str.encode):
            out += [
                Item("DeleteMarker" if v.is_marker else "Version", key, v.version_id, i == 0)
                for i, v in enumerate(self.keys[key])
            ]
        return out


def _code(exc: ClientError) -> tuple[str, int]:
    r = exc.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def _etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


# Mostly an existing version (index modulo the key's versions, newest first), sometimes the null
# version by name (present or not) or an id that does not exist.
picks = st.one_of(st.integers(0, 5), st.just("null"), st.just(MISSING_VID))


class VersioningMachine(RuleBasedStateMachine):
    s3: ClassVar[Any] = None
    server: ClassVar[ServerProcess | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.bucket = f"sm-{uuid.uuid4().hex[:16]}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.model = Model()
        self.writes = 0

    def teardown(self) -> None:
        purge(self.s3, self.bucket)

    def _body(self, key: str) -> bytes:
        self.writes += 1
        return f"{key}:{self.writes}:".encode() * (self.writes % 3)  # empty bodies too

    def _check_write_response(self, r: dict[str, Any]) -> str:
        """Writes answer a version id only when versioning is Enabled (S3's suspended sample
        response has none); the version is then the null version."""
        if self.model.status == "Enabled":
            vid = r["VersionId"]
            assert isinstance(vid, str)
            assert vid != "null"
            assert all(self.model.find(k, vid) is None for k in KEYS), "version id reused"
            return vid
        assert "VersionId" not in r, r.get("VersionId")
        return "null"

    # --- steps -----------------------------------------------------------------------------
    @initialize(
        status=st.sampled_from([None, "Enabled", "Suspended"]),
        keys=st.lists(st.sampled_from(KEYS), max_size=3),
    )
    def start(self, status: str | None, keys: list[str]) -> None:
        """Some objects written before versioning (null versions), then a versioning state."""
        for key in keys:
            self.put(key)
        if status is not None:
            self.set_versioning(status)

    @rule(status=st.sampled_from(["Enabled", "Suspended"]))
    def set_versioning(self, status: str) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": status})
        self.model.status = status

    @rule(key=st.sampled_from(KEYS))
    def put(self, key: str) -> None:
        body = self._body(key)
        r = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        assert r["ETag"] == _etag(body)
        self.model.write(key, self._check_write_response(r), body)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        r = self.s3.delete_object(Bucket=self.bucket, Key=key)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
        if self.model.status is None:  # never versioned: the object just goes
            assert "VersionId" not in r
            assert "DeleteMarker" not in r
            self.model.keys[key] = []
            return
        assert r["DeleteMarker"] is True
        vid = r["VersionId"]
        if self.model.status == "Suspended":
            assert vid == "null"
        else:
            assert vid != "null"
        self.model.write(key, vid, None)

    def _remove(self, key: str, vid: str) -> bool:
        """The model side of deleting one version by id; True if it was a delete marker."""
        target = self.model.find(key, vid)
        self.model.keys[key] = [v for v in self.model.keys[key] if v.version_id != vid]
        return target is not None and target.is_marker

    @rule(key=st.sampled_from(KEYS), pick=picks)
    def delete_version(self, key: str, pick: int | str) -> None:
        vid = self.model.resolve(key, pick)
        assert vid is not None
        r = self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert r["VersionId"] == vid
        was_marker = self._remove(key, vid)
        assert r.get("DeleteMarker", False) is was_marker

    @rule(
        entries=st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), picks)), min_size=1, max_size=4),
    )
    def delete_objects(self, entries: list[tuple[str, Pick]]) -> None:
        # One entry per key: S3 does not define the order of a batch that names a key twice.
        chosen = {key: self.model.resolve(key, pick) for key, pick in entries}
        objects = [{"Key": k, **({"VersionId": v} if v is not None else {})} for k, v in chosen.items()]
        r = self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
        assert "Errors" not in r, r["Errors"]
        results = {d["Key"]: d for d in r["Deleted"]}
        assert set(results) == set(chosen)
        for key, vid in chosen.items():
            d = results[key]
            if vid is not None:
                assert d["VersionId"] == vid
                if self._remove(key, vid):
                    assert d["DeleteMarker"] is True
                    assert d["DeleteMarkerVersionId"] == vid
                else:
                    assert "DeleteMarker" not in d
            elif self.model.status is None:
                assert "DeleteMarker" not in d
                assert "VersionId" not in d
                self.model.keys[key] = []
            else:
                assert d["DeleteMarker"] is True
                marker = d["DeleteMarkerVersionId"]
                assert (marker == "null") is (self.model.status == "Suspended")
                self.model.write(key, marker, None)

    @rule(src=st.sampled_from(KEYS), dst=st.sampled_from(KEYS), pick=st.one_of(st.none(), picks))
    def copy(self, src: str, dst: str, pick: Pick) -> None:
        vid = self.model.resolve(src, pick)
        source: dict[str, str] = {"Bucket": self.bucket, "Key": src}
        if vid is not None:
            source["VersionId"] = vid
        if vid is None:
            current = self.model.keys[src][0] if self.model.keys[src] else None
            if current is None or current.is_marker:
                expected_error: tuple[str, int] | None = ("NoSuchKey", 404)
            elif src == dst:
                expected_error = ("InvalidRequest", 400)  # onto itself, nothing changed
            else:
                expected_error = None
            found = current
        else:
            found = self.model.find(src, vid)
            if found is None:
                expected_error = ("NoSuchVersion", 404)
            elif found.is_marker:
                expected_error = ("InvalidRequest", 400)  # a delete marker cannot be a copy source
            else:
                expected_error = None
        if expected_error is not None:
            with pytest.raises(ClientError) as exc:
                self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource=source)
            assert _code(exc.value) == expected_error
            return
        assert found is not None
        assert found.body is not None
        r = self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource=source)
        assert r["CopyObjectResult"]["ETag"] == _etag(found.body)
        if vid is not None:
            assert r["CopySourceVersionId"] == vid
        self.model.write(dst, self._check_write_response(r), found.body)

    # --- checks ----------------------------------------------------------------------------
    def _null_header(self) -> str | None:
        """What a read of the null version answers as x-amz-version-id."""
        return "null" if self.model.status is not None else None

    @invariant()
    def reads_match(self) -> None:
        for key, versions in self.model.keys.items():
            current = versions[0] if versions else None
            if current is None or current.is_marker:
                with pytest.raises(ClientError) as exc:
                    self.s3.get_object(Bucket=self.bucket, Key=key)
                assert _code(exc.value) == ("NoSuchKey", 404)
                headers = exc.value.response["ResponseMetadata"]["HTTPHeaders"]
                if current is None:
                    assert "x-amz-delete-marker" not in headers
                else:
                    assert headers["x-amz-delete-marker"] == "true"
                    assert headers["x-amz-version-id"] == current.version_id
            else:
                got = self.s3.get_object(Bucket=self.bucket, Key=key)
                assert got["Body"].read() == current.body
                want = current.version_id if current.version_id != "null" else self._null_header()
                assert got.get("VersionId") == want
            for v in versions:
                if v.is_marker:
                    with pytest.raises(ClientError) as exc:
                        self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=v.version_id)
                    assert _code(exc.value) == ("MethodNotAllowed", 405)
                    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
                else:
                    got = self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=v.version_id)
                    assert got["Body"].read() == v.body
                    assert got.get("VersionId") == (v.version_id if v.version_id != "null" else self._null_header())
            if self.model.find(key, "null") is None:
                with pytest.raises(ClientError) as exc:
                    self.s3.get_object(Bucket=self.bucket, Key=key, VersionId="null")
                assert _code(exc.value) == ("NoSuchVersion", 404)

    @invariant()
    def listings_match(self) -> None:
        assert self.server is not None
        model = self.model.listing()
        params: dict[str, object] = {"max-keys": PAGE_SIZE}
        pos = 0
        while True:
            page, fields = raw_versions(self.server, self.bucket, **params)
            want = model[pos : pos + PAGE_SIZE]
            assert page == doc_order(want), (pos, fields)
            pos += len(want)
            if fields["IsTruncated"] == "false":
                assert pos == len(model)
                break
            assert pos < len(model)
            params["key-marker"] = fields["NextKeyMarker"]
            params["version-id-marker"] = fields["NextVersionIdMarker"]
        live = {k: vs[0] for k, vs in self.model.keys.items() if vs and not vs[0].is_marker}
        r = self.s3.list_objects_v2(Bucket=self.bucket)
        got = [(o["Key"], o["ETag"], o["Size"]) for o in r.get("Contents", [])]
        assert got == [
            (k, _etag(v.body or b""), len(v.body or b""))
            for k, v in sorted(live.items(), key=lambda kv: kv[0].encode())
        ]

    @precondition(lambda self: self.model.status is not None)
    @invariant()
    def status_matches(self) -> None:
        assert self.s3.get_bucket_versioning(Bucket=self.bucket)["Status"] == self.model.status


seed(SEED)(VersioningMachine)


def test_versioning_state_machine(s3: Any, server: ServerProcess) -> None:
    print(f"test_versions_state seed: {SEED} (replay with TIERSTORE_TEST_SEED={SEED})")
    VersioningMachine.s3 = s3
    VersioningMachine.server = server
    run_state_machine_as_test(
        VersioningMachine,
        settings=settings(
            max_examples=int(os.environ.get("TIERSTORE_STATE_EXAMPLES", "60")),
            stateful_step_count=30,
            deadline=None,
            database=None,
            # Every step is checked, so the failing step is the last one printed. Shrinking
            # against a real server takes minutes (past the pytest timeout); opt in to it.
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
