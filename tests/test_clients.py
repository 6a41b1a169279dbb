"""Real S3 clients against a real server: the aws cli, s3fs/fsspec, and the boto3 resource API."""

from __future__ import annotations

import filecmp
import hashlib
import http.client
import io
import json
import os
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
import s3fs
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, aws_cli

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rng() -> random.Random:
    seed = int(os.environ.get("TIERSTORE_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"test_clients seed: {seed} (replay: TIERSTORE_TEST_SEED={seed})")
    return random.Random(seed)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def http_get(url: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    assert parts.port is not None
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", urlunsplit(("", "", parts.path, parts.query, "")))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# --- aws cli ----------------------------------------------------------------------------


class Aws:
    def __init__(self, server: ServerProcess, home: Path) -> None:
        self.endpoint = server.endpoint
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [aws_cli(), "--endpoint-url", self.endpoint, *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture
def aws(server: ServerProcess, tmp_path: Path) -> Aws:
    return Aws(server, tmp_path / "home")


@pytest.fixture
def cli_bucket(aws: Aws, s3: Any) -> Any:
    name = f"cli-{uuid.uuid4().hex[:16]}"
    out = aws.run("s3", "mb", f"s3://{name}")
    assert f"make_bucket: {name}" in out.stdout
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    yield name
    aws.run("s3", "rb", f"s3://{name}", "--force", check=False)


def write_tree(root: Path, rng: random.Random) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "empty": b"",
        "dir/b.bin": rng.randbytes(70_000),
        "dir/sub/c.bin": rng.randbytes(1234),
        "dir/sub/deeper/d with space.txt": b"spaces",
        "unicodé/ü.txt": "ü".encode(),
    }
    # S3 keeps LastModified in whole seconds, and `aws s3 sync` uploads when the local mtime is
    # newer: files written in the same second as their upload would be uploaded again.
    an_hour_ago = time.time() - 3600
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (an_hour_ago, an_hour_ago))
    return files


def test_aws_cli_cp_small_and_multipart(aws: Aws, s3: Any, cli_bucket: str, tmp_path: Path, rng: random.Random) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from the aws cli\n")
    big = tmp_path / "big.bin"
    big_data = rng.randbytes(20 * MIB)
    big.write_bytes(big_data)
    aws.run("s3", "cp", str(small), f"s3://{cli_bucket}/small.txt")
    aws.run("s3", "cp", str(big), f"s3://{cli_bucket}/dir/big.bin")
    head = s3.head_object(Bucket=cli_bucket, Key="dir/big.bin")
    assert head["ContentLength"] == len(big_data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # 8 MiB parts: multipart
    assert s3.get_object(Bucket=cli_bucket, Key="small.txt")["Body"].read() == small.read_bytes()

    down_small = tmp_path / "down" / "small.txt"
    down_big = tmp_path / "down" / "big.bin"
    aws.run("s3", "cp", f"s3://{cli_bucket}/small.txt", str(down_small))
    aws.run("s3", "cp", f"s3://{cli_bucket}/dir/big.bin", str(down_big))  # ranged, parallel GETs
    assert down_small.read_bytes() == small.read_bytes()
    assert md5(down_big.read_bytes()) == md5(big_data)

    # Streams: stdin up, stdout down.
    proc = subprocess.run(
        [aws_cli(), "--endpoint-url", aws.endpoint, "s3", "cp", "-", f"s3://{cli_bucket}/stdin.bin"],
        input=b"from stdin" * 1000,
        env=aws.env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [aws_cli(), "--endpoint-url", aws.endpoint, "s3", "cp", f"s3://{cli_bucket}/stdin.bin", "-"],
        env=aws.env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"from stdin" * 1000


def test_aws_cli_ls(aws: Aws, s3: Any, cli_bucket: str) -> None:
    for key in ("top.txt", "dir/one.txt", "dir/sub/two.txt", "other/three.txt"):
        s3.put_object(Bucket=cli_bucket, Key=key, Body=key.encode())
    buckets = aws.run("s3", "ls").stdout
    assert cli_bucket in buckets
    top = aws.run("s3", "ls", f"s3://{cli_bucket}/").stdout.splitlines()
    assert sorted(line.split()[-1] for line in top) == ["dir/", "other/", "top.txt"]
    assert any(line.strip() == "PRE dir/" for line in top)
    rec = aws.run("s3", "ls", "--recursive", f"s3://{cli_bucket}/").stdout.splitlines()
    assert [line.split()[-1] for line in rec] == ["dir/one.txt", "dir/sub/two.txt", "other/three.txt", "top.txt"]
    sizes = {line.split()[-1]: int(line.split()[-2]) for line in rec}
    assert sizes["dir/sub/two.txt"] == len(b"dir/sub/two.txt")
    sub = aws.run("s3", "ls", "--recursive", f"s3://{cli_bucket}/dir/").stdout.splitlines()
    assert [line.split()[-1] for line in sub] == ["dir/one.txt", "dir/sub/two.txt"]
    missing = aws.run("s3", "ls", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/", check=False)
    assert missing.returncode != 0
    assert "NoSuchBucket" in missing.stderr


def test_aws_cli_sync_both_ways_and_rm(aws: Aws, s3: Any, cli_bucket: str, tmp_path: Path, rng: random.Random) -> None:
    src = tmp_path / "src"
    files = write_tree(src, rng)
    aws.run("s3", "sync", str(src), f"s3://{cli_bucket}/tree")
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=cli_bucket)["Contents"]}
    assert listed == {f"tree/{k}": len(v) for k, v in files.items()}
    # A second sync uploads nothing.
    again = aws.run("s3", "sync", str(src), f"s3://{cli_bucket}/tree")
    assert "upload:" not in again.stdout
    # Change one file, add one; sync uploads just those.
    (src / "a.txt").write_bytes(b"alpha, changed and longer\n")
    (src / "new.txt").write_bytes(b"new")
    changed = aws.run("s3", "sync", str(src), f"s3://{cli_bucket}/tree").stdout
    assert sorted(line.split()[-1] for line in changed.splitlines() if line.startswith("upload:")) == [
        f"s3://{cli_bucket}/tree/a.txt",
        f"s3://{cli_bucket}/tree/new.txt",
    ]
    dst = tmp_path / "dst"
    aws.run("s3", "sync", f"s3://{cli_bucket}/tree", str(dst))
    cmp = filecmp.dircmp(src, dst)
    assert _same_tree(cmp), (cmp.left_only, cmp.right_only, cmp.diff_files)
    # --delete removes remote files gone locally.
    (src / "dir" / "b.bin").unlink()
    aws.run("s3", "sync", "--delete", str(src), f"s3://{cli_bucket}/tree")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=cli_bucket)["Contents"]}
    assert "tree/dir/b.bin" not in keys and "tree/dir/sub/c.bin" in keys

    out = aws.run("s3", "rm", "--recursive", f"s3://{cli_bucket}/tree/dir/").stdout
    assert out.count("delete:") == 2
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=cli_bucket)["Contents"]}
    assert not any(k.startswith("tree/dir/") for k in keys)
    aws.run("s3", "rm", "--recursive", f"s3://{cli_bucket}/")
    assert s3.list_objects_v2(Bucket=cli_bucket)["KeyCount"] == 0


def _same_tree(cmp: filecmp.dircmp[str]) -> bool:
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    # filecmp compares by stat signature first; re-check the content of every common file.
    for name in cmp.common_files:
        if Path(cmp.left, name).read_bytes() != Path(cmp.right, name).read_bytes():
            return False
    return all(_same_tree(sub) for sub in cmp.subdirs.values())


def test_aws_cli_s3api_head_object_and_presign(aws: Aws, s3: Any, cli_bucket: str) -> None:
    readme = b"# hi\n"
    s3.put_object(Bucket=cli_bucket, Key="doc/readme.md", Body=readme, ContentType="text/markdown", Metadata={"a": "b"})
    head = json.loads(aws.run("s3api", "head-object", "--bucket", cli_bucket, "--key", "doc/readme.md").stdout)
    assert head["ContentLength"] == 5
    assert head["ContentType"] == "text/markdown"
    assert head["ETag"] == f'"{md5(readme)}"'
    assert head["Metadata"] == {"a": "b"}
    missing = aws.run("s3api", "head-object", "--bucket", cli_bucket, "--key", "nope", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr

    url = aws.run("s3", "presign", f"s3://{cli_bucket}/doc/readme.md", "--expires-in", "300").stdout.strip()
    assert url.startswith(aws.endpoint)
    assert http_get(url) == (200, readme)
    status, body = http_get(url.replace("readme.md", "other.md"))
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_aws_cli_bucket_lifecycle(aws: Aws, s3: Any) -> None:
    name = f"cli-{uuid.uuid4().hex[:16]}"
    aws.run("s3", "mb", f"s3://{name}")
    aws.run("s3", "mb", f"s3://{name}")  # again, in us-east-1: AWS's legacy 200 for an owned bucket
    again = aws.run("s3", "mb", f"s3://{name}", "--region", "eu-west-1", check=False)
    assert again.returncode != 0 and "BucketAlreadyOwnedByYou" in again.stderr
    s3.put_object(Bucket=name, Key="x", Body=b"x")
    not_empty = aws.run("s3", "rb", f"s3://{name}", check=False)
    assert not_empty.returncode != 0 and "BucketNotEmpty" in not_empty.stderr
    aws.run("s3", "rb", f"s3://{name}", "--force")
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# --- s3fs / fsspec ----------------------------------------------------------------------


@pytest.fixture
def fs(server: ServerProcess) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        client_kwargs={"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def test_s3fs_files(fs: s3fs.S3FileSystem, s3: Any, bucket: str, tmp_path: Path, rng: random.Random) -> None:
    local = tmp_path / "up.bin"
    data = rng.randbytes(300_000)
    local.write_bytes(data)
    fs.put_file(str(local), f"{bucket}/up/up.bin")
    assert s3.get_object(Bucket=bucket, Key="up/up.bin")["Body"].read() == data
    down = tmp_path / "down.bin"
    fs.get_file(f"{bucket}/up/up.bin", str(down))
    assert down.read_bytes() == data

    with fs.open(f"{bucket}/text/hello.txt", "wb") as f:
        f.write(b"hello ")
        f.write(b"world")
    with fs.open(f"{bucket}/text/hello.txt", "rb") as f:
        assert f.read() == b"hello world"
    with fs.open(f"{bucket}/text/hello.txt", "r") as f:
        assert f.read() == "hello world"

    assert fs.exists(f"{bucket}/text/hello.txt")
    assert fs.exists(f"{bucket}/text")  # a "directory": a prefix with objects under it
    assert not fs.exists(f"{bucket}/text/nope.txt")
    info = fs.info(f"{bucket}/text/hello.txt")
    assert info["size"] == 11
    assert info["type"] == "file"
    assert info["ETag"] == f'"{md5(b"hello world")}"'
    assert fs.info(f"{bucket}/text")["type"] == "directory"

    assert sorted(fs.ls(bucket, detail=False)) == [f"{bucket}/text", f"{bucket}/up"]
    detail = fs.ls(f"{bucket}/up", detail=True)
    assert [(d["name"], d["size"], d["type"]) for d in detail] == [(f"{bucket}/up/up.bin", len(data), "file")]
    assert sorted(fs.find(bucket)) == [f"{bucket}/text/hello.txt", f"{bucket}/up/up.bin"]
    assert fs.find(f"{bucket}/te") == []  # find takes a directory, not a key prefix
    assert fs.glob(f"{bucket}/**/*.txt") == [f"{bucket}/text/hello.txt"]

    assert fs.cat_file(f"{bucket}/up/up.bin", start=10, end=20) == data[10:20]
    assert fs.cat_file(f"{bucket}/up/up.bin", start=-100) == data[-100:]
    assert fs.cat_file(f"{bucket}/up/up.bin", start=len(data) - 5) == data[-5:]
    assert fs.cat_file(f"{bucket}/up/up.bin", start=0, end=1) == data[:1]
    assert fs.cat_file(f"{bucket}/up/up.bin") == data
    with fs.open(f"{bucket}/up/up.bin", "rb", block_size=4096) as f:
        f.seek(123_456)
        assert f.read(1000) == data[123_456:124_456]

    fs.rm(f"{bucket}/text/hello.txt")
    assert not fs.exists(f"{bucket}/text/hello.txt")
    fs.rm(f"{bucket}/up", recursive=True)
    assert fs.find(bucket) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_s3fs_multipart_write(fs: s3fs.S3FileSystem, s3: Any, bucket: str, rng: random.Random) -> None:
    data = rng.randbytes(12 * MIB + 12345)
    with fs.open(f"{bucket}/big.bin", "wb", block_size=5 * MIB) as f:
        for i in range(0, len(data), 1_000_000):
            f.write(data[i : i + 1_000_000])
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    with fs.open(f"{bucket}/big.bin", "rb") as f:
        assert md5(f.read()) == md5(data)
    assert fs.cat_file(f"{bucket}/big.bin", start=5 * MIB - 10, end=5 * MIB + 10) == data[5 * MIB - 10 : 5 * MIB + 10]
    assert fs.size(f"{bucket}/big.bin") == len(data)


def test_s3fs_buckets(fs: s3fs.S3FileSystem, s3: Any) -> None:
    name = f"fs-{uuid.uuid4().hex[:16]}"
    fs.mkdir(name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert fs.exists(name)
    assert fs.ls(name) == []
    fs.pipe(f"{name}/a/b/c", b"deep")
    assert fs.cat(f"{name}/a/b/c") == b"deep"
    assert fs.isdir(f"{name}/a/b")
    assert fs.isfile(f"{name}/a/b/c")
    fs.rm(name, recursive=True)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not fs.exists(f"no-such-bucket-{uuid.uuid4().hex[:8]}/key")


# --- boto3 resource API -----------------------------------------------------------------


@pytest.fixture
def resource(server: ServerProcess) -> Any:
    return boto3.resource(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_boto3_resource(resource: Any, bucket: str, rng: random.Random) -> None:
    b = resource.Bucket(bucket)
    for i in range(25):
        b.Object(f"logs/2024/{i:03d}.log").put(Body=f"line {i}\n".encode(), Metadata={"n": str(i)})
    b.Object("other/x").put(Body=b"x")
    keys = [o.key for o in b.objects.filter(Prefix="logs/")]
    assert keys == [f"logs/2024/{i:03d}.log" for i in range(25)]
    paged = [o.key for o in b.objects.filter(Prefix="logs/").page_size(7)]
    assert paged == keys
    assert [o.key for o in b.objects.all()] == [*keys, "other/x"]
    obj = resource.Object(bucket, "logs/2024/007.log")
    got = obj.get()
    assert got["Body"].read() == b"line 7\n"
    assert obj.metadata == {"n": "7"}
    assert obj.content_length == len(b"line 7\n")

    data = rng.randbytes(300_000)
    b.upload_fileobj(io.BytesIO(data), "up/small.bin")
    out = io.BytesIO()
    b.download_fileobj("up/small.bin", out)
    assert out.getvalue() == data

    big = rng.randbytes(11 * MIB)
    tc = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)
    b.upload_fileobj(io.BytesIO(big), "up/big.bin", Config=tc)
    assert resource.Object(bucket, "up/big.bin").e_tag.strip('"').endswith("-3")
    out = io.BytesIO()
    b.download_fileobj("up/big.bin", out, Config=tc)  # ranged GETs in parallel
    assert md5(out.getvalue()) == md5(big)

    deleted = b.objects.filter(Prefix="logs/").delete()
    assert sum(len(r.get("Deleted", [])) for r in deleted) == 25
    assert [o.key for o in b.objects.all()] == ["other/x", "up/big.bin", "up/small.bin"]
