"""``tierstore admin tier add|ls|rm|status`` against the session server (cli/_tiers.py): the
round trip; the tier's secret key from ``$TIERSTORE_TIER_SECRET_KEY`` (or --secret-key), never
printed; ``--server`` names the tierstore server on ``add`` (whose --endpoint is the tier's);
bad names and refused endpoints are one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port
from tierstore.client import TierstoreClient

SECRET = "TierSecretKey/cli-abcdefghij0123456789"
ENV_SECRET = "TierSecretKey/env-zyxwvutsrq9876543210"


@pytest.fixture
def clean(client: TierstoreClient) -> Iterator[None]:
    """Every tier a test adds is removed after it (the session server is shared)."""
    yield
    for tier in client.tier_list():
        client.tier_remove(tier["name"])


def _run(endpoint: str, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m tierstore ARGS`` with the root's keys and ``$TIERSTORE_ENDPOINT=endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "tierstore", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        stdin=subprocess.DEVNULL,  # not a terminal: no prompt
        timeout=180,
        check=False,
    )


def test_add_ls_status_rm(server: ServerProcess, clean: None) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # $TIERSTORE_ENDPOINT: --server wins on add
    added = json.loads(
        ok(
            _run(
                nowhere,
                "admin", "tier", "add", "COLD", "--endpoint", "http://127.0.0.1:8333", "--bucket", "archive",
                "--prefix", "tiers/", "--access-key", "AKIATIERCLI", "--region", "eu-west-1",
                "--allow-private-endpoint", "--server", server.endpoint,
                TIERSTORE_TIER_SECRET_KEY=ENV_SECRET,
            )
        )
    )  # fmt: skip
    assert (added["name"], added["bucket"], added["prefix"], added["region"], added["keys_set"]) == (
        "COLD",
        "archive",
        "tiers/",
        "eu-west-1",
        True,
    )
    made = cli(
        server, "admin", "tier", "add", "GLACIER", "--endpoint", "http://127.0.0.1:8333", "--bucket", "deep",
        "--access-key", "AKIAGLACIER", "--secret-key", SECRET, "--restore-required", "--allow-private-endpoint",
    )  # fmt: skip
    assert json.loads(ok(made))["restore_required"] is True
    listing = ok(cli(server, "admin", "tier", "ls"))
    tiers = json.loads(listing)
    assert [(t["name"], t["access_key_id"], t["keys_set"]) for t in tiers] == [
        ("COLD", "AKIATIERCLI", True),
        ("GLACIER", "AKIAGLACIER", True),
    ]
    status = json.loads(ok(cli(server, "admin", "tier", "status", "COLD")))
    assert status == [
        {
            "name": "COLD", "blobs": 0, "bytes": 0, "outbox": 0, "uploads": 0,
            "backlog": {"total": 0, "due": 0, "pending": 0, "outbox": 0},
            "moved_bytes": 0, "moved_objects": 0, "errors": 0, "last_error": None, "last_error_at": None,
        }
    ]  # fmt: skip
    assert [s["name"] for s in json.loads(ok(cli(server, "admin", "tier", "status")))] == ["COLD", "GLACIER"]
    assert json.loads(ok(cli(server, "admin", "tier", "rm", "GLACIER"))) == {"removed": "GLACIER"}
    one_line_error(cli(server, "admin", "tier", "rm", "GLACIER"), "NoSuchTier (404)")
    one_line_error(
        cli(server, "admin", "tier", "add", "COLD", "--endpoint", "http://127.0.0.1:1", "--bucket", "bb",
            "--allow-private-endpoint"),
        "TierAlreadyExists (409)",
    )  # fmt: skip
    for output in (added, made.stdout, made.stderr, listing):
        assert SECRET not in str(output) and ENV_SECRET not in str(output)
    log = server.log()
    assert "tier COLD added" in log and "tier GLACIER removed" in log  # the log has these requests...
    assert SECRET not in log and ENV_SECRET not in log  # ...and no secret


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["cold"], ["InvalidArgument (400)", "storage class"]),
        (["STANDARD"], ["InvalidArgument (400)", "local drives"]),
        (["META", "--endpoint", "http://169.254.169.254"], ["InvalidArgument (400)", "cloud metadata"]),
        (["LINK", "--endpoint", "http://[fe80::1]:8333"], ["InvalidArgument (400)", "link-local"]),
        (["LOOP", "--endpoint", "http://127.0.0.1:8333"], ["InvalidArgument (400)", "--allow-private-endpoint"]),
        (["KEYS", "--access-key", "AKIA1"], ["--access-key needs the tier's secret key", "TIERSTORE_TIER_SECRET_KEY"]),
        (["KEYS", "--secret-key", SECRET], ["needs its --access-key"]),
    ],
)
def test_refusals_are_one_line(
    server: ServerProcess, clean: None, args: list[str], fragments: list[str]
) -> None:
    name, *rest = args
    endpoint = [] if "--endpoint" in rest else ["--endpoint", "http://127.0.0.1:8333", "--allow-private-endpoint"]
    proc = _run(server.endpoint, "admin", "tier", "add", name, "--bucket", "archive", *endpoint, *rest)
    line = one_line_error(proc, *fragments)
    assert SECRET not in line
    assert json.loads(ok(cli(server, "admin", "tier", "ls"))) == []


def test_help_names_the_secret_sources(server: ServerProcess) -> None:
    text = ok(cli(server, "admin", "tier", "add", "--help"))
    assert "TIERSTORE_TIER_SECRET_KEY" in text and "--allow-private-endpoint" in text and "--server" in text
