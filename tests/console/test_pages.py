"""Pages 1 and 2 in a real browser against the session's server: buckets and their settings,
uploads (a 20 MiB file through browser multipart, a folder) and byte-exact downloads,
restoring a version, share links without a session, inert XSS, and a
restricted user's console refused what its key is refused."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.console.conftest import sign_in
from tierstore.client import TierstoreClient, resolve_settings


def _name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def s3(server: ServerProcess):  # type: ignore[no-untyped-def]
    return make_client(server.endpoint)


def _browse(page, server: ServerProcess, bucket: str, prefix: str = "") -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.endpoint}/console/browse/{bucket}" + (f"?prefix={quote(prefix, safe='')}" if prefix else ""))


def _object(page, server: ServerProcess, bucket: str, key: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.endpoint}/console/object/{bucket}?key={quote(key, safe='')}")


def test_create_a_bucket_and_change_its_settings(page, server: ServerProcess, s3) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, server)
    name = _name("made")
    page.fill("#create-bucket input[name=name]", name)
    page.check("#create-bucket input[name=versioning]")
    page.click("#create-bucket button")
    assert f"Created bucket {name}." in page.locator(".ok").inner_text()
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    page.click(f"#buckets tr:has(a:text-is('{name}')) a:text('settings')")
    assert page.locator("#versioning .status").inner_text() == "Enabled"
    page.click("#versioning button[value=Suspended]")
    assert page.locator("#versioning .status").inner_text() == "Suspended"
    rules = {"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://example.org"]}]}
    page.fill("#cors textarea", json.dumps(rules))
    page.click("#cors button")
    assert "CORS rules saved." in page.locator(".ok").inner_text()
    assert s3.get_bucket_cors(Bucket=name)["CORSRules"][0]["AllowedOrigins"] == ["https://example.org"]
    page.fill("#policy textarea", "{not json")
    page.click("#policy button")
    assert page.locator(".error").inner_text().startswith("The policy is not valid JSON")
    page.go_back()
    page.check("#delete input[type=checkbox]")
    page.click("#delete button")
    assert f"Deleted bucket {name}." in page.locator(".ok").inner_text()
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_upload_a_large_file_and_a_folder_and_download_them(page, server: ServerProcess, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = _name("up")
    s3.create_bucket(Bucket=bucket)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    folder = tmp_path / "shots"
    (folder / "inner").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha\n")
    (folder / "inner" / "b.json").write_bytes(b'{"b": 2}')
    sign_in(page, server)
    _browse(page, server, bucket, "in/")
    page.set_input_files("#upload input[name=files]", str(big))
    page.wait_for_selector("#upload[data-state=done]", timeout=120_000)
    page.set_input_files("#upload input[name=folder]", str(folder))
    page.wait_for_selector("#upload[data-state=done]", timeout=60_000)
    head = s3.head_object(Bucket=bucket, Key="in/big.bin")
    assert head["ETag"].endswith('-3"')  # three 8 MiB parts: browser multipart through presigned URLs
    assert s3.get_object(Bucket=bucket, Key="in/big.bin")["Body"].read() == big.read_bytes()
    assert s3.get_object(Bucket=bucket, Key="in/shots/a.txt")["Body"].read() == b"alpha\n"
    assert s3.get_object(Bucket=bucket, Key="in/shots/inner/b.json")["Body"].read() == b'{"b": 2}'
    # Download through the browser, byte-exact.
    page.click("a.refresh")
    with page.expect_download() as got:
        page.click("#listing tr:has(a:text-is('big.bin')) a[download]")
    saved = tmp_path / "downloaded.bin"
    got.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    page.click("#listing a:text-is('shots/')")
    page.click("#listing a:text-is('inner/')")
    with page.expect_download() as got:
        page.click("#listing tr:has(a:text-is('b.json')) a[download]")
    got.value.save_as(tmp_path / "b.json")
    assert (tmp_path / "b.json").read_bytes() == b'{"b": 2}'
    assert got.value.suggested_filename == "b.json"


def test_restore_a_previous_version(page, server: ServerProcess, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _name("ver")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="notes/model.txt", Body=b"first")["VersionId"]
    s3.put_object(Bucket=bucket, Key="notes/model.txt", Body=b"second")
    s3.delete_object(Bucket=bucket, Key="notes/model.txt")  # the current version is a delete marker
    sign_in(page, server)
    _browse(page, server, bucket, "notes/")
    assert page.locator("#listing tr.object").count() == 0  # deleted: not in a plain listing
    page.click("#toggle-versions")  # ListObjectVersions: deleted keys too
    assert page.locator("#listing tr.object.deleted").inner_text().startswith("model.txt (deleted) 3 versions")
    page.click("#listing tr.object a:text-is('model.txt')")
    assert page.locator("#no-current").count() == 1
    assert page.locator("#versions tr.marker.latest").count() == 1
    page.click(f"#versions tr:has(a:text-is('{v1}')) button.restore")
    assert f"Restored version {v1}." in page.locator(".ok").inner_text()
    assert s3.get_object(Bucket=bucket, Key="notes/model.txt")["Body"].read() == b"first"
    versions = s3.list_object_versions(Bucket=bucket, Prefix="notes/model.txt")
    assert len(versions["Versions"]) == 3 and len(versions["DeleteMarkers"]) == 1  # nothing was lost
    assert page.locator("#preview").inner_text() == "first"


def test_a_share_link_works_without_a_session(page, browser, server: ServerProcess, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _name("share")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="report.txt", Body=b"a,b\n1,2\n", ContentType="text/plain")
    sign_in(page, server)
    _object(page, server, bucket, "report.txt")
    page.select_option("#share select[name=expires_s]", "86400")
    page.click("#share button")
    link = page.locator("#share-link").input_value()
    assert "X-Amz-Expires=86400" in link and "X-Amz-Security-Token=" in link
    assert "one-hour" not in page.locator("main").inner_text()
    fresh = browser.new_context()  # no cookies: no console session
    try:
        other = fresh.new_page()
        resp = other.goto(link)
        assert resp is not None and resp.status == 200 and resp.body() == b"a,b\n1,2\n"
        other.goto(f"{server.endpoint}/console/object/{bucket}?key=report.txt")
        assert "/console/login" in other.url  # the link opens the object, not the console
    finally:
        fresh.close()


def test_html_and_script_in_keys_metadata_and_bodies_are_inert(page, server: ServerProcess, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = _name("xss")
    s3.create_bucket(Bucket=bucket)
    evil_key = "<img src=x onerror=alert('key')>/\"><svg onload=alert('k2')>.txt"
    s3.put_object(
        Bucket=bucket, Key=evil_key, Body=b"<script>alert('body')</script><img src=x onerror=alert('b2')>",
        ContentType="text/html", Metadata={"note": "<svg onload=alert('meta')>"},
    )  # fmt: skip
    s3.put_object(Bucket=bucket, Key="page.html", Body=b"<script>alert('page')</script>", ContentType="text/html")
    sign_in(page, server)
    _browse(page, server, bucket)
    page.click("#listing a:text-is(\"<img src=x onerror=alert('key')>/\")")
    link = page.locator("#listing tr.object a").first
    assert link.inner_text() == "\"><svg onload=alert('k2')>.txt"
    link.click()
    assert page.locator("h1.key").inner_text() == evil_key
    assert page.locator("#metadata td").inner_text() == "<svg onload=alert('meta')>"
    assert page.locator("#preview").inner_text().startswith("<script>alert('body')</script>")
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    # An HTML object opened as a page (a share link) runs nothing: sandboxed away from the console.
    _object(page, server, bucket, "page.html")
    page.click("#share button")
    page.goto(page.locator("#share-link").input_value())
    assert page.dialogs == []


def test_a_restricted_user_sees_only_what_its_policy_allows(page, server: ServerProcess, s3, client) -> None:  # type: ignore[no-untyped-def]
    mine, other = _name("mine"), _name("other")
    for b in (mine, other):
        s3.create_bucket(Bucket=b)
        s3.put_object(Bucket=b, Key="x.txt", Body=b"x")
    iam = boto3.client(
        "iam", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )  # fmt: skip
    user = _name("viewer")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{mine}"},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{mine}/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="read-mine", PolicyDocument=json.dumps(policy))
    sign_in(page, server, key["AccessKeyId"], key["SecretAccessKey"])
    assert page.locator("h1").inner_text() == "AccessDenied"  # no s3:ListAllMyBuckets: as with boto3
    assert page.locator("header .who span").inner_text() == user
    _browse(page, server, mine)
    assert page.locator("#listing a:text-is('x.txt')").count() == 1
    _browse(page, server, other)
    assert page.locator("h1").inner_text() == "AccessDenied"
    _object(page, server, mine, "x.txt")
    page.check("#delete input[type=checkbox]")
    page.click("#delete button")
    assert page.locator("h1").inner_text() == "AccessDenied"
    assert s3.get_object(Bucket=mine, Key="x.txt")["Body"].read() == b"x"
    # The Buckets page's counts (GET /_tierstore/usage) name only the buckets a key may list.
    settings = resolve_settings(server.endpoint, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    seen = {row["bucket"] for row in TierstoreClient(settings).bucket_usage()["buckets"]}
    assert seen <= {mine}  # (the aggregate is cached per worker, up to 30 s old: which buckets it holds varies)
    assert isinstance(client.bucket_usage()["complete"], bool)


def test_previews_of_json_parquet_and_images(page, server: ServerProcess, s3) -> None:  # type: ignore[no-untyped-def]
    import base64
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket = _name("pre")
    s3.create_bucket(Bucket=bucket)
    table = pa.table({"path": [f"img/{i}.jpg" for i in range(100)], "label": [i % 3 for i in range(100)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=50)
    s3.put_object(Bucket=bucket, Key="manifest.parquet", Body=buf.getvalue())
    s3.put_object(Bucket=bucket, Key="labels.json", Body=b'{"cat":0,"dog":1}', ContentType="application/json")
    png = base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    s3.put_object(Bucket=bucket, Key="cat.png", Body=png, ContentType="image/png")
    sign_in(page, server)
    _object(page, server, bucket, "manifest.parquet")
    assert page.locator("#parquet th").all_inner_texts() == ["path", "label"]
    assert page.locator("#parquet tbody tr").count() == 20  # the first rows only, read by ranged GETs
    assert page.locator("#parquet tbody tr").first.inner_text().split("\t") == ["img/0.jpg", "0"]
    _object(page, server, bucket, "labels.json")
    assert page.locator("#preview").inner_text() == '{\n  "cat": 0,\n  "dog": 1\n}'
    _object(page, server, bucket, "cat.png")
    image = page.locator("img.preview")
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 1  # loaded through a presigned GET
