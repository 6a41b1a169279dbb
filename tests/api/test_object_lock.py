"""Object lock (WORM) through boto3 against a real server: lock buckets, default retention,
retention and legal-hold headers, the COMPLIANCE / GOVERNANCE transition rules, enforcement on
DeleteObject(s), and a retention that really expires."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def future(seconds: float) -> dt.datetime:
    """A whole-second time: botocore sends x-amz-object-lock-retain-until-date without a fraction."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).replace(microsecond=0)


def _empty(s3: Any, bucket: str) -> None:
    """Remove every version that may go (GOVERNANCE with the bypass; legal holds lifted)."""
    with contextlib.suppress(ClientError):
        listing = s3.list_object_versions(Bucket=bucket)
        for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            with contextlib.suppress(ClientError):
                s3.put_object_legal_hold(
                    Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], LegalHold={"Status": "OFF"}
                )
            with contextlib.suppress(ClientError):
                s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)
        s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def locked(s3: Any) -> Iterator[str]:
    """A bucket created with object lock. COMPLIANCE versions outlive the test (by design)."""
    name = f"l-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    _empty(s3, name)


def put_locked(s3: Any, bucket: str, key: str, mode: str, seconds: float, body: bytes = b"data") -> str:
    r = s3.put_object(Bucket=bucket, Key=key, Body=body, ObjectLockMode=mode, ObjectLockRetainUntilDate=future(seconds))
    return str(r["VersionId"])


# --- lock buckets -----------------------------------------------------------------------
def test_lock_bucket_is_versioned_and_cannot_be_suspended(s3: Any, locked: str) -> None:
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"
    conf = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert conf == {"ObjectLockEnabled": "Enabled"}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Suspended"})
    assert _err(exc) == ("InvalidBucketState", 409)
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"


def test_bucket_without_lock(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert _err(exc) == ("ObjectLockConfigurationNotFoundError", 404)
    conf = {"ObjectLockEnabled": "Enabled"}
    with pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
    assert _err(exc) == ("InvalidBucketState", 409)
    # As S3 does since 2023: a bucket with versioning Enabled may turn object lock on later.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == conf
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert _err(exc) == ("InvalidBucketState", 409)
    v = s3.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    s3.put_object_legal_hold(Bucket=bucket, Key="k", VersionId=v, LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v)


def test_lock_headers_on_a_bucket_without_lock(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": future(3600)}
    calls = [
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", **lock),
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="OFF"),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="k", **lock),
        lambda: s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src"}, **lock),
        lambda: s3.put_object_retention(
            Bucket=bucket, Key="src", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(60)}
        ),
        lambda: s3.get_object_retention(Bucket=bucket, Key="src"),
        lambda: s3.put_object_legal_hold(Bucket=bucket, Key="src", LegalHold={"Status": "ON"}),
        lambda: s3.get_object_legal_hold(Bucket=bucket, Key="src"),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc) == ("InvalidRequest", 400), i
        assert "missing Object Lock Configuration" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert _err(exc)[1] == 404
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- default retention ------------------------------------------------------------------
def test_default_retention_applies_to_every_new_version(s3: Any, locked: str) -> None:
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    s3.put_object_lock_configuration(
        Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    conf = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert conf == {"ObjectLockEnabled": "Enabled", "Rule": rule}
    before = dt.datetime.now(dt.UTC)
    s3.put_object(Bucket=locked, Key="put", Body=b"x")
    s3.copy_object(Bucket=locked, Key="copy", CopySource={"Bucket": locked, "Key": "put"})
    up = s3.create_multipart_upload(Bucket=locked, Key="mp")
    etag = s3.upload_part(Bucket=locked, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p")["ETag"]
    s3.complete_multipart_upload(
        Bucket=locked, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    after = dt.datetime.now(dt.UTC)
    for key in ("put", "copy", "mp"):
        head = s3.head_object(Bucket=locked, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        until = head["ObjectLockRetainUntilDate"]
        day = dt.timedelta(days=1)
        assert before + day - dt.timedelta(seconds=1) <= until <= after + day, key
        assert "ObjectLockLegalHoldStatus" not in head
        r = s3.get_object_retention(Bucket=locked, Key=key)["Retention"]
        assert r == {"Mode": "GOVERNANCE", "RetainUntilDate": until}
    # An explicit retention wins over the default.
    explicit = future(7200)
    s3.put_object(Bucket=locked, Key="own", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=explicit)
    head = s3.head_object(Bucket=locked, Key="own")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", explicit)
    # Removing the rule stops the default; lock itself stays on.
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    s3.put_object(Bucket=locked, Key="plain", Body=b"x")
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="plain")
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=locked, Key="plain")
    assert _err(exc) == ("NoSuchObjectLockConfiguration", 404)


def test_default_retention_in_years(s3: Any, locked: str) -> None:
    rule = {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}
    s3.put_object_lock_configuration(
        Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    s3.put_object(Bucket=locked, Key="k", Body=b"x")
    until = s3.head_object(Bucket=locked, Key="k")["ObjectLockRetainUntilDate"]
    assert dt.timedelta(days=364) < until - dt.datetime.now(dt.UTC) < dt.timedelta(days=367)


@pytest.mark.parametrize(
    ("retention", "code"),
    [
        ({"Mode": "GOVERNANCE", "Days": 0}, "InvalidRetentionPeriod"),
        ({"Mode": "GOVERNANCE", "Days": -3}, "InvalidRetentionPeriod"),
        ({"Mode": "COMPLIANCE", "Years": 0}, "InvalidRetentionPeriod"),
        ({"Mode": "GOVERNANCE", "Days": 1, "Years": 1}, "MalformedXML"),
        ({"Mode": "GOVERNANCE"}, "MalformedXML"),
        ({"Days": 1}, "MalformedXML"),
        ({"Mode": "FOREVER", "Days": 1}, "MalformedXML"),
    ],
)
def test_default_retention_validation(s3: Any, locked: str, retention: dict[str, Any], code: str) -> None:
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}}
    with pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=conf)
    assert _err(exc) == (code, 400)
    assert s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled"
    }


# --- explicit retention headers ---------------------------------------------------------
def test_explicit_lock_headers_round_trip(s3: Any, locked: str) -> None:
    until = future(3600)
    r = s3.put_object(
        Bucket=locked,
        Key="k",
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
        ObjectLockLegalHoldStatus="ON",
    )
    for got in (
        s3.head_object(Bucket=locked, Key="k"),
        s3.get_object(Bucket=locked, Key="k", VersionId=r["VersionId"]),
    ):
        assert got["ObjectLockMode"] == "GOVERNANCE"
        assert got["ObjectLockRetainUntilDate"] == until
        assert got["ObjectLockLegalHoldStatus"] == "ON"
    assert s3.get_object_legal_hold(Bucket=locked, Key="k")["LegalHold"] == {"Status": "ON"}
    r2 = s3.get_object_retention(Bucket=locked, Key="k", VersionId=r["VersionId"])["Retention"]
    assert r2 == {"Mode": "GOVERNANCE", "RetainUntilDate": until}


def test_lock_headers_on_multipart_and_copy(s3: Any, locked: str) -> None:
    until = future(3600)
    lock = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until, "ObjectLockLegalHoldStatus": "OFF"}
    up = s3.create_multipart_upload(Bucket=locked, Key="mp", **lock)
    parts = []
    for n, body in ((1, b"a" * (5 * MiB)), (2, b"b")):
        etag = s3.upload_part(Bucket=locked, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=locked, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    s3.copy_object(Bucket=locked, Key="copy", CopySource={"Bucket": locked, "Key": "mp"})
    head = s3.head_object(Bucket=locked, Key="mp")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == (
        "GOVERNANCE",
        until,
        "OFF",
    )
    assert not any(h.startswith("x-tierstore") for h in head["ResponseMetadata"]["HTTPHeaders"])
    # A copy does not inherit the source's lock; it takes its own headers (or the default).
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="copy")
    s3.copy_object(
        Bucket=locked, Key="copy2", CopySource={"Bucket": locked, "Key": "mp"}, ObjectLockLegalHoldStatus="ON"
    )
    assert s3.head_object(Bucket=locked, Key="copy2")["ObjectLockLegalHoldStatus"] == "ON"


@pytest.mark.parametrize(
    "lock",
    [
        {"ObjectLockMode": "GOVERNANCE"},
        {"ObjectLockRetainUntilDate": dt.datetime(2099, 1, 1, tzinfo=dt.UTC)},
        {"ObjectLockMode": "FOREVER", "ObjectLockRetainUntilDate": dt.datetime(2099, 1, 1, tzinfo=dt.UTC)},
        {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": dt.datetime(2001, 1, 1, tzinfo=dt.UTC)},
        {"ObjectLockLegalHoldStatus": "MAYBE"},
    ],
)
def test_bad_lock_headers(s3: Any, locked: str, lock: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=locked, Key="k", Body=b"x", **lock)
    assert _err(exc) == ("InvalidArgument", 400)
    assert s3.list_object_versions(Bucket=locked).get("Versions", []) == []


# --- retention transitions --------------------------------------------------------------
def test_compliance_cannot_be_shortened_removed_switched_or_bypassed(s3: Any, locked: str) -> None:
    until = future(3600)
    v = s3.put_object(Bucket=locked, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)[
        "VersionId"
    ]
    attempts = {
        "shorten": {"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(seconds=60)},
        "switch": {"Mode": "GOVERNANCE", "RetainUntilDate": until + dt.timedelta(days=1)},
        "remove": {},
    }
    for name, retention in attempts.items():
        for bypass in (False, True):
            with pytest.raises(ClientError) as exc:
                s3.put_object_retention(
                    Bucket=locked, Key="k", VersionId=v, Retention=retention, BypassGovernanceRetention=bypass
                )
            assert _err(exc) == ("AccessDenied", 403), (name, bypass)
    assert s3.get_object_retention(Bucket=locked, Key="k")["Retention"] == {
        "Mode": "COMPLIANCE",
        "RetainUntilDate": until,
    }
    for bypass in (False, True):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=locked, Key="k", VersionId=v, BypassGovernanceRetention=bypass)
        assert _err(exc) == ("AccessDenied", 403)
    # Keeping or extending is allowed.
    s3.put_object_retention(Bucket=locked, Key="k", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    later = until + dt.timedelta(hours=1)
    s3.put_object_retention(Bucket=locked, Key="k", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    assert s3.head_object(Bucket=locked, Key="k", VersionId=v)["ObjectLockRetainUntilDate"] == later


def test_governance_shortened_or_removed_only_with_bypass(s3: Any, locked: str) -> None:
    until = future(3600)
    v = s3.put_object(Bucket=locked, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)[
        "VersionId"
    ]
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": until - dt.timedelta(minutes=30)}
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=locked, Key="k", Retention=shorter)
    assert _err(exc) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=locked, Key="k", Retention={})
    assert _err(exc) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=locked, Key="k", VersionId=v)
    assert _err(exc) == ("AccessDenied", 403)
    # Extending needs no bypass.
    longer = {"Mode": "GOVERNANCE", "RetainUntilDate": until + dt.timedelta(hours=1)}
    s3.put_object_retention(Bucket=locked, Key="k", Retention=longer)
    s3.put_object_retention(Bucket=locked, Key="k", Retention=shorter, BypassGovernanceRetention=True)
    assert s3.get_object_retention(Bucket=locked, Key="k")["Retention"] == shorter
    s3.put_object_retention(Bucket=locked, Key="k", Retention={}, BypassGovernanceRetention=True)
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=locked, Key="k")
    assert _err(exc) == ("NoSuchObjectLockConfiguration", 404)
    s3.delete_object(Bucket=locked, Key="k", VersionId=v)  # nothing protects it now


def test_governance_delete_with_bypass_and_switch_to_compliance(s3: Any, locked: str) -> None:
    v1 = put_locked(s3, locked, "a", "GOVERNANCE", 3600)
    r = s3.delete_object(Bucket=locked, Key="a", VersionId=v1, BypassGovernanceRetention=True)
    assert r["VersionId"] == v1
    until = future(3600)
    v2 = put_locked(s3, locked, "b", "GOVERNANCE", 600)
    to_compliance = {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    with pytest.raises(ClientError) as exc:  # moving GOVERNANCE to COMPLIANCE needs the bypass (AWS, RGW)
        s3.put_object_retention(Bucket=locked, Key="b", VersionId=v2, Retention=to_compliance)
    assert _err(exc) == ("AccessDenied", 403)
    assert s3.get_object_retention(Bucket=locked, Key="b", VersionId=v2)["Retention"]["Mode"] == "GOVERNANCE"
    s3.put_object_retention(
        Bucket=locked, Key="b", VersionId=v2, Retention=to_compliance, BypassGovernanceRetention=True
    )
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=locked, Key="b", VersionId=v2, BypassGovernanceRetention=True)
    assert _err(exc) == ("AccessDenied", 403)


def test_retention_date_must_be_in_the_future(s3: Any, locked: str) -> None:
    s3.put_object(Bucket=locked, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(
            Bucket=locked, Key="k", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(-60)}
        )
    assert _err(exc) == ("InvalidArgument", 400)


# --- legal hold -------------------------------------------------------------------------
def test_legal_hold_blocks_deletion_until_off(s3: Any, locked: str) -> None:
    v = s3.put_object(Bucket=locked, Key="k", Body=b"x")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object_legal_hold(Bucket=locked, Key="k")
    assert _err(exc) == ("NoSuchObjectLockConfiguration", 404)
    s3.put_object_legal_hold(Bucket=locked, Key="k", VersionId=v, LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket=locked, Key="k", VersionId=v)["LegalHold"] == {"Status": "ON"}
    for bypass in (False, True):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=locked, Key="k", VersionId=v, BypassGovernanceRetention=bypass)
        assert _err(exc) == ("AccessDenied", 403)
    s3.put_object_legal_hold(Bucket=locked, Key="k", LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=locked, Key="k")["LegalHold"] == {"Status": "OFF"}
    assert s3.head_object(Bucket=locked, Key="k")["ObjectLockLegalHoldStatus"] == "OFF"
    s3.delete_object(Bucket=locked, Key="k", VersionId=v)
    assert s3.list_object_versions(Bucket=locked).get("Versions", []) == []


def test_lock_operations_on_a_delete_marker(s3: Any, locked: str) -> None:
    s3.put_object(Bucket=locked, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=locked, Key="k")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.put_object_legal_hold(Bucket=locked, Key="k", VersionId=marker, LegalHold={"Status": "ON"})
    assert _err(exc) == ("MethodNotAllowed", 405)
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(
            Bucket=locked, Key="k", VersionId=marker, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(60)}
        )
    assert _err(exc) == ("MethodNotAllowed", 405)


# --- enforcement ------------------------------------------------------------------------
def test_delete_without_version_adds_a_marker_and_the_locked_version_stays(s3: Any, locked: str) -> None:
    v = put_locked(s3, locked, "k", "COMPLIANCE", 3600, body=b"kept")
    r = s3.delete_object(Bucket=locked, Key="k")
    assert r["DeleteMarker"] is True
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=locked, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    assert s3.get_object(Bucket=locked, Key="k", VersionId=v)["Body"].read() == b"kept"
    # The marker itself is not locked.
    s3.delete_object(Bucket=locked, Key="k", VersionId=r["VersionId"])
    assert s3.get_object(Bucket=locked, Key="k")["Body"].read() == b"kept"


def test_overwrite_keeps_the_locked_version(s3: Any, locked: str) -> None:
    v1 = put_locked(s3, locked, "k", "COMPLIANCE", 3600, body=b"one")
    s3.put_object(Bucket=locked, Key="k", Body=b"two")
    assert s3.get_object(Bucket=locked, Key="k")["Body"].read() == b"two"
    assert s3.get_object(Bucket=locked, Key="k", VersionId=v1)["Body"].read() == b"one"


def test_delete_objects_reports_access_denied_per_key(s3: Any, locked: str) -> None:
    compliance = put_locked(s3, locked, "c", "COMPLIANCE", 3600)
    governance = put_locked(s3, locked, "g", "GOVERNANCE", 3600)
    free = s3.put_object(Bucket=locked, Key="f", Body=b"x")["VersionId"]
    objects = [
        {"Key": "c", "VersionId": compliance},
        {"Key": "g", "VersionId": governance},
        {"Key": "f", "VersionId": free},
    ]
    r = s3.delete_objects(Bucket=locked, Delete={"Objects": objects})
    assert [(d["Key"], d["VersionId"]) for d in r["Deleted"]] == [("f", free)]
    assert sorted((x["Key"], x["Code"]) for x in r["Errors"]) == [("c", "AccessDenied"), ("g", "AccessDenied")]
    r = s3.delete_objects(Bucket=locked, Delete={"Objects": objects[:2]}, BypassGovernanceRetention=True)
    assert [d["Key"] for d in r["Deleted"]] == ["g"]
    assert [(x["Key"], x["Code"]) for x in r["Errors"]] == [("c", "AccessDenied")]
    assert s3.get_object(Bucket=locked, Key="c", VersionId=compliance)["Body"].read() == b"data"


def test_retention_expires(s3: Any, locked: str) -> None:
    until = future(3)  # 2-3 s ahead (whole seconds)
    v = s3.put_object(Bucket=locked, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)[
        "VersionId"
    ]
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=locked, Key="k", VersionId=v)
    assert _err(exc) == ("AccessDenied", 403)
    time.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    r = s3.delete_object(Bucket=locked, Key="k", VersionId=v)
    assert r["VersionId"] == v
    assert s3.list_object_versions(Bucket=locked).get("Versions", []) == []
