"""Session tokens (crypto/_session.py) and StsService.open: real AES-GCM under a master key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey, SealedSecretError, open_session_token, seal_session_token
from tierstore.engine import IdentityService, StsService
from tierstore.errors import ExpiredToken, InvalidAccessKeyId, InvalidToken


def test_seal_open_roundtrip_and_tamper() -> None:
    key = MasterKey(os.urandom(32))
    token = seal_session_token(key, {"akid": "ASIAX", "secret": "s3cr3t"})
    assert "s3cr3t" not in token and "ASIAX" not in token  # sealed, not just encoded
    assert open_session_token(key, token) == {"akid": "ASIAX", "secret": "s3cr3t"}
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    for bad in (flipped, token[:-3], "TS1.????", "", token.replace("TS1.", "TS2.")):
        with pytest.raises(SealedSecretError):
            open_session_token(key, bad)
    with pytest.raises(SealedSecretError):  # another master key
        open_session_token(MasterKey(os.urandom(32)), token)


@pytest.fixture
def sts(tmp_path: Path) -> StsService:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    key = MasterKey(os.urandom(32))
    return StsService(IdentityService(catalog, key), key)


def test_open_checks_expiry_and_key_id(sts: StsService) -> None:
    session, token = sts.issue(kind="root", name="", principal_id="", duration_s=900)
    assert session.access_key_id.startswith("ASIA")
    assert sts.open(session.access_key_id, token) == session
    with pytest.raises(InvalidAccessKeyId):
        sts.open("ASIAOTHERKEY00000000", token)
    with pytest.raises(InvalidToken):
        sts.open(session.access_key_id, token[:-2] + "xx")
    later = StsService(sts.identities, sts._key, clock=lambda: time.time() + 901)
    with pytest.raises(ExpiredToken):
        later.open(session.access_key_id, token)
