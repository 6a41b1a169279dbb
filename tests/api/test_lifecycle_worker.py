"""The lifecycle worker against a real server whose lifecycle day is one second
(engine/_lifecycle_worker.py, catalog/sqlite/_lifecycle.py; docs/tiers.md "Lifecycle").

Each test writes objects, waits (polling, with a generous deadline, never a timed assertion) for
the state the worker must produce, and checks that what the rules spare is still there: objects
a filter leaves out, locked and held versions, objects whose rule was deleted. Those are written
first, so they are older than the objects whose expiry the test waits for."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client

DEADLINE_S = 90.0  # a loaded 2-core machine; the day is 1 s and the worker looks every 0.25 s


@pytest.fixture(scope="module")
def server1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("lcw")) / "data", extra_args=["--lifecycle-day-seconds", "1"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3(server1: ServerProcess) -> Any:
    return make_client(server1.endpoint)


def new_bucket(s3: Any, *, versioned: bool = False, locked: bool = False) -> str:
    name = f"lc-{uuid.uuid4().hex[:12]}"
    if locked:
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def put_rules(s3: Any, bucket: str, *rules: dict[str, Any]) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [{"Status": "Enabled", **r} for r in rules]},
    )


def wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.2)


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def versions(s3: Any, bucket: str, key: str) -> list[tuple[str, bool, bool]]:
    """(version id, is a delete marker, is latest) of ``key``, newest first."""
    page = s3.list_object_versions(Bucket=bucket, Prefix=key)
    out = [
        (v["VersionId"], False, v["IsLatest"], v["LastModified"]) for v in page.get("Versions", []) if v["Key"] == key
    ]
    out += [
        (v["VersionId"], True, v["IsLatest"], v["LastModified"])
        for v in page.get("DeleteMarkers", [])
        if v["Key"] == key
    ]
    out.sort(key=lambda v: (not v[2], -v[3].timestamp()))
    return [(vid, dm, latest) for vid, dm, latest, _ in out]


def test_current_objects_expire_by_days_and_the_prefix_filter_is_respected(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(s3, b, {"ID": "d", "Filter": {"Prefix": "exp/"}, "Expiration": {"Days": 1}})
    s3.put_object(Bucket=b, Key="keep/a", Body=b"kept")
    s3.put_object(Bucket=b, Key="exp/a", Body=b"gone")
    wait_for("exp/a expired", lambda: not exists(s3, b, "exp/a"))
    assert exists(s3, b, "keep/a")
    assert s3.list_object_versions(Bucket=b).get("DeleteMarkers", []) == []  # unversioned: simply deleted


def test_an_expiration_date_in_the_past_expires_at_once(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(
        s3,
        b,
        {"ID": "date", "Filter": {"Prefix": "d/"}, "Expiration": {"Date": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}},
    )
    s3.put_object(Bucket=b, Key="other", Body=b"x")
    s3.put_object(Bucket=b, Key="d/x", Body=b"x")
    wait_for("d/x expired", lambda: not exists(s3, b, "d/x"))
    assert exists(s3, b, "other")


def test_on_a_versioned_bucket_expiration_adds_a_delete_marker(s3: Any) -> None:
    b = new_bucket(s3, versioned=True)
    put_rules(s3, b, {"ID": "d", "Filter": {}, "Expiration": {"Days": 1}})
    vid = s3.put_object(Bucket=b, Key="k", Body=b"v1")["VersionId"]
    wait_for("a delete marker on k", lambda: versions(s3, b, "k")[0][1])
    found = versions(s3, b, "k")
    assert len(found) == 2 and found[1] == (vid, False, False)  # the data is still there, noncurrent
    assert s3.get_object(Bucket=b, Key="k", VersionId=vid)["Body"].read() == b"v1"


def test_noncurrent_versions_expire_keeping_the_newer_noncurrent_ones(s3: Any) -> None:
    b = new_bucket(s3, versioned=True)
    put_rules(
        s3, b,
        {"ID": "nc", "Filter": {}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
    )  # fmt: skip
    ids = [s3.put_object(Bucket=b, Key="k", Body=f"v{i}".encode())["VersionId"] for i in range(4)]
    # Current: v3; noncurrent v2 is kept (one newer noncurrent); v1 and v0 go.
    wait_for("v0 and v1 expired", lambda: [v[0] for v in versions(s3, b, "k")] == [ids[3], ids[2]])


def test_a_delete_marker_left_alone_is_removed(s3: Any) -> None:
    b = new_bucket(s3, versioned=True)
    put_rules(s3, b, {"ID": "m", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}})
    vid = s3.put_object(Bucket=b, Key="k", Body=b"x")["VersionId"]
    s3.put_object(Bucket=b, Key="kept", Body=b"x")
    s3.delete_object(Bucket=b, Key="kept")  # a marker with a version under it: not expired
    s3.delete_object(Bucket=b, Key="k")
    s3.delete_object(Bucket=b, Key="k", VersionId=vid)  # now the marker is k's only version
    wait_for("k's marker removed", lambda: versions(s3, b, "k") == [])
    assert [v[1] for v in versions(s3, b, "kept")] == [True, False]


def test_incomplete_uploads_are_aborted(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(
        s3, b, {"ID": "u", "Filter": {"Prefix": "up/"}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    )
    kept = s3.create_multipart_upload(Bucket=b, Key="other/y")["UploadId"]
    gone = s3.create_multipart_upload(Bucket=b, Key="up/x")["UploadId"]
    s3.upload_part(Bucket=b, Key="up/x", UploadId=gone, PartNumber=1, Body=b"p" * 1024)

    def uploads() -> set[str]:
        return {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=b).get("Uploads", [])}

    wait_for("up/x aborted", lambda: gone not in uploads())
    assert uploads() == {kept}
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=b, Key="up/x", UploadId=gone)
    assert err.value.response["Error"]["Code"] == "NoSuchUpload"


def test_tag_size_and_and_filters_are_respected(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(
        s3, b,
        {"ID": "tag", "Filter": {"Tag": {"Key": "tmp", "Value": "yes"}}, "Expiration": {"Days": 1}},
        {"ID": "big", "Filter": {"ObjectSizeGreaterThan": 100}, "Expiration": {"Days": 1}},
        {"ID": "and", "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "x", "Value": "1"}]}},
         "Expiration": {"Days": 1}},
    )  # fmt: skip
    spared = {
        "tag-other": ("tmp=no", b"s"),
        "small": ("", b"s" * 100),
        "a/untagged": ("", b"s"),
        "b/tagged": ("x=1", b"s"),
    }
    doomed = {"tagged": ("tmp=yes", b"s"), "big": ("", b"s" * 101), "a/tagged": ("x=1", b"s")}
    for key, (tagging, body) in [*spared.items(), *doomed.items()]:
        s3.put_object(Bucket=b, Key=key, Body=body, Tagging=tagging)
    for key in doomed:
        wait_for(f"{key} expired", lambda key=key: not exists(s3, b, key))  # type: ignore[misc]
    assert all(exists(s3, b, key) for key in spared)


def test_retagging_an_object_makes_it_match(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(s3, b, {"ID": "tag", "Filter": {"Tag": {"Key": "tmp", "Value": "yes"}}, "Expiration": {"Days": 1}})
    s3.put_object(Bucket=b, Key="k", Body=b"x")
    s3.put_object_tagging(Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "tmp", "Value": "yes"}]})
    wait_for("k expired once tagged", lambda: not exists(s3, b, "k"))


def test_locked_and_held_objects_survive_their_expiration(s3: Any) -> None:
    b = new_bucket(s3, locked=True)
    put_rules(s3, b, {"ID": "d", "Filter": {}, "Expiration": {"Days": 1}})
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    s3.put_object(Bucket=b, Key="locked", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    s3.put_object(Bucket=b, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON")
    s3.put_object(Bucket=b, Key="free", Body=b"x")
    wait_for("free expired", lambda: not exists(s3, b, "free"))
    assert exists(s3, b, "locked") and exists(s3, b, "held")
    assert [v[1] for v in versions(s3, b, "locked")] == [False]
    assert [v[1] for v in versions(s3, b, "held")] == [False]
    vid = versions(s3, b, "free")[1][0]
    s3.delete_object(Bucket=b, Key="free", VersionId=vid)  # not locked: the bucket can be emptied


def test_a_rule_put_after_the_objects_were_written_takes_effect(s3: Any) -> None:
    b = new_bucket(s3)
    for i in range(5):
        s3.put_object(Bucket=b, Key=f"late/{i}", Body=b"x")
    s3.put_object(Bucket=b, Key="early", Body=b"x")
    put_rules(s3, b, {"ID": "late", "Filter": {"Prefix": "late/"}, "Expiration": {"Days": 1}})
    wait_for("late/* expired", lambda: s3.list_objects_v2(Bucket=b, Prefix="late/")["KeyCount"] == 0)
    assert exists(s3, b, "early")


def test_a_changed_rule_replaces_the_pending_actions(s3: Any) -> None:
    b = new_bucket(s3)
    put_rules(s3, b, {"ID": "old", "Filter": {"Prefix": "old/"}, "Expiration": {"Days": 2}})
    s3.put_object(Bucket=b, Key="old/k", Body=b"x")
    s3.put_object(Bucket=b, Key="new/k", Body=b"x")
    put_rules(s3, b, {"ID": "new", "Filter": {"Prefix": "new/"}, "Expiration": {"Days": 2}})
    wait_for("new/k expired", lambda: not exists(s3, b, "new/k"))
    assert exists(s3, b, "old/k")


def test_a_deleted_rule_stops_pending_actions(s3: Any) -> None:
    stopped, going = new_bucket(s3), new_bucket(s3)
    rule = {"ID": "d", "Filter": {}, "Expiration": {"Days": 3}}
    put_rules(s3, stopped, rule)
    put_rules(s3, going, rule)
    s3.put_object(Bucket=stopped, Key="k", Body=b"x")
    s3.delete_bucket_lifecycle(Bucket=stopped)
    s3.put_object(Bucket=going, Key="k", Body=b"x")  # due after stopped/k would have been
    wait_for("going/k expired", lambda: not exists(s3, going, "k"))
    assert exists(s3, stopped, "k")


def test_actions_and_due_rows_are_in_the_metrics(s3: Any, server1: ServerProcess) -> None:
    from tests.api.test_metrics import scrape, value

    b = new_bucket(s3)
    put_rules(s3, b, {"ID": "d", "Filter": {"Prefix": "m/"}, "Expiration": {"Days": 1000}})
    s3.put_object(Bucket=b, Key="m/later", Body=b"x")  # a row, due in 1,000 s
    put_rules(s3, b, {"ID": "d", "Filter": {"Prefix": "m/"}, "Expiration": {"Days": 1}})
    wait_for("m/later expired under the new rule", lambda: not exists(s3, b, "m/later"))
    samples = scrape(server1)
    assert value(samples, "tierstore_lifecycle_actions_total", action="expire") >= 1
    assert ("tierstore_lifecycle_due_rows", frozenset()) in samples
