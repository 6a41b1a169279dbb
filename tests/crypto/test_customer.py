"""SSE-C (crypto/_customer.py): the data key wrapped under the customer's key and bound to the
object, the salted check that tells a wrong key (403) from damage (500)."""

from __future__ import annotations

import hashlib

import pytest

from tierstore.crypto import (
    CUSTOMER_SALT_BYTES,
    CustomerKeyMismatch,
    IntegrityError,
    check_customer_key,
    customer_key_check,
    unwrap_customer_data_key,
    wrap_customer_data_key,
)

CUSTOMER = bytes(range(100, 132))
OTHER = bytes(range(1, 33))
DATA_KEY = bytes(range(32))
SALT = b"s" * CUSTOMER_SALT_BYTES


def test_wrap_round_trip_is_bound_to_the_object_and_hides_the_keys() -> None:
    wk = wrap_customer_data_key(CUSTOMER, DATA_KEY, salt=SALT, bucket="b", key="k")
    assert DATA_KEY not in wk and CUSTOMER not in wk
    assert unwrap_customer_data_key(CUSTOMER, wk, salt=SALT, bucket="b", key="k") == DATA_KEY
    assert wrap_customer_data_key(CUSTOMER, DATA_KEY, salt=SALT, bucket="b", key="k") != wk  # a fresh nonce
    for change in ({"bucket": "c"}, {"key": "k2"}, {"salt": b"t" * CUSTOMER_SALT_BYTES}):
        with pytest.raises(IntegrityError, match="does not open"):  # moved to another object, or edited
            unwrap_customer_data_key(CUSTOMER, wk, **{"salt": SALT, "bucket": "b", "key": "k", **change})  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        unwrap_customer_data_key(OTHER, wk, salt=SALT, bucket="b", key="k")
    for i in range(len(wk)):  # any flipped byte: nonce, sealed key, tag
        damaged = bytearray(wk)
        damaged[i] ^= 1
        with pytest.raises(IntegrityError):
            unwrap_customer_data_key(CUSTOMER, bytes(damaged), salt=SALT, bucket="b", key="k")
    with pytest.raises(IntegrityError, match="size"):
        unwrap_customer_data_key(CUSTOMER, wk[:-1], salt=SALT, bucket="b", key="k")


def test_the_check_tells_a_wrong_key_and_is_salted() -> None:
    ckh = customer_key_check(CUSTOMER, SALT)
    assert len(ckh) == 32
    check_customer_key(CUSTOMER, SALT, ckh)
    with pytest.raises(CustomerKeyMismatch):
        check_customer_key(OTHER, SALT, ckh)
    other_salt = b"t" * CUSTOMER_SALT_BYTES
    assert customer_key_check(CUSTOMER, other_salt) != ckh  # two objects under one key do not match
    assert hashlib.md5(CUSTOMER).digest() not in ckh and CUSTOMER not in ckh


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="SSE-C key"):
        customer_key_check(CUSTOMER[:16], SALT)
    with pytest.raises(ValueError, match="salt"):
        customer_key_check(CUSTOMER, SALT[:8])
    with pytest.raises(ValueError, match="data key"):
        wrap_customer_data_key(CUSTOMER, DATA_KEY[:16], salt=SALT, bucket="b", key="k")
