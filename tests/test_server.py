"""`tierstore serve` as an operator meets it: help, generated credentials, virtual-hosted style."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, free_port
from tests.s3http import signed_request


def test_serve_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tierstore", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--data", "--address", "--access-key", "--secret-key", "--domain", "--workers"):
        assert flag in out


def test_generated_credentials_are_kept_0600_and_the_secret_printed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
    cmd = [sys.executable, "-m", "tierstore", "serve", "--data", str(data), "--address", f"127.0.0.1:{port}"]
    outs = []
    for start in range(2):  # the second start reuses the pair
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True)
        lines = []
        assert proc.stdout is not None
        while not any("endpoint:" in x for x in lines):
            line = proc.stdout.readline()
            assert line, "server exited early: " + "".join(lines)
            lines.append(line)
        cred_file = data / "credentials.json"
        doc = json.loads(cred_file.read_text())
        assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
        text = "".join(lines)
        assert doc["access_key"] in text
        if start == 0:
            assert doc["secret_key"] in text
        else:  # later starts say where the secret is kept, never the secret
            assert doc["secret_key"] not in text
            assert f"the secret key is kept in {cred_file}" in text
        outs.append(doc)
        # The printed pair works.
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=doc["access_key"],
            aws_secret_access_key=doc["secret_key"],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}),
        )
        for _ in range(100):
            try:
                s3.list_buckets()
                break
            except Exception:
                time.sleep(0.1)
        assert s3.list_buckets()["Buckets"] == []
        s3.close()  # no idle keep-alive connection left for the shutdown grace to wait on
        proc.terminate()
        assert proc.wait(60) == 0
        proc.stdout.close()
    assert outs[0] == outs[1]


def test_virtual_hosted_style(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--domain", "s3.localtest"])
    srv.start()
    try:
        path_client = boto3.client(
            "s3",
            endpoint_url=srv.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        path_client.create_bucket(Bucket="vhost")

        # botocore would resolve vhost.s3.localtest by DNS; sign and send the Host header by hand.
        host = {"host": f"vhost.s3.localtest:{srv.port}"}
        r = signed_request(srv, "PUT", "/dir/key.txt", b"hello vhost", headers=host)
        assert r.status == 200, r.body
        assert path_client.get_object(Bucket="vhost", Key="dir/key.txt")["Body"].read() == b"hello vhost"
        r = signed_request(srv, "GET", "/dir/key.txt", headers=host)
        assert (r.status, r.body) == (200, b"hello vhost")
        r = signed_request(srv, "GET", "/", headers=host, query=[("list-type", "2")])
        assert r.status == 200 and b"<Key>dir/key.txt</Key>" in r.body
    finally:
        srv.stop()
