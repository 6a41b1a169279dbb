"""``/_tierstore/admin/tiers`` through the session server (api/_tiers_ext.py, docs/tiers.md):
add, list, status and remove; bad names and fields; endpoints refused by the SSRF guard; users
need the tierstore:*Tier* actions; removal refused while a blob is in the tier; the secret key
never in an answer or the server log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

SECRET = "TierSecretKey/api-0123456789abcdefghijkl"
LOOPBACK = "http://127.0.0.1:8333"


def _error(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(TierstoreClientError) as info:
        call()
    return info.value.status, info.value.code, info.value.message


@pytest.fixture
def tiers(client: TierstoreClient) -> Iterator[TierstoreClient]:
    """The root's client; every tier a test adds is removed after it (the session server is shared)."""
    yield client
    for tier in client.tier_list():
        client.tier_remove(tier["name"])


def _wait_for_log(server: ServerProcess, text: str) -> str:
    """The server log once it has ``text`` (written by a worker: may land a moment after the answer)."""
    deadline = time.monotonic() + 30
    log = server.log()
    while text not in log and time.monotonic() < deadline:
        time.sleep(0.05)
        log = server.log()
    assert text in log
    return log


def test_add_list_status_remove(tiers: TierstoreClient, server: ServerProcess) -> None:
    added = tiers.tier_add(
        "TAPI", LOOPBACK + "/", "archive", prefix="p/", access_key_id="AKIATIERAPI", secret_key=SECRET,
        allow_private=True,
    )  # fmt: skip
    assert set(added) == {
        "name", "endpoint", "bucket", "prefix", "region", "restore_required", "allow_private", "access_key_id",
        "keys_set", "created",
    }  # fmt: skip
    assert (added["name"], added["endpoint"], added["prefix"], added["access_key_id"], added["keys_set"]) == (
        "TAPI",
        LOOPBACK,
        "p/",
        "AKIATIERAPI",
        True,
    )
    glacier = tiers.tier_add("GLACIER", LOOPBACK, "deep", restore_required=True, allow_private=True)
    assert (glacier["keys_set"], glacier["access_key_id"], glacier["restore_required"]) == (False, None, True)
    listed = tiers.tier_list()
    assert [t["name"] for t in listed] == ["GLACIER", "TAPI"]
    assert [t["keys_set"] for t in listed] == [False, True]
    idle = {
        "blobs": 0, "bytes": 0, "outbox": 0, "uploads": 0, "backlog": {"total": 0, "due": 0, "pending": 0, "outbox": 0},
        "moved_bytes": 0, "moved_objects": 0, "errors": 0, "last_error": None, "last_error_at": None,
    }  # fmt: skip
    assert tiers.tier_status() == [{"name": "GLACIER", **idle}, {"name": "TAPI", **idle}]
    assert [s["name"] for s in tiers.tier_status("TAPI")] == ["TAPI"]
    assert _error(lambda: tiers.tier_add("TAPI", LOOPBACK, "other", allow_private=True))[:2] == (
        409,
        "TierAlreadyExists",
    )
    tiers.tier_remove("GLACIER")
    assert [t["name"] for t in tiers.tier_list()] == ["TAPI"]
    assert _error(lambda: tiers.tier_remove("GLACIER"))[:2] == (404, "NoSuchTier")
    assert _error(lambda: tiers.tier_status("GLACIER"))[:2] == (404, "NoSuchTier")

    # The secret key: in no answer, nowhere in the server log (the add was logged: the log is current).
    answers = json.dumps([added, listed, tiers.tier_list(), tiers.tier_status()])
    assert SECRET not in answers
    assert SECRET not in _wait_for_log(server, "tier TAPI added")


@pytest.mark.parametrize("name", ["cold", "STANDARD", "1TIER", "TIER-1", "T" * 33, ""])
def test_bad_names(tiers: TierstoreClient, name: str) -> None:
    status, code, _ = _error(lambda: tiers.tier_add(name, LOOPBACK, "archive", allow_private=True))
    assert (status, code) == ((400, "InvalidRequest") if not name else (400, "InvalidArgument"))
    assert tiers.tier_list() == []


def test_bad_requests(tiers: TierstoreClient) -> None:
    call = tiers._call
    assert _error(lambda: call("POST", "/_tierstore/admin/tiers", {"name": "T", "endpoint": LOOPBACK}))[:2] == (
        400,
        "InvalidRequest",
    )
    body: dict[str, Any] = {"name": "T", "endpoint": LOOPBACK, "bucket": "b", "allow_private": "yes"}
    assert _error(lambda: call("POST", "/_tierstore/admin/tiers", body))[:2] == (400, "InvalidRequest")
    body = {"name": "T", "endpoint": LOOPBACK, "bucket": "b", "surprise": 1}
    assert _error(lambda: call("POST", "/_tierstore/admin/tiers", body))[:2] == (400, "InvalidRequest")
    body = {"name": "T", "endpoint": LOOPBACK, "bucket": "b", "secret_key": SECRET, "allow_private": True}
    status, code, message = _error(lambda: call("POST", "/_tierstore/admin/tiers", body))
    assert (status, code) == (400, "InvalidArgument") and SECRET not in message  # a secret without its key id
    assert _error(lambda: call("GET", "/_tierstore/admin/tiers/T", None))[:2] == (405, "MethodNotAllowed")
    assert _error(lambda: call("PUT", "/_tierstore/admin/tiers", {}))[:2] == (405, "MethodNotAllowed")
    assert tiers.tier_list() == []


@pytest.mark.parametrize(
    ("endpoint", "allow_private", "reason"),
    [
        ("http://169.254.169.254", True, "cloud metadata"),
        ("http://[fd00:ec2::254]/", True, "cloud metadata"),
        ("http://metadata.google.internal", True, "cloud metadata"),
        ("http://[fe80::1]:8333", True, "link-local"),
        ("http://127.0.0.1:8333", False, "loopback"),
        ("http://10.0.0.8:8333", False, "private"),
        ("file:///etc/passwd", True, "http:// or https://"),
        (f"http://AKIA:{SECRET.replace('/', '')}@127.0.0.1:8333", True, "must not carry credentials"),
        (f"http://AKIA:{SECRET}@127.0.0.1:8333", True, "not a valid URL"),  # the '/' ends the authority
    ],
)
def test_ssrf_refusals(tiers: TierstoreClient, endpoint: str, allow_private: bool, reason: str) -> None:
    status, code, message = _error(
        lambda: tiers.tier_add("TSSRF", endpoint, "archive", allow_private=allow_private)
    )
    assert (status, code) == (400, "InvalidArgument") and reason in message
    assert SECRET.replace("/", "") not in message and "api-0123456789" not in message
    assert tiers.tier_list() == []


def test_users_need_the_tier_actions(tiers: TierstoreClient, server: ServerProcess) -> None:
    tiers.create_user("tier-viewer")
    try:
        made = tiers.create_access_key("tier-viewer")
        user = TierstoreClient(
            resolve_settings(server.endpoint, access_key=made["access_key_id"], secret_key=made["secret_key"])
        )
        tiers.tier_add("TUSER", LOOPBACK, "archive", allow_private=True)
        refusals: list[Callable[[], object]] = [
            user.tier_list,
            user.tier_status,
            lambda: user.tier_status("TUSER"),
            lambda: user.tier_add("TMINE", LOOPBACK, "archive", allow_private=True),
            lambda: user.tier_remove("TUSER"),
            lambda: user.tier_remove("NOSUCH"),  # refused before the lookup
        ]
        for call in refusals:
            assert _error(call)[:2] == (403, "AccessDenied")
        statement = {"Effect": "Allow", "Action": ["tierstore:ListTiers", "tierstore:GetTierStatus"], "Resource": "*"}
        tiers.put_user_policy("tier-viewer", "view", {"Version": "2012-10-17", "Statement": [statement]})
        deadline = time.monotonic() + 30  # identity policies: every worker within about a second
        while time.monotonic() < deadline:
            try:
                names = [t["name"] for t in user.tier_list()]
                break
            except TierstoreClientError:
                time.sleep(0.1)
        assert names == ["TUSER"]
        assert [s["name"] for s in user.tier_status("TUSER")] == ["TUSER"]
        for call in refusals[3:]:
            assert _error(call)[:2] == (403, "AccessDenied")
        assert [t["name"] for t in tiers.tier_list()] == ["TUSER"]  # nothing changed
    finally:
        for key in tiers.list_access_keys("tier-viewer"):
            tiers.delete_access_key(key["access_key_id"])
        tiers.delete_user_policy("tier-viewer", "view")
        tiers.delete_user("tier-viewer")


def test_remove_is_refused_while_a_blob_is_in_the_tier(
    tiers: TierstoreClient, server: ServerProcess, s3: Any, bucket: str
) -> None:
    """No mover exists yet: the test moves the blob's row to the tier through the catalog itself
    (SQLite's file or PostgreSQL's database); the blob is found where the server keeps blobs."""
    before = server.blob_ids()
    s3.put_object(Bucket=bucket, Key="big", Body=b"x" * 65536)  # over the inline limit: a blob
    ids = sorted(server.blob_ids() - before)
    assert ids
    tiers.tier_add("TBUSY", LOOPBACK, "archive", allow_private=True)
    listed = ", ".join(f"'{i}'" for i in ids)  # blob ids: hex, nothing to quote
    server.catalog_sql(f"UPDATE blobs SET tier='TBUSY' WHERE blob_id IN ({listed})")
    try:
        status, code, message = _error(lambda: tiers.tier_remove("TBUSY"))
        assert (status, code) == (409, "TierInUse") and f"{len(ids)} blobs (65536 bytes)" in message
        busy = tiers.tier_status("TBUSY")[0]
        assert {k: busy[k] for k in ("name", "blobs", "bytes", "outbox", "uploads")} == {
            "name": "TBUSY", "blobs": len(ids), "bytes": 65536, "outbox": 0, "uploads": 0,
        }  # fmt: skip
    finally:
        server.catalog_sql("UPDATE blobs SET tier=NULL WHERE tier='TBUSY'")
    tiers.tier_remove("TBUSY")
    assert tiers.tier_list() == []
