"""The docs' examples run: every ```python block of a walkthrough, in order, as one program,
against a real server of its own (docs/ml-data.md, docs/checkpoints.md); and README.md's shell
and Python blocks, in order, as written (what cannot run in a test is marked so in the README)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, aws_cli
from tests.ports import free_port
from tests.postgres import PostgreSQL
from tests.seaweed import SeaweedFS

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _program(doc: Path) -> str:
    blocks = BLOCK.findall(doc.read_text())
    assert blocks, f"{doc} has no python blocks"
    return "\n".join(blocks)


def _run(doc: str, server: ServerProcess, tmp_path: Path, extra_env: dict[str, str] | None = None) -> list[str]:
    script = tmp_path / "walkthrough.py"
    script.write_text(_program(REPO / "docs" / doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY)
    env.update(TIERSTORE_SECRET_KEY=SECRET_KEY, **(extra_env or {}))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_ml_data_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    out = _run("ml-data.md", fresh_server, tmp_path)
    assert out[0] == "pets@1 600 samples"
    assert "256 + 344 = 600" in out
    assert "600 samples in one epoch" in out
    assert "600 samples staged" in out


def test_checkpoints_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    out = _run("checkpoints.md", fresh_server, tmp_path)
    assert out == [
        "[3, 4, 5]",
        "best tested: 3",
        "demo@1 -> 3",
        "serving matches: True",
        "trained on: ['demo-data@1']",
    ]


def test_security_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md part 2 (part 1's block is pure: tests/iam/test_security_doc.py)."""
    part2 = _section(REPO / "docs" / "security.md", "## Part 2:")
    (code,) = BLOCK.findall(part2)
    expected = [line.removeprefix("# ") for line in code.splitlines() if line.startswith(("# get", "# put", "# ["))]
    assert len(expected) == 5
    doc = tmp_path / "security-part2.md"
    doc.write_text(part2)
    assert _run(str(doc), fresh_server, tmp_path) == expected


def _section(doc: Path, heading: str) -> str:
    """From ``heading`` to the next second-level heading (or the end)."""
    text = doc.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _run_section(
    heading: str, server: ServerProcess, tmp_path: Path, outputs: int, *, doc: str = "security.md",
    extra_env: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """Run the one code block of a section of docs/``doc``; its trailing comment lines are its
    output (``outputs`` of them)."""
    section = _section(REPO / "docs" / doc, heading)
    (code,) = BLOCK.findall(section)
    lines = code.splitlines()
    expected = []
    while lines and lines[-1].startswith("# "):
        expected.insert(0, lines.pop().removeprefix("# "))
    assert len(expected) == outputs
    path = tmp_path / "doc-section.md"
    path.write_text(section)
    assert _run(str(path), server, tmp_path, extra_env) == expected


def test_bucket_policy_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md "Bucket policies, anonymous access and Block Public Access"."""
    _run_section("## Bucket policies, anonymous access", fresh_server, tmp_path, 5)


def test_acl_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md "ACLs and Object Ownership"."""
    _run_section("## ACLs and Object Ownership", fresh_server, tmp_path, 5)


def test_sts_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md "Walkthrough: a role session reads only what both policies allow"."""
    _run_section("### Walkthrough: a role session", fresh_server, tmp_path, 4)


def test_browser_uploads_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md "Browser uploads and CORS": a signed form posted, a too-large one
    refused, a preflight."""
    _run_section("## Browser uploads and CORS", fresh_server, tmp_path, 4)


def test_server_side_encryption_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """docs/security.md "Server-side encryption: the S3 surface": a bucket default, a write it
    refuses (its KMS key does not exist), a malformed header, a policy requiring the header."""
    _run_section("## Server-side encryption: the S3 surface", fresh_server, tmp_path, 4)


def test_encryption_at_rest_walkthrough_runs(tmp_path: Path) -> None:
    """docs/security.md "Encryption at rest: the engine": an SSE-S3 object read by range, an
    SSE-C object without its key, with another key and with its key (over plain HTTP to
    127.0.0.1: the server runs with --sse-c-over-http)."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--sse-c-over-http"])
    srv.start()
    try:
        _run_section("## Encryption at rest: the engine", srv, tmp_path, 4)
    finally:
        srv.stop()


def test_tiers_walkthrough_runs(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """docs/tiers.md "Walkthrough": a tier on the session's SeaweedFS, a PUT with its class, a
    lifecycle rule that moves an object (a 1 s day), the tier's status, reads through, and
    ``tier rm`` refused while the tier holds data."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--lifecycle-day-seconds", "1"])
    srv.start()
    try:
        weed = {"SEAWEED_ENDPOINT": seaweedfs.endpoint, "SEAWEED_ACCESS_KEY": seaweedfs.access_key,
                "SEAWEED_SECRET_KEY": seaweedfs.secret_key}  # fmt: skip
        _run_section("## Walkthrough: an archive", srv, tmp_path, 6, doc="tiers.md", extra_env=weed)
    finally:
        srv.stop()


@pytest.mark.timeout(600)
def test_scale_out_walkthrough_runs_as_written(tmp_path: Path, postgres: PostgreSQL, seaweedfs: SeaweedFS) -> None:
    """docs/scale-out.md "Try it on one machine": its shell blocks but the first (PostgreSQL and
    SeaweedFS, which the session's fixtures stand in for: its exports become the environment), in
    order, in one bash: two gateways on one database and one store bucket with one master key
    file, the aws cli against both. Only the ports are replaced (the store's, the gateways')."""
    section = _section(REPO / "docs" / "scale-out.md", "## Try it on one machine")
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(section)]
    assert [lang for lang, _ in blocks] == ["sh", "sh", "sh"]
    assert "<!-- not run:" in section[: section.index(blocks[0][1])]  # the services block, marked
    code = "\n".join(code for _, code in blocks[1:])
    store = seaweedfs.endpoint.removeprefix("http://")
    code = code.replace("127.0.0.1:8333", store)
    code = re.sub(r"\b9001\b", str(free_port()), code)
    code = re.sub(r"\b9002\b", str(free_port()), code)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "aws").symlink_to(aws_cli())
    (tools / "tierstore").symlink_to(Path(sys.prefix) / "bin" / "tierstore")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_CATALOG=postgres.create_database("walkthrough"), AWS_DEFAULT_REGION="us-east-1")
    env.update(AWS_ACCESS_KEY_ID=seaweedfs.access_key, AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key)
    env.update(PATH=f"{tools}{os.pathsep}{env.get('PATH', '')}")
    work = tmp_path / "work"
    work.mkdir()
    (work / "walkthrough.sh").write_text("set -euo pipefail\n" + code)
    proc = subprocess.Popen(["bash", "walkthrough.sh"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=480)
    finally:  # the gateways it started, should it have stopped half-way
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    logs = "".join((work / f).read_text() for f in ("gw-a.log", "gw-b.log") if (work / f).exists())
    assert proc.returncode == 0, f"{out}\n{err}\n{logs}"
    assert "Traceback" not in err + logs
    assert re.search(r"^catalog = 'postgresql://\S+/walkthrough'  # env TIERSTORE_CATALOG$", out, re.M), out
    assert f"store = 's3://tierstore-demo/blobs?endpoint=http://{store}'  # file gateway.toml" in out
    assert "master-key-file = 'master.key'  # file gateway.toml" in out
    assert "written through A" in out and "big.bin: the same bytes through A" in out
    assert int(out.strip().splitlines()[-1]) >= 2  # the multipart upload's part blobs, in the store
    assert not (work / "gw-a" / "master.key").exists() and not (work / "gw-b" / "master.key").exists()


# --- README.md: every block runs, in order, against a server of its own ------------------------

README = REPO / "README.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.S | re.M)
MARKER = re.compile(r"^<!--\s*(not run|file):\s*(.+?)\s*-->$")
RUNNABLE = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
DEFAULT_ENDPOINT = "http://127.0.0.1:9000"  # what the README says; replaced by the test server's


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in README.md
    lang: str  # "sh", "python", or "" (text: not code)
    code: str
    marker: str | None  # "not run" or "file"
    marker_arg: str | None  # why not, or the file's name


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        mark = MARKER.match(before)
        lang = RUNNABLE.get(m.group(1), "")
        assert lang or not m.group(1), f"README.md: a ```{m.group(1)} block: teach tests/test_docs.py to run it"
        blocks.append(
            Block(
                line=text.count("\n", 0, m.start()) + 1,
                lang=lang,
                code=m.group(2),
                marker=mark.group(1) if mark else None,
                marker_arg=mark.group(2) if mark else None,
            )
        )
    return blocks


def test_readme_links_stay_inside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text and "shared/" not in text, "the README points outside the repository"
    targets = re.findall(r"\]\(([^)]+)\)", text)
    assert "docs/architecture.md" in targets
    for target in targets:
        if "://" in target or target.startswith("#"):
            continue
        path = (REPO / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO) and path.exists(), f"README.md links to {target}, which is not in the repo"


def test_readme_blocks_are_run_or_visibly_excluded() -> None:
    blocks = readme_blocks()
    code = [b for b in blocks if b.lang]
    assert len(code) >= 15
    for b in code:
        assert b.marker is None or b.marker_arg, f"README.md:{b.line}: a marker must say why (or which file)"
    skipped = [b for b in code if b.marker == "not run"]
    # only what cannot run in a test: setting up the venv, starting servers, installing, the keys
    assert all("./dev " in b.code or "serve " in b.code or "pip install" in b.code or "export " in b.code
               for b in skipped), [b.line for b in skipped]  # fmt: skip


@pytest.mark.timeout(600)
def test_readme_runs_as_written(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """The README's blocks, in order, in one directory, as a newcomer would paste them: shell
    blocks through bash (``.venv/bin/tierstore`` is this venv's, ``aws`` the test tools' aws
    cli), Python blocks each as its own program, ``<!-- file: NAME -->`` blocks saved as NAME.
    Only the endpoint is replaced (the README's 127.0.0.1:9000 by the test server's), and the
    keys are set as the README tells: the AWS_* variables."""
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "aws").symlink_to(aws_cli())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
    env.update(TIERSTORE_ENDPOINT=fresh_server.endpoint, PATH=f"{tools}{os.pathsep}{env.get('PATH', '')}")
    outputs: list[str] = []
    for i, b in enumerate(readme_blocks()):
        if not b.lang or b.marker == "not run":
            continue
        code = b.code.replace(DEFAULT_ENDPOINT, fresh_server.endpoint)
        if b.marker == "file":
            assert b.marker_arg is not None
            (work / b.marker_arg).write_text(code)
            continue
        script = tmp_path / f"block-{i}.{'py' if b.lang == 'python' else 'sh'}"
        script.write_text(code if b.lang == "python" else "set -euo pipefail\n" + code)
        cmd = [sys.executable, str(script)] if b.lang == "python" else ["bash", str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=240, check=False)
        assert proc.returncode == 0, f"README.md:{b.line} exit {proc.returncode}:\n{proc.stderr}\n{proc.stdout}\n{code}"
        assert "Traceback" not in proc.stderr, f"README.md:{b.line}:\n{proc.stderr}"
        outputs.append(proc.stdout)
    out = "\n".join(outputs)
    assert "run-7/step-500.pt 0.42" in out  # the query, from Python
    assert re.search(r"run-7/step-500\.pt +meta\.dataset=imagenet@3 meta\.loss=0\.42 tag\.status=tested", out)
    assert "pets@1 -> pets@2: 1 added, 0 removed, 0 changed, 6 unchanged" in out
    assert "created pets-chips@1: 12 samples from 6" in out
    assert (work / "train.tar").stat().st_size == 20 * 2**20
    assert re.search(r"^staged pets@1 in \S*staged/pets: 6 samples", out, re.M), out
    assert (work / "serving" / "resnet").is_dir()
    assert "heal done in" in out
