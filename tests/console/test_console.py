"""The console's foundation, in a real browser against the session's server: sign-in, sessions,
CSRF, the nav, and ``/console`` beside a bucket named ``console`` (docs/console.md)."""

from __future__ import annotations

import http.client
import uuid

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.console.conftest import sign_in
from tierstore.console import PAGES


def _post(server: ServerProcess, path: str, body: str, cookie: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"content-type": "application/x-www-form-urlencoded", "cookie": cookie}
        conn.request("POST", path, body=body.encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _get(server: ServerProcess, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_sign_in_shows_every_page_and_signs_out(page, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    assert page.url.endswith("/console/buckets")
    assert page.locator("header .who span").inner_text() == "root"
    nav = page.locator("header nav a")
    assert nav.count() == len(PAGES) == 9
    page.click("header nav a:has-text('Models')")
    assert page.locator("main h1").inner_text() == "Models"
    cookie = next(c for c in page.context.cookies() if c["name"] == "tierstore_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert SECRET_KEY not in cookie["value"] and ACCESS_KEY not in cookie["value"]  # sealed, not readable
    copied = cookie["value"]  # what a thief (or another tab) holds
    page.click("header .who button")
    assert "/console/login" in page.url
    page.goto(f"{server.endpoint}/console/buckets")  # signed out: back to the sign-in page
    assert "/console/login" in page.url
    # The copied cookie is dead too: sign-out ended the session, not only this browser's cookie.
    page.context.add_cookies([{**cookie, "value": copied}])
    page.goto(f"{server.endpoint}/console/buckets")
    assert "/console/login" in page.url
    status, _ = _post(server, "/console/buckets", "name=after-sign-out", f"tierstore_console={copied}")
    assert status == 401


def test_no_page_without_a_session(page, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.endpoint}/console/browse/anything?prefix=a%2F")
    assert "/console/login?next=" in page.url
    paths = ("/console/", "/console/buckets", "/console/health", "/console/no-such-page")
    for path in (*paths, "/console/browse/b?prefix=Signature%3DX-Amz-Signature%2F"):  # a page, not a presigned URL
        resp = _get(server, path)
        assert resp.status == 303, path
        assert resp.getheader("location", "").startswith("/console/login?next="), path
    # A forged cookie is no session either.
    status, _ = _post(server, "/console/buckets", "name=forged-cookie-bucket", "tierstore_console=AAAA")
    assert status == 401


def test_a_write_without_the_csrf_token_is_refused(page, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    value = next(c["value"] for c in page.context.cookies() if c["name"] == "tierstore_console")
    cookie = f"tierstore_console={value}"
    name = f"csrf-{uuid.uuid4().hex[:12]}"
    s3 = make_client(server.endpoint)
    status, body = _post(server, "/console/buckets", f"name={name}", cookie)
    assert status == 403 and "CSRF" in body
    status, _ = _post(server, "/console/buckets", f"name={name}&csrf=wrong-token", cookie)
    assert status == 403
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # The same write with the page's token goes through (as the session's principal).
    token = page.locator("body").get_attribute("data-csrf")
    status, _ = _post(server, "/console/buckets", f"name={name}&csrf={token}", cookie)
    assert status == 303
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket=name)


def test_a_wrong_secret_does_not_say_which_part_was_wrong(page, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    wrong_secret = "not-the-secret-" + uuid.uuid4().hex
    sign_in(page, server, ACCESS_KEY, wrong_secret)
    assert "/console/login" in page.url
    bad_secret = page.locator(".error").inner_text()
    sign_in(page, server, "AKNOSUCHKEY000000000", wrong_secret)
    bad_key = page.locator(".error").inner_text()
    assert bad_secret == bad_key and "Sign-in failed" in bad_key
    assert not any(c["name"] == "tierstore_console" for c in page.context.cookies())
    assert wrong_secret not in server.log()


def test_signed_requests_to_a_bucket_named_console_stay_s3(server: ServerProcess) -> None:
    """``console`` is a valid bucket name: signed and presigned requests reach S3, not the console."""
    s3 = make_client(server.endpoint)
    s3.create_bucket(Bucket="console")
    try:
        s3.put_object(Bucket="console", Key="login", Body=b"an object, not a page")
        assert s3.get_object(Bucket="console", Key="login")["Body"].read() == b"an object, not a page"
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "console", "Key": "login"})
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", url.removeprefix(server.endpoint))
        assert conn.getresponse().read() == b"an object, not a page"
        conn.close()
    finally:
        s3.delete_object(Bucket="console", Key="login")
        s3.delete_bucket(Bucket="console")


def test_console_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = ServerProcess(tmp_path / "data", extra_args=["--console", "off"])
    srv.start()
    try:
        resp = _get(srv, "/console/login")
        assert resp.status == 403  # an anonymous S3 request for an object of bucket "console"
        assert resp.getheader("x-amz-request-id") is not None and resp.getheader("location") is None
    finally:
        srv.stop()
