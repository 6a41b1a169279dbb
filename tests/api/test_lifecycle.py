"""Bucket lifecycle configuration (api/_lifecycle.py): the document's validation as S3 answers it
(pure tables; transitions, whose classes must be tiers, only here), the round trip and the
errors through boto3 and raw HTTP against a real server, and ``x-amz-expiration``."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client
from tests.s3http import assert_error, signed_request
from tierstore import errors as e
from tierstore.api._lifecycle import lifecycle_document, parse_lifecycle
from tierstore.api._routes import ACTIONS, checks
from tierstore.api._xml import parse_xml
from tierstore.client import TierstoreClient
from tierstore.engine import LifecycleTransition, NoncurrentTransition

TIERS = frozenset({"COLD", "ARCHIVE", "STANDARD_IA"})


def doc(*rules: str) -> bytes:
    return f'<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{"".join(rules)}</LifecycleConfiguration>'.encode()


def rule(body: str, *, filter_: str = "<Filter><Prefix>logs/</Prefix></Filter>", rid: str = "r1") -> str:
    return f"<Rule><ID>{rid}</ID>{filter_}<Status>Enabled</Status>{body}</Rule>"


def parse(body: bytes, tiers: frozenset[str] = TIERS, **kw: Any) -> Any:
    return parse_lifecycle(parse_xml(body, "LifecycleConfiguration"), tiers, **kw)


# --- validation (pure) -----------------------------------------------------------------------
EXP1 = "<Expiration><Days>1</Days></Expiration>"
TAG = "<Tag><Key>k</Key><Value>v</Value></Tag>"
SMALL = "<ObjectSizeLessThan>9</ObjectSizeLessThan>"

INVALID = [
    # (document, error class, message or None)
    (doc(), e.MalformedXML, None),
    (doc(rule(EXP1).replace("Enabled", "On")), e.MalformedXML, None),
    (doc(rule(EXP1 + "<Bogus/>")), e.MalformedXML, None),
    (doc(rule(EXP1 + EXP1)), e.MalformedXML, None),
    (doc(rule(EXP1, filter_="")), e.MalformedXML, None),
    (doc(rule(EXP1, filter_="<Prefix>a</Prefix><Filter></Filter>")), e.MalformedXML, None),
    (doc(rule(EXP1, filter_=f"<Filter><Prefix>a</Prefix>{TAG}</Filter>")), e.MalformedXML, None),
    (doc(rule(EXP1, filter_=f"<Filter><And>{TAG}</And></Filter>")), e.MalformedXML, None),
    (doc(rule(EXP1, filter_="<Filter><Tag><Key>k</Key></Tag></Filter>")), e.MalformedXML, None),
    (doc(rule(EXP1, rid="x" * 256)), e.InvalidArgument, "ID length should not exceed allowed limit of 255"),
    (doc(rule(EXP1), rule(EXP1)), e.InvalidArgument, "Rule ID must be unique. Found same ID for more than one rule"),
    (doc(rule("")), e.InvalidRequest, "At least one action needs to be specified in a rule"),
    (doc(*(rule(EXP1, rid=f"r{i}") for i in range(1001))), e.InvalidRequest,
     "The number of lifecycle rules must not exceed the allowed limit of 1000 rules."),
    (doc(rule("<Expiration><Days>0</Days></Expiration>")), e.InvalidArgument,
     "'Days' for Expiration action must be a positive integer"),
    (doc(rule("<Expiration><Days>x</Days></Expiration>")), e.MalformedXML, None),
    (doc(rule("<Expiration><Days>1</Days><Date>2030-01-01T00:00:00Z</Date></Expiration>")), e.MalformedXML, None),
    (doc(rule("<Expiration></Expiration>")), e.MalformedXML, None),
    (doc(rule("<Expiration><Date>2030-01-01T10:00:00Z</Date></Expiration>")), e.InvalidArgument,
     "'Date' must be at midnight GMT"),
    (doc(rule("<Expiration><Date>soon</Date></Expiration>")), e.MalformedXML, None),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>0</NoncurrentDays></NoncurrentVersionExpiration>")),
     e.InvalidArgument, "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    (doc(rule("<NoncurrentVersionExpiration><NewerNoncurrentVersions>2</NewerNoncurrentVersions>"
              "</NoncurrentVersionExpiration>")), e.MalformedXML, None),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>3</NoncurrentDays><NewerNoncurrentVersions>0"
              "</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     e.InvalidArgument, "'NewerNoncurrentVersions' must be a positive integer"),
    (doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation>"
              "</AbortIncompleteMultipartUpload>")),
     e.InvalidArgument, "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    (doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
              "</AbortIncompleteMultipartUpload>", filter_=f"<Filter>{TAG}</Filter>")),
     e.InvalidRequest, "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    (doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
              "</AbortIncompleteMultipartUpload>", filter_=f"<Filter>{SMALL}</Filter>")),
     e.InvalidRequest, "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    (doc(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>",
              filter_=f"<Filter><And><Prefix>a</Prefix>{TAG}</And></Filter>")),
     e.InvalidRequest, "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    (doc(rule(EXP1, filter_="<Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan>"
                            "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>")),
     e.InvalidRequest, "'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'."),
    (doc(rule(EXP1, filter_="<Filter><ObjectSizeLessThan>0</ObjectSizeLessThan></Filter>")),
     e.InvalidRequest, "'ObjectSizeLessThan' should be between 1 and 1099511627776000."),
    (doc(rule(EXP1, filter_=f"<Filter><And>{TAG}{TAG}</And></Filter>")), e.InvalidRequest,
     "Duplicate Tag Keys are not allowed."),
    # Lifecycle V1 (each rule its own Prefix) and V2 (Filter) do not mix; V1 prefixes may not overlap
    (doc(rule(EXP1, filter_="<Prefix>a</Prefix>"), rule(EXP1, rid="r2")), e.InvalidRequest,
     "Filter element can only be used in Lifecycle V2."),
    (doc(rule(EXP1), rule(EXP1, rid="r2", filter_="<Prefix>a</Prefix>")), e.InvalidRequest,
     "Base level prefix cannot be used in Lifecycle V2, prefixes are only supported in the Filter."),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>3</NoncurrentDays><NewerNoncurrentVersions>2"
              "</NewerNoncurrentVersions></NoncurrentVersionExpiration>", filter_="<Prefix>a</Prefix>")),
     e.InvalidRequest, "NewerNoncurrentVersions element can only be used in Lifecycle V2."),
    (doc(rule(EXP1, filter_="<Prefix></Prefix>"), rule(EXP1, rid="r2", filter_="<Prefix>logs</Prefix>")),
     e.InvalidRequest, "Found overlapping prefixes 'logs' and '' for same action type 'Expiration'"),
    # transitions: the class must be a tier here
    (doc(rule("<Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>")),
     e.InvalidStorageClass, None),
    (doc(rule("<Transition><Days>1</Days><StorageClass>STANDARD</StorageClass></Transition>")),
     e.InvalidArgument, "Invalid target Storage class for Transition action"),
    (doc(rule("<Transition><Days>1</Days><StorageClass>cold storage</StorageClass></Transition>")),
     e.MalformedXML, None),
    (doc(rule("<Transition><Days>1</Days></Transition>")), e.MalformedXML, None),
    (doc(rule("<Transition><StorageClass>COLD</StorageClass></Transition>")), e.MalformedXML, None),
    (doc(rule("<Transition><Days>-1</Days><StorageClass>COLD</StorageClass></Transition>")),
     e.InvalidArgument, "'Days' in Transition action must be nonnegative"),
    (doc(rule("<Transition><Days>1</Days><StorageClass>COLD</StorageClass></Transition>"
              "<Transition><Days>5</Days><StorageClass>COLD</StorageClass></Transition>")),
     e.InvalidRequest, "'StorageClass' must be different for 'Transition' actions in same 'Rule' with filter "
     "'(prefix=logs/)'"),
    (doc(rule("<Transition><Days>1</Days><StorageClass>COLD</StorageClass></Transition>"
              "<Transition><Date>2030-01-01T00:00:00Z</Date><StorageClass>ARCHIVE</StorageClass></Transition>")),
     e.InvalidRequest, "Found mixed 'Date' and 'Days' based Transition actions in lifecycle rule for filter "
     "'(prefix=logs/)'"),
    (doc(rule("<Transition><Days>5</Days><StorageClass>COLD</StorageClass></Transition>"
              "<Transition><Days>5</Days><StorageClass>ARCHIVE</StorageClass></Transition>")),
     e.InvalidArgument, "'Days' in the 'Transition' action for StorageClass 'ARCHIVE' for filter '(prefix=logs/)' "
     "must be greater than 'Days' in the 'Transition' action for StorageClass 'COLD' for filter '(prefix=logs/)'"),
    (doc(rule("<Transition><Days>5</Days><StorageClass>COLD</StorageClass></Transition>"
              "<Expiration><Days>5</Days></Expiration>", filter_="<Filter><Prefix></Prefix></Filter>")),
     e.InvalidArgument, "'Days' in the Expiration action for filter '(prefix=)' must be greater than 'Days' in the "
     "Transition action"),
    (doc(rule("<Transition><Days>5</Days><StorageClass>COLD</StorageClass></Transition>"
              "<Expiration><Date>2030-01-01T00:00:00Z</Date></Expiration>")),
     e.InvalidRequest, "Found mixed 'Date' and 'Days' based Expiration and Transition actions in lifecycle rule for "
     "filter '(prefix=logs/)'"),
    (doc(rule("<NoncurrentVersionTransition><NoncurrentDays>9</NoncurrentDays><StorageClass>COLD</StorageClass>"
              "</NoncurrentVersionTransition><NoncurrentVersionExpiration><NoncurrentDays>9</NoncurrentDays>"
              "</NoncurrentVersionExpiration>", filter_="<Filter></Filter>")),
     e.InvalidArgument, "'NoncurrentDays' in the NoncurrentVersionExpiration action for filter '()' must be greater "
     "than 'NoncurrentDays' in the NoncurrentVersionTransition action"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "error", "message"), INVALID)
def test_invalid_configurations(body: bytes, error: type[e.TierstoreError], message: str | None) -> None:
    with pytest.raises(e.TierstoreError) as exc:
        parse(body)
    assert type(exc.value) is error
    if message is not None:
        assert exc.value.message == message


def test_invalid_minimum_size_header() -> None:
    with pytest.raises(e.InvalidRequest, match="Invalid TransitionDefaultMinimumObjectSize found"):
        parse(doc(rule(EXP1)), min_size="all_storage_classes_64K")


def test_transitions_name_tiers_and_aws_class_minimums_do_not_apply() -> None:
    """A tier named like an AWS class is not held to AWS's 30-day minimum, nor to its class order."""
    body = doc(
        rule(
            "<Transition><Days>1</Days><StorageClass>STANDARD_IA</StorageClass></Transition>"
            "<Transition><Days>2</Days><StorageClass>COLD</StorageClass></Transition>"
            "<NoncurrentVersionTransition><NoncurrentDays>0</NoncurrentDays><StorageClass>ARCHIVE</StorageClass>"
            "<NewerNoncurrentVersions>3</NewerNoncurrentVersions></NoncurrentVersionTransition>"
            "<Expiration><Days>3</Days></Expiration>"
        )
    )
    (r,) = parse(body).rules
    assert r.transitions == (LifecycleTransition("STANDARD_IA", 1), LifecycleTransition("COLD", 2))
    assert r.noncurrent_transitions == (NoncurrentTransition("ARCHIVE", 0, 3),)
    with pytest.raises(e.InvalidStorageClass):
        parse(body, frozenset({"COLD", "ARCHIVE"}))  # STANDARD_IA is not a tier here


def test_rules_without_id_get_one_and_the_document_reads_back() -> None:
    body = doc(
        "<Rule><Filter><And><Prefix>a/</Prefix>" + TAG + "<ObjectSizeGreaterThan>5</ObjectSizeGreaterThan></And>"
        "</Filter><Status>Disabled</Status><Expiration><Date>2031-02-03T00:00:00.000Z</Date></Expiration></Rule>",
        rule("<Transition><Days>4</Days><StorageClass>COLD</StorageClass></Transition>", rid="r2"),
    )
    cfg = parse(body, new_id=lambda: "made-up")
    assert [r.id for r in cfg.rules] == ["made-up", "r2"]
    assert parse(lifecycle_document(cfg)) == cfg


def test_iam_actions_are_aws_s() -> None:
    def names(action: str) -> list[str]:
        return [c.action for c in checks(ACTIONS[action], "b", None, {"lifecycle": ""}, {})]

    assert names("GetBucketLifecycleConfiguration") == ["s3:GetLifecycleConfiguration"]
    assert names("PutBucketLifecycleConfiguration") == ["s3:PutLifecycleConfiguration"]
    assert names("DeleteBucketLifecycle") == ["s3:PutLifecycleConfiguration"]


# --- through a server ------------------------------------------------------------------------
def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Message", "")


ROUND_TRIP = [
    {"ID": "all", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 30}},
    {"ID": "prefix", "Filter": {"Prefix": "logs/"}, "Status": "Disabled",
     "Expiration": {"Date": dt.datetime(2031, 1, 1, tzinfo=dt.UTC)}},
    {"ID": "tag", "Filter": {"Tag": {"Key": "team", "Value": "ml"}}, "Status": "Enabled",
     "NoncurrentVersionExpiration": {"NoncurrentDays": 5, "NewerNoncurrentVersions": 3}},
    {"ID": "size", "Filter": {"ObjectSizeGreaterThan": 1024}, "Status": "Enabled", "Expiration": {"Days": 2}},
    {"ID": "small", "Filter": {"ObjectSizeLessThan": 10}, "Status": "Enabled", "Expiration": {"Days": 2}},
    {"ID": "and", "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "z", "Value": "1"}, {"Key": "a", "Value": ""}],
                                     "ObjectSizeGreaterThan": 1, "ObjectSizeLessThan": 1000}},
     "Status": "Enabled", "Expiration": {"Days": 9}},
    {"ID": "and-no-prefix", "Filter": {"And": {"Tags": [{"Key": "k", "Value": "v"}], "ObjectSizeLessThan": 5}},
     "Status": "Enabled", "Expiration": {"Days": 9}},
    {"ID": "markers", "Filter": {"Prefix": ""}, "Status": "Enabled",
     "Expiration": {"ExpiredObjectDeleteMarker": True},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
]  # fmt: skip


def test_round_trip_and_delete(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _err(exc) == ("NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist")
    put = s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": ROUND_TRIP})
    assert put["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert got["Rules"] == ROUND_TRIP
    assert got["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
    # a PUT replaces the whole configuration, and keeps the minimum-size setting it names
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [{"Prefix": "old/", "Status": "Enabled", "Expiration": {"Days": 1}}]},
        TransitionDefaultMinimumObjectSize="varies_by_storage_class",
    )
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    (only,) = got["Rules"]
    assert only["Prefix"] == "old/" and "Filter" not in only and len(only["ID"]) > 0  # V1 form, an ID made
    assert got["TransitionDefaultMinimumObjectSize"] == "varies_by_storage_class"
    assert s3.delete_bucket_lifecycle(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_bucket_lifecycle(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _err(exc)[:2] == ("NoSuchLifecycleConfiguration", 404)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"ID": "r", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}],
         ("InvalidArgument", 400, "'Days' for Expiration action must be a positive integer")),
        ([{"ID": "r", "Filter": {}, "Status": "Enabled",
           "Expiration": {"Date": dt.datetime(2031, 1, 1, 12, tzinfo=dt.UTC)}}],
         ("InvalidArgument", 400, "'Date' must be at midnight GMT")),
        ([{"ID": "r", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
           "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}],
         ("InvalidRequest", 400, "AbortIncompleteMultipartUpload cannot be specified with Tags.")),
        ([{"ID": "r", "Filter": {}, "Status": "Enabled"}],
         ("InvalidRequest", 400, "At least one action needs to be specified in a rule")),
        ([], ("MalformedXML", 400, None)),
        # GLACIER is no tier on this server: a transition to it is refused
        ([{"ID": "r", "Filter": {}, "Status": "Enabled", "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}],
         ("InvalidStorageClass", 400, None)),
    ],
)  # fmt: skip
def test_errors_through_boto3(s3: Any, bucket: str, rules: list[dict[str, Any]], expected: tuple[Any, ...]) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    code, status, message = _err(exc)
    assert (code, status) == expected[:2]
    if expected[2] is not None:
        assert message == expected[2]
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)  # nothing was stored
    assert _err(exc)[0] == "NoSuchLifecycleConfiguration"


def test_transitions_to_a_tier_are_stored_and_read_back(client: TierstoreClient, s3: Any, bucket: str) -> None:
    tiers = client
    name = f"LC{uuid.uuid4().hex[:8].upper()}"
    tiers.tier_add(name, "http://127.0.0.1:9", "archive", allow_private=True)  # never contacted here
    time.sleep(1.2)  # past every worker's 1 s cache of tier names (TierService.class_names)
    try:
        rules = [
            {"ID": "cold", "Filter": {"Prefix": "runs/"}, "Status": "Enabled",
             "Transitions": [{"Days": 1, "StorageClass": name}],
             "NoncurrentVersionTransitions": [{"NoncurrentDays": 2, "StorageClass": name}]},
        ]  # fmt: skip
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules
        s3.delete_bucket_lifecycle(Bucket=bucket)
    finally:
        tiers.tier_remove(name)
    time.sleep(1.2)
    with pytest.raises(ClientError) as exc:  # the tier is gone: the same rules are refused
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    assert _err(exc)[:2] == ("InvalidStorageClass", 400)


def test_no_such_bucket(s3: Any) -> None:
    name = f"nb-{uuid.uuid4().hex[:12]}"
    for call in (
        lambda: s3.get_bucket_lifecycle_configuration(Bucket=name),
        lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [{"ID": "r", "Filter": {}, "Status": "Enabled",
                                                           "Expiration": {"Days": 1}}]}
        ),
        lambda: s3.delete_bucket_lifecycle(Bucket=name),
    ):  # fmt: skip
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc)[:2] == ("NoSuchBucket", 404)


GOOD = doc(rule(EXP1))


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 400, "InvalidRequest"),  # S3: "Missing required header for this request: Content-MD5"
        ({"content-md5": base64.b64encode(hashlib.md5(b"other").digest()).decode()}, 400, "BadDigest"),
        ({"x-amz-checksum-crc32": base64.b64encode(b"\0\0\0\0").decode()}, 400, "BadDigest"),
        ({"content-md5": base64.b64encode(hashlib.md5(GOOD).digest()).decode()}, 200, ""),
        ({"x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(GOOD).digest()).decode()}, 200, ""),
    ],
)
def test_body_checksum_is_required_and_checked(
    server: ServerProcess, bucket: str, headers: dict[str, str], status: int, code: str
) -> None:
    r = signed_request(server, "PUT", f"/{bucket}", GOOD, query=[("lifecycle", "")], headers=headers)
    if status == 200:
        assert r.status == 200, r.body
    else:
        err = assert_error(r, status, code)
        if not headers:
            assert err["Message"] == "Missing required header for this request: Content-MD5"


def test_unknown_elements_are_malformed_xml(server: ServerProcess, bucket: str) -> None:
    body = doc(rule(EXP1 + "<Transitions/>"))
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = signed_request(server, "PUT", f"/{bucket}", body, query=[("lifecycle", "")], headers={"content-md5": md5})
    assert_error(r, 400, "MalformedXML")


# --- x-amz-expiration ------------------------------------------------------------------------
_EXPIRATION = re.compile(r'expiry-date="([^"]+)", rule-id="([^"]+)"')


def _expiry(value: str) -> tuple[dt.datetime, str]:
    m = _EXPIRATION.fullmatch(value)
    assert m is not None, value
    return email.utils.parsedate_to_datetime(m.group(1)), m.group(2)


def _midnight_after(t: dt.datetime, days: int) -> set[dt.datetime]:
    """The expected expiry of an object last modified at ``t`` (whole seconds, as HEAD reports
    it): the next midnight after t + days. At an exact midnight the lost fraction of a second
    decides, so both answers are right."""
    age = t + dt.timedelta(days=days)
    day = age.replace(hour=0, minute=0, second=0, microsecond=0)
    return {day, day + dt.timedelta(days=1)} if age == day else {day + dt.timedelta(days=1)}


def test_expiration_header_on_put_head_get_and_copy(s3: Any, bucket: str) -> None:
    rules = [
        {"ID": "keep 3 days", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 3}},
        {"ID": "tagged", "Filter": {"Tag": {"Key": "ttl", "Value": "short"}}, "Status": "Enabled",
         "Expiration": {"Days": 1}},
        {"ID": "dated", "Filter": {"Prefix": "tmp/dated/"}, "Status": "Enabled",
         "Expiration": {"Date": dt.datetime(2030, 6, 1, tzinfo=dt.UTC)}},
        {"ID": "off", "Filter": {}, "Status": "Disabled", "Expiration": {"Days": 1}},
        {"ID": "noncurrent", "Filter": {}, "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    ]  # fmt: skip
    put = s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"x")
    assert "Expiration" not in put  # no configuration yet
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})

    put = s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"hello")
    head = s3.head_object(Bucket=bucket, Key="tmp/a")
    get = s3.get_object(Bucket=bucket, Key="tmp/a")
    get["Body"].read()
    when, rule_id = _expiry(put["Expiration"])
    assert rule_id == quote("keep 3 days", safe="")  # URL-encoded, as S3
    assert when in _midnight_after(head["LastModified"], 3)
    assert head["Expiration"] == get["Expiration"] == put["Expiration"]

    copy = s3.copy_object(Bucket=bucket, Key="tmp/copy", CopySource={"Bucket": bucket, "Key": "tmp/a"})
    assert _expiry(copy["Expiration"])[1] == quote("keep 3 days", safe="")

    tagged = s3.put_object(Bucket=bucket, Key="tmp/t", Body=b"x", Tagging="ttl=short")  # the earlier of two rules
    assert _expiry(tagged["Expiration"])[1] == "tagged"
    dated = s3.put_object(Bucket=bucket, Key="tmp/dated/x", Body=b"x")  # Days 3 comes before the Date
    assert _expiry(dated["Expiration"])[1] == quote("keep 3 days", safe="")

    other = s3.put_object(Bucket=bucket, Key="keep/b", Body=b"x")
    assert "Expiration" not in other  # only the disabled rule and a noncurrent rule apply
    assert "Expiration" not in s3.head_object(Bucket=bucket, Key="keep/b")
    # a read naming a version does not report it (docs/s3-compatibility.md)
    named = s3.head_object(Bucket=bucket, Key="tmp/a", VersionId="null")
    assert "Expiration" not in named

    s3.delete_bucket_lifecycle(Bucket=bucket)
    assert "Expiration" not in s3.head_object(Bucket=bucket, Key="tmp/a")


def test_expiration_header_with_a_date(s3: Any, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [{"ID": "d", "Filter": {}, "Status": "Enabled",
                                           "Expiration": {"Date": dt.datetime(2030, 6, 1, tzinfo=dt.UTC)}}]},
    )  # fmt: skip
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert put["Expiration"] == 'expiry-date="Sat, 01 Jun 2030 00:00:00 GMT", rule-id="d"'


@pytest.fixture(scope="module")
def short_days(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose lifecycle day is 10 s."""
    srv = ServerProcess(Path(tmp_path_factory.mktemp("lc")) / "data", extra_args=["--lifecycle-day-seconds", "10"])
    srv.start()
    yield srv
    srv.stop()


def test_a_short_day_is_not_rounded_to_midnight(short_days: ServerProcess) -> None:
    s3 = make_client(short_days.endpoint)
    s3.create_bucket(Bucket="short")
    s3.put_bucket_lifecycle_configuration(
        Bucket="short",
        LifecycleConfiguration={"Rules": [{"ID": "r", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 3}}]},
    )
    s3.put_object(Bucket="short", Key="k", Body=b"x")
    head = s3.head_object(Bucket="short", Key="k")
    when, _ = _expiry(head["Expiration"])
    assert dt.timedelta(seconds=30) <= when - head["LastModified"] <= dt.timedelta(seconds=31)
