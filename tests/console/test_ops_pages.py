"""Pages 7-9 in a real browser: Identity (users, keys shown once, groups, the policy editor's
errors, service accounts), Tiers and lifecycle (a tier's moves, backlog and errors, restores in
progress against the session's SeaweedFS) and Health and metrics (drives, capacity, requests,
the audit log filtered). The issue's proof: an admin creates a user and a policy in the console,
and that user's console shows only what the policy allows.

One server for the module, with an audit log (the session's shared server has none)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.tier_support import settle
from tests.conftest import ServerProcess, make_client
from tests.console.conftest import sign_in
from tests.seaweed import SeaweedFS


@pytest.fixture(scope="module")
def osrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("ops")
    srv = ServerProcess(work / "data", extra_args=["--audit-log", str(work / "audit.log")])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3o(osrv: ServerProcess) -> Any:
    return make_client(osrv.endpoint)


def _name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def _go(page: Any, srv: ServerProcess, path: str) -> int:
    response = page.goto(f"{srv.endpoint}/console/{path}")
    return int(response.status)


def _audit_rows(page: Any, srv: ServerProcess, query: str, want: str) -> list[str]:
    """The audit table's rows for ``query``, reloaded until a row contains ``want``: each worker
    process writes its buffered lines out on its metrics tick (a fraction of a second)."""
    for _ in range(100):
        assert _go(page, srv, f"health?{query}") == 200
        rows = page.locator("#audit-list tbody tr").all_inner_texts()
        if any(want in r for r in rows):
            return rows
        page.wait_for_timeout(100)
    raise AssertionError(f"no audit line with {want!r} for {query}: {rows}")


def test_admin_creates_a_user_and_policy_and_the_user_sees_only_what_it_allows(
    page: Any, browser: Any, osrv: ServerProcess, s3o: Any
) -> None:
    mine, other = _name("mine"), _name("other")
    for b in (mine, other):
        s3o.create_bucket(Bucket=b)
        s3o.put_object(Bucket=b, Key="x.txt", Body=b"x")
    user, policy = _name("viewer"), _name("read-mine")
    sign_in(page, osrv)
    assert _go(page, osrv, "identity") == 200
    page.fill("#create-user input[name=name]", user)
    page.click("#create-user button")
    assert page.locator("h1").inner_text() == user
    # The policy editor: text that is not JSON, then JSON the server refuses; the text stays.
    assert _go(page, osrv, "identity") == 200
    page.fill("#policy-editor input[name=name]", policy)
    page.fill("#policy-editor textarea", '{"Version": "2012-10-17", "Statement": [')
    page.click("#policy-editor button")
    assert "The document is not JSON" in page.locator("#policy-error").inner_text()
    assert page.locator("#policy-editor textarea").input_value() == '{"Version": "2012-10-17", "Statement": ['
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Perhaps", "Action": "s3:GetObject", "Resource": "*"}]}
    page.fill("#policy-editor textarea", json.dumps(bad))
    page.click("#policy-editor button")
    assert page.locator("#policy-error").inner_text().startswith("MalformedPolicyDocument: ")
    assert page.locator(f"#policy-list a:text-is('{policy}')").count() == 0
    good = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{mine}"},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{mine}/*"},
        ],
    }
    page.fill("#policy-editor textarea", json.dumps(good))
    page.click("#policy-editor button")
    assert page.locator(".ok").inner_text() == f"Policy {policy} created."
    page.click(f"#user-list a:text-is('{user}')")
    page.select_option("#attach-policy select", label=policy)
    page.click("#attach-policy button")
    assert page.locator("#attached").inner_text().startswith(policy)
    # A new key: its secret on this page, once.
    page.click("#create-key button")
    access_key = page.locator("#new-access-key").inner_text()
    secret = page.locator("#new-secret-key").inner_text()
    assert len(secret) >= 30
    assert _go(page, osrv, f"identity/user/{user}") == 200
    assert access_key in page.content() and secret not in page.content()
    # A service account of the user: a second key, kind "service", its secret shown once too.
    page.fill("#create-service-account input[name=label]", "nightly-job")
    page.click("#create-service-account button")
    assert page.locator("#new-key").inner_text().count("service") == 1
    service_secret = page.locator("#new-secret-key").inner_text()
    assert _go(page, osrv, f"identity/user/{user}") == 200
    assert page.locator("#key-list tbody tr").count() == 2 and service_secret not in page.content()

    # The user's own console, in a fresh context: only what the policy allows.
    context = browser.new_context()
    try:
        mine_page = context.new_page()
        sign_in(mine_page, osrv, access_key, secret)
        assert mine_page.locator("header .who span").inner_text() == user
        assert mine_page.locator("h1").inner_text() == "AccessDenied"  # no s3:ListAllMyBuckets, as with boto3
        assert _go(mine_page, osrv, f"browse/{mine}") == 200
        assert mine_page.locator("#listing a:text-is('x.txt')").count() == 1
        assert _go(mine_page, osrv, f"browse/{other}") == 403
        assert mine_page.locator("h1").inner_text() == "AccessDenied"
        assert _go(mine_page, osrv, "identity") == 403
        refusal = mine_page.locator("#not-allowed").inner_text()
        assert refusal.startswith("Not allowed: your key may not manage identities")
        assert mine_page.locator("#user-list").count() == 0 and user in mine_page.content()  # only the nav's name
        assert _go(mine_page, osrv, "tiers") == 200
        assert mine_page.locator("#tiers .not-allowed").count() == 2 and mine_page.locator("#tier-list").count() == 0
        assert _go(mine_page, osrv, "health") == 200
        assert mine_page.locator(".not-allowed").count() == 3  # store state, metrics, audit log
        assert mine_page.locator("#drive-list").count() == 0 and mine_page.locator("#audit-list").count() == 0
    finally:
        context.close()

    # The admin's audit log, filtered by the user: the refusals and the allowed listing.
    rows = _audit_rows(page, osrv, f"principal={user}&decision=implicit_deny", "ListBuckets")
    assert rows and all("implicit_deny" in r and user in r for r in rows)
    assert any(f"arn:aws:s3:::{other}" in r for r in rows)
    allowed = _audit_rows(page, osrv, f"principal={user}&action=ListObjectsV2&decision=allow", mine)
    assert allowed and all(f"arn:aws:s3:::{mine}" in r and "allow" in r for r in allowed)


def test_health_shows_drives_capacity_and_requests(page: Any, osrv: ServerProcess, s3o: Any) -> None:
    bucket = _name("h")
    s3o.create_bucket(Bucket=bucket)
    for i in range(3):
        s3o.put_object(Bucket=bucket, Key=f"k{i}", Body=b"y" * 10)
    sign_in(page, osrv)
    assert _go(page, osrv, "health") == 200
    drives = page.locator("#drive-list tbody tr")
    assert drives.count() >= 1 and "online" in drives.first.inner_text()
    assert page.locator("#capacity").inner_text().startswith("Capacity: ")
    assert page.locator("#heal-running").inner_text() == "No heal or scrub pass is running."
    apis = {r.split("\t")[0]: r.split("\t") for r in page.locator("#api-list tbody tr").all_inner_texts()}
    assert int(apis["PutObject"][1]) >= 3  # the same counters /metrics shows
    with urllib.request.urlopen(f"{osrv.endpoint}/metrics") as r:  # the scrape: unsigned, no token set
        scraped = r.read().decode()
    puts = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith('tierstore_s3_requests_total{api="PutObject"')
    )
    assert puts >= int(apis["PutObject"][1])
    assert _go(page, osrv, "health") == 200  # a second view: a rate over the time between the two
    assert "requests/s over the last" in page.locator("#request-totals").inner_text()


def test_tiers_show_moves_backlog_errors_and_restores(
    page: Any, osrv: ServerProcess, s3o: Any, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    raw = seaweedfs.client()
    remote = _name("ops-deep")
    raw.create_bucket(Bucket=remote)
    sign_in(page, osrv)
    assert _go(page, osrv, "tiers") == 200
    assert page.locator("#restore-list tbody").inner_text() == "No restores."
    for name, endpoint, bucket, restore in (
        ("OPSDEEP", seaweedfs.endpoint, remote, True),
        ("OPSDOWN", "http://127.0.0.1:9", "nowhere", False),  # nothing listens: its writes wait
    ):
        page.click("#add-tier summary")
        page.fill("#add-tier input[name=name]", name)
        page.fill("#add-tier input[name=endpoint]", endpoint)
        page.fill("#add-tier input[name=bucket]", bucket)
        page.fill("#add-tier input[name=access_key_id]", seaweedfs.access_key)
        page.fill("#add-tier input[name=secret_key]", seaweedfs.secret_key)
        if restore:
            page.check("#add-tier input[name=restore_required]")
        page.check("#add-tier input[name=allow_private]")
        page.click("#add-tier button")
        assert page.locator(".ok").inner_text() == f"Tier {name} added."
    assert seaweedfs.secret_key not in page.content()
    settle()
    bucket = _name("t")
    s3o.create_bucket(Bucket=bucket)
    s3o.put_object(Bucket=bucket, Key="deep.bin", Body=b"d" * 5000, StorageClass="OPSDEEP")
    s3o.put_object(Bucket=bucket, Key="down.bin", Body=b"w" * 5000, StorageClass="OPSDOWN")
    assert s3o.restore_object(Bucket=bucket, Key="deep.bin", RestoreRequest={"Days": 1})["ResponseMetadata"][
        "HTTPStatusCode"
    ] in (200, 202)
    assert _go(page, osrv, "tiers") == 200
    rows = {r.split("\t")[0]: r.split("\t") for r in page.locator("#tier-list tbody tr").all_inner_texts()}
    deep, down = rows["OPSDEEP"], rows["OPSDOWN"]
    assert deep[2] == "yes" and deep[9].startswith("1 (") and deep[10] == "0"  # moved one object, no errors
    assert down[7] == "1" and int(down[10]) >= 1 and down[11]  # the write waits; its error is shown
    restores = page.locator("#restore-list tbody tr").all_inner_texts()
    assert len(restores) == 1 and restores[0].startswith("restore:")
    assert restores[0].split("\t")[1] in ("in progress", "done")
