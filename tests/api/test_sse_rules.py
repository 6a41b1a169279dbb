"""The pure rules of server-side encryption on the S3 surface (api/_sse.py,
api/_bucket_encryption.py): request headers -> SseRequest, the bucket default, the read-key check,
the response-header table, the bucket configuration document."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tierstore import errors as e
from tierstore.api._bucket_encryption import parse_encryption
from tierstore.api._sse import (
    BucketEncryption,
    CustomerKey,
    SseRequest,
    StoredEncryption,
    parse_read,
    parse_write,
    response_headers,
    with_default,
)
from tierstore.api._xml import parse_xml

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
KEY_MD5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
OTHER = bytes(range(1, 33))
SSE_C = {
    "x-amz-server-side-encryption-customer-algorithm": "AES256",
    "x-amz-server-side-encryption-customer-key": KEY_B64,
    "x-amz-server-side-encryption-customer-key-md5": KEY_MD5,
}
COPY_SSE_C = {k.replace("x-amz-", "x-amz-copy-source-", 1): v for k, v in SSE_C.items()}
SSE = "x-amz-server-side-encryption"
KMS_ID = "x-amz-server-side-encryption-aws-kms-key-id"
CTX = "x-amz-server-side-encryption-context"
BK = "x-amz-server-side-encryption-bucket-key-enabled"


def b64json(doc: Any) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def without(headers: dict[str, str], suffix: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.endswith(suffix)}


def error_of(call: Any) -> tuple[str, str]:
    with pytest.raises(e.TierstoreError) as exc:
        call()
    return exc.value.code, exc.value.message


# --- requests -------------------------------------------------------------------------------------
CUSTOMER = CustomerKey(KEY, KEY_MD5)
WELL_FORMED: dict[str, tuple[dict[str, str], SseRequest]] = {
    "nothing": ({}, SseRequest()),
    "sse-s3": ({SSE: "AES256"}, SseRequest("s3", "AES256")),
    "sse-s3 padded": ({SSE: " AES256 "}, SseRequest("s3", "AES256")),
    "kms, no key id": ({SSE: "aws:kms"}, SseRequest("kms", "aws:kms")),
    "kms, all": (
        {SSE: "aws:kms", KMS_ID: " testkey-1", CTX: b64json({"team": "ml"}) + " ", BK: "TRUE"},
        SseRequest("kms", "aws:kms", "testkey-1", {"team": "ml"}, True, context_header=b64json({"team": "ml"})),
    ),
    "kms, bucket key off": ({SSE: "aws:kms", BK: "false"}, SseRequest("kms", "aws:kms", bucket_key=False)),
    "dsse": ({SSE: "aws:kms:dsse", KMS_ID: "k"}, SseRequest("kms", "aws:kms:dsse", "k")),
    "sse-c": (SSE_C, SseRequest("c", "AES256", customer=CUSTOMER)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WELL_FORMED))
def test_well_formed_writes(case: str) -> None:
    headers, expected = WELL_FORMED[case]
    assert parse_write(headers) == expected


MALFORMED: dict[str, tuple[dict[str, str], str, str]] = {
    "unknown method": ({SSE: "rot13"}, "InvalidArgument", "The encryption method specified is not supported"),
    "empty method": ({SSE: ""}, "InvalidArgument", "The encryption method specified is not supported"),
    "lower-case method": ({SSE: "aes256"}, "InvalidArgument", "The encryption method specified is not supported"),
    "kms id without kms": ({KMS_ID: "k"}, "InvalidArgument", "requires HTTP header"),
    "kms id with AES256": ({SSE: "AES256", KMS_ID: "k"}, "InvalidArgument", "requires HTTP header"),
    "context without kms": ({CTX: b64json({})}, "InvalidArgument", "requires HTTP header"),
    "bucket key with AES256": ({SSE: "AES256", BK: "true"}, "InvalidArgument", "Bucket Key is supported"),
    "bucket key not a boolean": ({SSE: "aws:kms", BK: "yes"}, "InvalidArgument", "must be true or false"),
    "empty kms key id": ({SSE: "aws:kms", KMS_ID: " "}, "InvalidArgument", "must not be empty"),
    "context not base64": ({SSE: "aws:kms", CTX: "{not base64}"}, "InvalidArgument", "string-string map"),
    "context not json": ({SSE: "aws:kms", CTX: base64.b64encode(b"team=ml").decode()}, "InvalidArgument", "map"),
    "context a list": ({SSE: "aws:kms", CTX: b64json(["a"])}, "InvalidArgument", "string-string map"),
    "context, a number value": ({SSE: "aws:kms", CTX: b64json({"n": 1})}, "InvalidArgument", "string-string map"),
    "context not utf-8": ({SSE: "aws:kms", CTX: base64.b64encode(b'{"a":"\xff"}').decode()}, "InvalidArgument", "map"),
    "sse-c with sse": ({**SSE_C, SSE: "AES256"}, "InvalidArgument", "incompatible with the encryption method"),
    "sse-c algorithm alone with kms": (
        {SSE: "aws:kms", "x-amz-server-side-encryption-customer-algorithm": "AES512"},
        "InvalidArgument", "incompatible with the encryption method",
    ),
    "sse-c other algorithm": (
        {**SSE_C, "x-amz-server-side-encryption-customer-algorithm": "AES128"},
        "InvalidEncryptionAlgorithmError", "Supported value: AES256.",
    ),
    "sse-c key without algorithm": (
        without(SSE_C, "algorithm"), "InvalidArgument", "a valid encryption algorithm"
    ),
    "sse-c without key": (without(SSE_C, "-key"), "InvalidArgument", "secret key"),
    "sse-c without md5": (without(SSE_C, "md5"), "InvalidArgument", "MD5"),
    "sse-c wrong md5": (
        {**SSE_C, "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(b"0" * 16).decode()},
        "InvalidArgument", "did not match",
    ),
    "sse-c 24-byte key, wrong md5: the md5 error first": (
        {**SSE_C, "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY[:24]).decode()},
        "InvalidArgument", "did not match",
    ),
    "sse-c 16-byte key, its md5": (
        {
            **SSE_C,
            "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY[:16]).decode(),
            "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(KEY[:16]).digest()).decode(),
        },
        "InvalidArgument", "The secret key was invalid for the specified algorithm.",
    ),
    "sse-c key not base64": (
        {**SSE_C, "x-amz-server-side-encryption-customer-key": "!" * 44}, "InvalidArgument", "secret key was invalid"
    ),
    "copy-source key on a plain write": (COPY_SSE_C, "InvalidRequest", "not applicable to this object"),
    "copy-source key without algorithm": (
        without(COPY_SSE_C, "algorithm"), "InvalidArgument", "encryption algorithm"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_writes(case: str) -> None:
    headers, code, words = MALFORMED[case]
    got_code, message = error_of(lambda: parse_write(headers))
    assert got_code == code
    assert words in message
    assert KEY_B64 not in message  # the key never reaches an error


def test_error_bodies_name_the_argument_but_never_the_key() -> None:
    with pytest.raises(e.InvalidArgument) as exc:
        parse_write({SSE: "rot13"})
    assert exc.value.fields == {"ArgumentName": SSE, "ArgumentValue": "rot13"}
    with pytest.raises(e.InvalidArgument) as exc:
        parse_write({**SSE_C, "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(b"0" * 16).decode()})
    assert KEY_B64 not in str(exc.value.fields)


def test_copy_writes_carry_both_keys() -> None:
    other_md5 = base64.b64encode(hashlib.md5(OTHER).digest()).decode()
    dest = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(OTHER).decode(),
        "x-amz-server-side-encryption-customer-key-md5": other_md5,
    }
    sse = parse_write({**dest, **COPY_SSE_C}, copy=True)
    assert (sse.kind, sse.customer, sse.source_key) == ("c", CustomerKey(OTHER, other_md5), CUSTOMER)
    plain_dest = parse_write({**COPY_SSE_C, SSE: "AES256"}, copy=True)  # the source's SSE-C is no conflict
    assert (plain_dest.kind, plain_dest.source_key) == ("s3", CUSTOMER)


def test_the_key_never_shows_in_a_repr() -> None:
    assert KEY_B64 not in repr(parse_write(SSE_C)) and repr(KEY) not in repr(parse_write(SSE_C))
    assert KEY_MD5 in repr(parse_write(SSE_C))


# --- the bucket default -----------------------------------------------------------------------------
S3_DEFAULT = BucketEncryption("AES256")
KMS_DEFAULT = BucketEncryption("aws:kms", "testkey-1", bucket_key=True)
DSSE_DEFAULT = BucketEncryption("aws:kms:dsse", "testkey-2", bucket_key=True)
DEFAULTS: dict[str, tuple[SseRequest, BucketEncryption | None, SseRequest]] = {
    "no default, nothing asked": (SseRequest(), None, SseRequest()),
    "s3 default": (SseRequest(), S3_DEFAULT, SseRequest("s3", "AES256", from_default=True)),
    "kms default": (
        SseRequest(), KMS_DEFAULT, SseRequest("kms", "aws:kms", "testkey-1", None, True, from_default=True)
    ),
    "dsse default: no bucket key": (
        SseRequest(), DSSE_DEFAULT, SseRequest("kms", "aws:kms:dsse", "testkey-2", None, False, from_default=True)
    ),
    "explicit s3 wins over kms": (SseRequest("s3", "AES256"), KMS_DEFAULT, SseRequest("s3", "AES256")),
    "explicit kms wins over s3": (
        SseRequest("kms", "aws:kms", "k"), S3_DEFAULT, SseRequest("kms", "aws:kms", "k", bucket_key=False)
    ),
    "explicit kms without key id: not the default's key": (
        SseRequest("kms", "aws:kms"), KMS_DEFAULT, SseRequest("kms", "aws:kms", bucket_key=True)
    ),
    "explicit kms takes the bucket key setting": (
        SseRequest("kms", "aws:kms", "k"), KMS_DEFAULT, SseRequest("kms", "aws:kms", "k", bucket_key=True)
    ),
    "explicit bucket key off wins": (
        SseRequest("kms", "aws:kms", "k", bucket_key=False), KMS_DEFAULT,
        SseRequest("kms", "aws:kms", "k", bucket_key=False),
    ),
    "explicit kms, no default: bucket key off": (
        SseRequest("kms", "aws:kms"), None, SseRequest("kms", "aws:kms", bucket_key=False)
    ),
    "sse-c is never from a default and wins": (
        SseRequest("c", "AES256", customer=CUSTOMER), KMS_DEFAULT, SseRequest("c", "AES256", customer=CUSTOMER)
    ),
    "the copy source key stays": (
        SseRequest(source_key=CUSTOMER), S3_DEFAULT, SseRequest("s3", "AES256", source_key=CUSTOMER, from_default=True)
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DEFAULTS))
def test_bucket_default(case: str) -> None:
    request, default, expected = DEFAULTS[case]
    assert with_default(request, default) == expected


def test_bucket_encryption_props_round_trip() -> None:
    blocking = BucketEncryption("AES256", blocked=("SSE-C",))
    for config in (S3_DEFAULT, KMS_DEFAULT, DSSE_DEFAULT, blocking):
        assert BucketEncryption.from_props(json.loads(json.dumps(config.to_props()))) == config
    assert blocking.blocks_sse_c and not S3_DEFAULT.blocks_sse_c
    assert not BucketEncryption("AES256", blocked=("NONE",)).blocks_sse_c
    assert BucketEncryption.from_props(None) is None


# --- reads ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [SSE, KMS_ID, CTX, BK])
def test_reads_refuse_the_sse_headers(header: str) -> None:
    assert error_of(lambda: parse_read({header: "AES256"})) == (
        "InvalidArgument", f"{header} header is not supported for this operation."
    )  # fmt: skip


def test_parse_read_takes_the_customer_key() -> None:
    """Whether the key fits the object is the engine's to check (tests/api/test_sse_e2e.py)."""
    assert parse_read(SSE_C) == CUSTOMER
    assert parse_read({}) is None


# --- answers ----------------------------------------------------------------------------------------
S3_STORED = StoredEncryption("s3", "AES256")
C_STORED = StoredEncryption("c", "AES256", customer_key_md5=KEY_MD5)
KMS_STORED = StoredEncryption("kms", "aws:kms", "testkey-1", b64json({"team": "ml"}), bucket_key=True)
KMS_NO_BK = StoredEncryption("kms", "aws:kms", "testkey-1")
DSSE_STORED = StoredEncryption("kms", "aws:kms:dsse", "testkey-2", bucket_key=True)
CONTEXT = b64json({"team": "ml"})  # echoed as the client sent it
H_SSE, H_ID, H_CTX, H_BK = SSE, KMS_ID, CTX, BK
H_ALG, H_MD5 = "x-amz-server-side-encryption-customer-algorithm", "x-amz-server-side-encryption-customer-key-md5"
ALL_KMS = [(H_SSE, "aws:kms"), (H_ID, "testkey-1"), (H_CTX, CONTEXT), (H_BK, "true")]
NO_CTX_KMS = [(H_SSE, "aws:kms"), (H_ID, "testkey-1"), (H_BK, "true")]
SSE_C_ECHO = [(H_ALG, "AES256"), (H_MD5, KEY_MD5)]
# (action, stored) -> headers, per AWS's response syntax of each operation.
ANSWERS: list[tuple[str, StoredEncryption | None, list[tuple[str, str]]]] = [
    *((a, None, []) for a in ("PutObject", "GetObject", "CompleteMultipartUpload")),
    *((a, S3_STORED, [(H_SSE, "AES256")]) for a in (
        "PutObject", "PostObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
        "CompleteMultipartUpload", "GetObject", "HeadObject",
    )),
    *((a, KMS_STORED, ALL_KMS) for a in ("PutObject", "CopyObject", "CreateMultipartUpload")),
    *((a, KMS_STORED, NO_CTX_KMS) for a in ("PostObject", "UploadPart", "UploadPartCopy", "GetObject", "HeadObject")),
    ("CompleteMultipartUpload", KMS_STORED, NO_CTX_KMS),
    ("PutObject", KMS_NO_BK, [(H_SSE, "aws:kms"), (H_ID, "testkey-1")]),  # bucket key false: no header
    ("HeadObject", DSSE_STORED, [(H_SSE, "aws:kms:dsse"), (H_ID, "testkey-2")]),  # no bucket keys with DSSE
    *((a, C_STORED, SSE_C_ECHO) for a in (
        "PutObject", "PostObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
        "GetObject", "HeadObject",
    )),
    ("CompleteMultipartUpload", C_STORED, []),  # no SSE-C echo on Complete
    *((a, s, []) for a in ("ListParts", "GetObjectAttributes", "ListObjectsV2") for s in (S3_STORED, KMS_STORED,
                                                                                          C_STORED)),
]  # fmt: skip


@pytest.mark.parametrize(("action", "stored", "expected"), ANSWERS)
def test_response_headers(action: str, stored: StoredEncryption | None, expected: list[tuple[str, str]]) -> None:
    assert response_headers(stored, action) == expected


# --- the bucket configuration document ------------------------------------------------------------
def config(rule: str, *more: str) -> bytes:
    rules = "".join(f"<Rule>{r}</Rule>" for r in (rule, *more))
    return f'<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{rules}</ServerSideEncryptionConfiguration>'.encode()


def by_default(algorithm: str, key_id: str | None = None) -> str:
    key = f"<KMSMasterKeyID>{key_id}</KMSMasterKeyID>" if key_id is not None else ""
    inner = f"<SSEAlgorithm>{algorithm}</SSEAlgorithm>{key}"
    return f"<ApplyServerSideEncryptionByDefault>{inner}</ApplyServerSideEncryptionByDefault>"


def blocked(*kinds: str) -> str:
    types = "".join(f"<EncryptionType>{kind}</EncryptionType>" for kind in kinds)
    return f"<BlockedEncryptionTypes>{types}</BlockedEncryptionTypes>"


GOOD_CONFIGS: dict[str, tuple[bytes, BucketEncryption]] = {
    "sse-s3": (config(by_default("AES256")), BucketEncryption("AES256")),
    "sse-s3 with bucket key": (config(by_default("AES256") + "<BucketKeyEnabled>true</BucketKeyEnabled>"),
                               BucketEncryption("AES256", None, True)),
    "kms without key id": (config(by_default("aws:kms")), BucketEncryption("aws:kms")),
    "kms with key and bucket key": (
        config(by_default("aws:kms", " testkey-1 ") + "<BucketKeyEnabled>true</BucketKeyEnabled>"),
        BucketEncryption("aws:kms", "testkey-1", True),
    ),
    "dsse": (config(by_default("aws:kms:dsse", "arn:aws:kms:us-east-1:000000000000:key/k")),
             BucketEncryption("aws:kms:dsse", "arn:aws:kms:us-east-1:000000000000:key/k")),
    "nothing blocked": (
        config(by_default("AES256") + blocked("NONE")),
        BucketEncryption("AES256", blocked=("NONE",)),
    ),
    "sse-c blocked": (
        config(by_default("aws:kms") + blocked("SSE-C")),
        BucketEncryption("aws:kms", blocked=("SSE-C",)),
    ),
    "sse-c blocked twice": (
        config(by_default("AES256") + blocked("SSE-C", "SSE-C")),
        BucketEncryption("AES256", blocked=("SSE-C",)),
    ),
    "an empty BlockedEncryptionTypes": (
        config(by_default("AES256") + "<BlockedEncryptionTypes/>"),
        BucketEncryption("AES256"),
    ),
}  # fmt: skip
BAD_CONFIGS: dict[str, tuple[bytes, str]] = {
    "no rule": (b"<ServerSideEncryptionConfiguration/>", "MalformedXML"),
    "two rules": (config(by_default("AES256"), by_default("AES256")), "MalformedXML"),
    "no by-default": (config("<BucketKeyEnabled>true</BucketKeyEnabled>"), "MalformedXML"),
    "no algorithm": (config("<ApplyServerSideEncryptionByDefault/>"), "MalformedXML"),
    "unknown algorithm": (config(by_default("AES512")), "MalformedXML"),
    "aws:fsx": (config(by_default("aws:fsx")), "MalformedXML"),
    "key id with AES256": (config(by_default("AES256", "k")), "InvalidArgument"),
    "empty key id": (config(by_default("aws:kms", "")), "MalformedXML"),
    "bucket key not a boolean": (
        config(by_default("AES256") + "<BucketKeyEnabled>yes</BucketKeyEnabled>"), "MalformedXML"
    ),
    "unknown blocked type": (
        config(by_default("AES256") + blocked("SSE-S3")),
        "MalformedXML",
    ),
    "NONE and SSE-C": (config(by_default("AES256") + blocked("NONE", "SSE-C")), "MalformedXML"),
    "an empty blocked type": (config(by_default("AES256") + blocked("")), "MalformedXML"),
    "another root": (b"<EncryptionConfiguration/>", "MalformedXML"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GOOD_CONFIGS))
def test_good_configurations(case: str) -> None:
    body, expected = GOOD_CONFIGS[case]
    assert parse_encryption(parse_xml(body, "ServerSideEncryptionConfiguration")) == expected


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configurations(case: str) -> None:
    body, code = BAD_CONFIGS[case]
    got, message = error_of(lambda: parse_encryption(parse_xml(body, "ServerSideEncryptionConfiguration")))
    assert got == code
    if code == "InvalidArgument":
        assert message == "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms or " + (
            "aws:kms:dsse"
        )
