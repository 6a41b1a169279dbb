"""The master key file and sealing: round trip, binding to a context, tampering, the key file's
life cycle (created once, mode 0600, copied to every drive, a missing or wrong key refused)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tierstore.crypto import (
    MASTER_KEY_FILE,
    MasterKey,
    MasterKeyError,
    SealedSecretError,
    load_master_key,
    load_master_key_file,
    load_or_create_master_key,
    sealed_key_id,
)


def test_seal_round_trip_is_bound_to_its_context_and_key() -> None:
    key = MasterKey(b"k" * 32)
    blob = key.seal(b"wJalrXUtnFEMI", context=b"AKID1")
    assert b"wJalrXUtnFEMI" not in blob
    assert key.open_sealed(blob, context=b"AKID1") == b"wJalrXUtnFEMI"
    assert key.seal(b"wJalrXUtnFEMI", context=b"AKID1") != blob  # a fresh nonce each time
    assert sealed_key_id(blob) == key.key_id
    with pytest.raises(SealedSecretError):  # copied onto another key's row
        key.open_sealed(blob, context=b"AKID2")
    with pytest.raises(SealedSecretError):  # sealed by another master key
        MasterKey(b"x" * 32).open_sealed(blob, context=b"AKID1")
    for i in range(len(blob)):  # any flipped byte (header, nonce, ciphertext, tag) is refused
        damaged = bytearray(blob)
        damaged[i] ^= 0x01
        with pytest.raises(SealedSecretError):
            key.open_sealed(bytes(damaged), context=b"AKID1")
    with pytest.raises(SealedSecretError):
        key.open_sealed(blob[:10], context=b"AKID1")
    assert "k" * 8 not in repr(key)


def test_master_key_is_created_once_0600_and_copied_to_every_dir(tmp_path: Path) -> None:
    dirs = [tmp_path / "d0", tmp_path / "d1"]
    key, created = load_or_create_master_key(dirs, sealed_key_ids=set())
    assert created
    for d in dirs:
        path = d / MASTER_KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    again, created = load_or_create_master_key(dirs, sealed_key_ids={key.key_id})
    assert not created and again.key_id == key.key_id
    (dirs[1] / MASTER_KEY_FILE).unlink()  # a replaced drive gets its copy back
    assert load_or_create_master_key(dirs, sealed_key_ids={key.key_id})[0].key_id == key.key_id
    assert (dirs[1] / MASTER_KEY_FILE).read_bytes() == (dirs[0] / MASTER_KEY_FILE).read_bytes()
    assert [p.name for p in dirs[0].iterdir()] == [MASTER_KEY_FILE]  # no temp file left behind


def test_a_missing_or_wrong_master_key_is_refused_when_secrets_exist(tmp_path: Path) -> None:
    dirs = [tmp_path / "data"]
    key, _ = load_or_create_master_key(dirs, sealed_key_ids=set())
    (dirs[0] / MASTER_KEY_FILE).unlink()
    with pytest.raises(MasterKeyError, match="missing"):
        load_or_create_master_key(dirs, sealed_key_ids={key.key_id})
    assert not (dirs[0] / MASTER_KEY_FILE).exists()  # no silent new key
    (dirs[0] / MASTER_KEY_FILE).write_bytes(b"y" * 32)
    with pytest.raises(MasterKeyError, match="not the key that sealed"):
        load_or_create_master_key(dirs, sealed_key_ids={key.key_id})
    (dirs[0] / MASTER_KEY_FILE).write_bytes(b"short")
    with pytest.raises(MasterKeyError, match="damaged"):
        load_master_key(dirs)


def test_copies_that_differ_are_refused(tmp_path: Path) -> None:
    dirs = [tmp_path / "d0", tmp_path / "d1"]
    for i, d in enumerate(dirs):
        d.mkdir()
        (d / MASTER_KEY_FILE).write_bytes(bytes([i]) * 32)
    with pytest.raises(MasterKeyError, match="differ"):
        load_master_key(dirs)


def test_a_key_file_mounted_as_a_kubernetes_secret_is_read_through_its_symlink(tmp_path: Path) -> None:
    """A Secret volume's file is a symlink into ``..data/``; the mode checked is the target's."""
    (tmp_path / "..data").mkdir()
    target = tmp_path / "..data" / "master.key"
    target.write_bytes(b"s" * 32)
    target.chmod(0o400)
    (tmp_path / "master.key").symlink_to("..data/master.key")
    key, warning = load_master_key_file(tmp_path / "master.key")
    assert key.key_id == MasterKey(b"s" * 32).key_id and warning == ""
    target.chmod(0o440)  # an fsGroup's Secret: a warning, not a refusal
    assert "open to its group (mode 0440" in load_master_key_file(tmp_path / "master.key")[1]
    target.chmod(0o604)
    with pytest.raises(MasterKeyError, match="open to other users"):
        load_master_key_file(tmp_path / "master.key")
    with pytest.raises(MasterKeyError, match="not a regular file"):
        load_master_key_file(tmp_path / "..data")
