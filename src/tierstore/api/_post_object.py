"""POST Object: browser form uploads (``multipart/form-data`` to ``POST /bucket``).

A browser cannot sign a request, so the form carries a *policy* (base64 JSON: an expiration and
conditions on the form's fields) signed by someone who may write — SigV4 (``x-amz-algorithm``,
``x-amz-credential``, ``x-amz-date``, ``x-amz-signature``: hex HMAC-SHA256 of the base64 policy
under the SigV4 signing key) or SigV2 (``AWSAccessKeyId``, ``signature``: base64 HMAC-SHA1 of the
base64 policy). A form without either is anonymous. A form signed with temporary (STS)
credentials carries ``x-amz-security-token``: a field like any other, so the policy must name it
(the signature covers it), and its session is the form's principal.

Two steps, split at the file field (which S3 requires to be the last one):

1. ``authenticate_form`` — the dispatcher's step for this action (``_routes.ACTIONS``'s
   ``form``): reads the fields preceding the file (at most ``MAX_FIELDS_BYTES``), verifies the
   signature (``Authenticator.authenticate_form``), then the policy: not expired, every condition
   holds, every field is covered by a condition. It answers who signed, the key (the form's
   ``key``, ``${filename}`` replaced) and the fields as the request headers they stand for, so
   the dispatcher authorizes ``s3:PutObject`` on ``arn:aws:s3:::BUCKET/KEY`` through the one
   Authorizer before a byte of the file is stored.
2. ``post_object`` — the handler: streams the file part into the store (never held whole in
   memory), enforcing ``content-length-range`` while it streams (the put fails and nothing is
   published), and answers ``success_action_redirect`` (303), or ``success_action_status``
   200 / 201 (XML ``PostResponse``) / 204 (the default).

The bucket is always the URL's (path-style or virtual-hosted): a ``bucket`` field that names
another is refused, and the policy's ``bucket`` condition is checked against the URL's bucket.
The multipart framing is parsed by ``python-multipart`` (Starlette's streaming parser).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tierstore import errors as e
from tierstore.api import _sse
from tierstore.api._auth import Authenticator, AuthResult
from tierstore.api._common import parse_tag_set, reject_unsupported
from tierstore.api._objects import lock_headers, object_headers, tier_classes
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import E, document
from tierstore.types import MAX_PUT_BYTES, STANDARD_HEADERS, PutOptions

__all__ = ["MAX_FIELDS_BYTES", "FormAuth", "PostPolicy", "authenticate_form", "parse_policy", "post_object"]

MAX_FIELDS_BYTES = 64 * 1024  # the fields (and part headers) before the file; S3 allows about 20 KB
_MAX_TRAILING_BYTES = 64 * 1024  # what may follow the file part (S3 ignores it): read and dropped
# Fields no condition has to name (S3: "except x-amz-signature, file, policy, and x-ignore-*";
# the SigV2 pair signs the policy, it cannot be one of its conditions).
_EXEMPT = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"})
# Fields that are not the object's headers: the signature, the policy, the answer's shape.
_CONTROL = frozenset(
    {
        *_EXEMPT,
        "key",
        "bucket",
        "acl",
        "tagging",
        "success_action_status",
        "success_action_redirect",
        "redirect",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-security-token",
    }
)
_OPERATORS = ("eq", "starts-with")
_TOO_LARGE = "Your proposed upload exceeds the maximum allowed size"
_TOO_SMALL = "Your proposed upload is smaller than the minimum allowed size"
_NO_KEY = "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields."


# --- the policy document -----------------------------------------------------------------------
class _Condition(NamedTuple):
    op: str  # "eq" | "starts-with" | "content-length-range"
    name: str  # the field, lower-case, without "$" ("" for content-length-range)
    value: str
    low: int = 0
    high: int = 0

    def text(self) -> str:
        if self.op == "content-length-range":
            return json.dumps([self.op, self.low, self.high])
        return json.dumps([self.op, f"${self.name}", self.value])


@dataclass(frozen=True, slots=True)
class PostPolicy:
    """A parsed POST policy: when it expires and what it requires of the form."""

    expiration: datetime
    conditions: tuple[_Condition, ...]

    @property
    def length_range(self) -> tuple[int, int] | None:
        """The tightest ``content-length-range`` (all of them must hold)."""
        ranges = [(c.low, c.high) for c in self.conditions if c.op == "content-length-range"]
        if not ranges:
            return None
        return max(lo for lo, _ in ranges), min(hi for _, hi in ranges)

    def check(self, fields: Mapping[str, str], bucket: str, now: datetime) -> None:
        """Raise ``AccessDenied`` "Invalid according to Policy: ..." unless the form satisfies it."""
        if now >= self.expiration:
            raise e.AccessDenied("Invalid according to Policy: Policy expired.")
        values = {**fields, "bucket": bucket}  # the URL's bucket, never the form's
        for c in self.conditions:
            if c.op == "content-length-range":
                continue  # checked while the file streams
            if not _holds(c, values.get(c.name, "")):
                raise e.AccessDenied(f"Invalid according to Policy: Policy Condition failed: {c.text()}")
        named = {c.name for c in self.conditions}
        extra = [n for n in fields if n not in named and n not in _EXEMPT and not n.startswith("x-ignore-")]
        if extra:
            raise e.AccessDenied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")


def _holds(c: _Condition, value: str) -> bool:
    if c.op == "eq":
        return value == c.value
    if c.name == "content-type":  # a list of types: each must start with the prefix (as S3)
        return all(part.strip().startswith(c.value) for part in value.split(","))
    return value.startswith(c.value)


def _invalid(why: str) -> e.InvalidPolicyDocument:
    return e.InvalidPolicyDocument(f"Invalid Policy: {why}")


def parse_policy(encoded: str) -> PostPolicy:
    """The policy field (base64 JSON); a malformed one is ``InvalidPolicyDocument`` (400)."""
    try:
        doc = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise _invalid("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid("Invalid JSON.")
    expiration = doc.get("expiration")
    if not isinstance(expiration, str):
        raise _invalid("Policy missing expiration.")
    try:
        when = datetime.fromisoformat(expiration)
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: '{expiration[:40]}'") from None
    if when.tzinfo is None:
        raise _invalid(f"Invalid 'expiration' value: '{expiration[:40]}'")
    raw = doc.get("conditions")
    if not isinstance(raw, list):
        raise _invalid("Policy missing conditions.")
    unknown = set(doc) - {"expiration", "conditions"}
    if unknown:
        raise _invalid(f"Unexpected field: {sorted(unknown)[0][:40]}")
    conditions: list[_Condition] = []
    for item in raw:
        conditions.extend(_condition(item))
    return PostPolicy(when, tuple(conditions))


def _condition(item: Any) -> list[_Condition]:
    if isinstance(item, dict):  # {"name": "value"}: an exact match
        if not item or not all(isinstance(v, str) for v in item.values()):
            raise _invalid(f"Invalid Simple-Condition: {json.dumps(item)[:80]}")
        return [_Condition("eq", k.lower().removeprefix("$"), v) for k, v in item.items()]
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise _invalid(f"Invalid Condition: {json.dumps(item)[:80]}")
    op = item[0].lower()
    if op == "content-length-range":
        if len(item) != 3 or not all(_is_int(v) for v in item[1:]):
            raise _invalid(f"Invalid content-length-range: {json.dumps(item)[:80]}")
        low, high = int(item[1]), int(item[2])
        if low < 0 or high < low:
            raise _invalid(f"Invalid content-length-range: {json.dumps(item)[:80]}")
        return [_Condition(op, "", "", low, high)]
    if op not in _OPERATORS:
        raise _invalid(f"Invalid Condition: unknown operator '{item[0][:40]}'")
    if len(item) != 3 or not isinstance(item[1], str) or not isinstance(item[2], str) or not item[1].startswith("$"):
        raise _invalid(f"Invalid Condition: {json.dumps(item)[:80]}")
    return [_Condition(op, item[1][1:].lower(), item[2])]


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())


# --- the form ----------------------------------------------------------------------------------
@dataclass(slots=True)
class PostForm:
    """The fields read before the file part, and the file part still on the wire."""

    fields: dict[str, str] = field(default_factory=dict)  # lower-case names, in form order
    filename: str = ""
    length_range: tuple[int, int] | None = None
    _parser: MultipartParser | None = None
    _body: AsyncIterator[bytes] | None = None
    _pending: list[bytes] = field(default_factory=list)  # file bytes parsed, not yet handed out
    _name: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _part_headers: dict[str, str] = field(default_factory=dict)
    _part: str | None = None  # the field being read ("" while skipping a part after the file)
    _in_file: bool = False
    _file_seen: bool = False
    _file_done: bool = False
    _field_bytes: int = 0
    _fed_bytes: int = 0  # body bytes parsed (counted afresh once the file part ended)

    # python-multipart callbacks (called from inside parser.write)
    def _on_part_begin(self) -> None:
        self._part_headers = {}
        self._value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._part_headers[self._name.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._name.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._part_headers.get("content-disposition", ""))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise e.MalformedPOSTRequest()
        field_name = _text(name).lower()
        if self._file_seen:
            self._part = ""  # after the file: ignored, as S3 does
        elif field_name == "file":
            self._in_file = self._file_seen = True
            self.filename = _text(params.get(b"filename", b""))
        else:
            if field_name in self.fields:
                raise e.InvalidArgument(f"The form field '{field_name[:60]}' appears more than once.")
            self._part = field_name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
        elif self._part is not None:
            self._count(end - start)
            if self._part:
                self._value += data[start:end]

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file, self._file_done = False, True
        elif self._part:
            self.fields[self._part] = _text(bytes(self._value))
        self._part = None
        self._value.clear()

    def _count(self, n: int) -> None:
        self._field_bytes += n
        if self._field_bytes > MAX_FIELDS_BYTES and not self._file_seen:
            raise e.MaxPostPreDataLengthExceeded()

    async def _feed(self) -> bool:
        """Parse the next piece of the body; False at its end."""
        assert self._body is not None and self._parser is not None
        try:
            chunk = await anext(self._body)
        except StopAsyncIteration:
            return False
        self._fed_bytes += len(chunk)
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise e.MalformedPOSTRequest() from None
        return True

    async def file_data(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive, checked against ``length_range``; then the rest
        of the body is read and dropped."""
        low, high = self.length_range or (0, MAX_PUT_BYTES)
        high = min(high, MAX_PUT_BYTES)
        size = 0
        while True:
            if self._pending:
                piece = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
                self._pending.clear()
                size += len(piece)
                if size > high:
                    raise e.EntityTooLarge(_TOO_LARGE, fields={"ProposedSize": str(size), "MaxSizeAllowed": str(high)})
                yield piece
            if self._file_done:
                break
            if not await self._feed():
                raise e.MalformedPOSTRequest("The body of your POST request ended inside the file field.")
        if size < low:
            raise e.EntityTooSmall(_TOO_SMALL, fields={"ProposedSize": str(size), "MinSizeAllowed": str(low)})
        # What follows the file (fields S3 ignores, the closing boundary) is read and dropped, up
        # to a bound; past it the dispatcher closes the connection instead of reading on.
        self._fed_bytes = 0
        while self._fed_bytes <= _MAX_TRAILING_BYTES and await self._feed():
            pass


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise e.InvalidArgument("Form fields must be UTF-8.") from None


async def read_form(req: Request) -> PostForm:
    """Read the form up to the start of its file part."""
    ctype, params = parse_options_header(req.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise e.PreconditionFailed(
            "At least one of the pre-conditions you specified did not hold",
            fields={"Condition": "Bucket POST must be of the enclosure-type multipart/form-data"},
        )
    form = PostForm()
    callbacks: Any = {
        "on_part_begin": form._on_part_begin,
        "on_header_field": form._on_header_field,
        "on_header_value": form._on_header_value,
        "on_header_end": form._on_header_end,
        "on_headers_finished": form._on_headers_finished,
        "on_part_data": form._on_part_data,
        "on_part_end": form._on_part_end,
    }
    form._parser = MultipartParser(boundary, callbacks)
    form._body = req.body()
    while not form._file_seen:
        if not await form._feed():
            if "key" not in form.fields:
                raise e.InvalidArgument(_NO_KEY)
            raise e.InvalidArgument("POST requires exactly one file upload per request.")
    return form


# --- the dispatcher's step: who signed, which key, which headers -------------------------------
class FormAuth(NamedTuple):
    auth: AuthResult
    key: str
    headers: dict[str, str]  # the request's headers for the checks: the form's fields stand for the object's


async def authenticate_form(req: Request, authenticator: Authenticator) -> FormAuth:
    """Read the fields, verify the signature and the policy; the form is kept on ``req.post_form``."""
    assert req.bucket is not None
    form = await read_form(req)
    fields = form.fields
    named = fields.get("bucket")
    if named is not None and named != req.bucket:
        raise e.InvalidArgument("The bucket field of the form must name the bucket of the URL.")
    if "key" not in fields:
        raise e.InvalidArgument(_NO_KEY)
    auth = await authenticator.verify_form(fields)
    if "policy" in fields:  # required when signed (authenticate_form checks); binding when anonymous too
        policy = parse_policy(fields["policy"])
        policy.check(fields, req.bucket, datetime.now(UTC))
        form.length_range = policy.length_range
    key = fields["key"].replace("${filename}", form.filename)
    if not key:
        raise e.InvalidArgument("User key must have a length greater than 0.")
    req.post_form = form
    # What the checks and condition keys see: the request's own headers (User-Agent, Referer,
    # ...) except those the form stands for, then the form's. A request header never speaks for
    # the object (an x-amz-acl header would satisfy an s3:x-amz-acl condition while the object
    # ignores it).
    headers = {k: v for k, v in req.headers.items() if not k.startswith("x-amz-") and k not in STANDARD_HEADERS}
    return FormAuth(auth, key, {**headers, **_as_headers(fields)})


def _as_headers(fields: Mapping[str, str]) -> dict[str, str]:
    """The fields that stand for request headers: standard object headers, ``x-amz-*`` (bar the
    signature's), ``acl`` as ``x-amz-acl``, ``tagging`` (an XML document) as ``x-amz-tagging``.
    Values take the form header values have here (their UTF-8 bytes, latin-1 decoded), so the
    object's headers and metadata come out as they do for a PutObject."""
    out = {k: v for k, v in fields.items() if k not in _CONTROL and (k in STANDARD_HEADERS or k.startswith("x-amz-"))}
    if "acl" in fields:
        out["x-amz-acl"] = fields["acl"]
    if "tagging" in fields:
        out["x-amz-tagging"] = fields["tagging"]
    return {k: v.encode("utf-8").decode("latin-1") for k, v in out.items()}


# --- the handler -------------------------------------------------------------------------------
async def post_object(req: Request, ctx: Context) -> Response:
    """Store the file part under the form's key (authorized by the dispatcher) and answer."""
    form = req.post_form
    assert isinstance(form, PostForm) and req.bucket is not None and req.key is not None
    fields = form.fields
    obj = replace(req, headers=_as_headers(fields))  # the form's fields are this object's headers
    sse = await _sse.write_request(obj, ctx)
    reject_unsupported(obj)
    unsupported = [k for k in obj.headers if k.startswith(("x-amz-checksum-", "x-amz-sdk-checksum-"))]
    if unsupported:  # never stored unverified
        raise e.NotImplementedOperation(f"The form field {unsupported[0][:60]} is not implemented for POST uploads.")
    tagging = obj.headers.pop("x-amz-tagging", None)
    tags = parse_tag_set(tagging.encode("latin-1")) if tagging is not None else []
    headers, user_meta, storage_class = object_headers(obj, await tier_classes(obj.headers, ctx))
    opts = PutOptions(headers=headers, user_meta=user_meta, storage_class=storage_class)
    meta = await ctx.service.put_object(
        req.bucket, req.key, form.file_data(), opts, tags=tags, lock=lock_headers(obj),
        encryption=_sse.engine_request(sse),
    )  # fmt: skip
    location = _object_url(req)
    sse_headers = _sse.response_headers(_sse.stored_of(meta, ctx.service.region), "PostObject")
    out = [("etag", meta.etag), ("location", location), *sse_headers]
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        target = _redirect_url(redirect, req.bucket, req.key, meta.etag)
        return Response(303, [("etag", meta.etag), ("location", target), *sse_headers])
    status = fields.get("success_action_status", "")
    if status == "201":
        body = document(
            "PostResponse",
            E("Location", location),
            E("Bucket", req.bucket),
            E("Key", req.key),
            E("ETag", meta.etag),
            ns=False,
        )
        return Response(201, [*out, ("content-type", "application/xml")], body)
    return Response(200 if status == "200" else 204, out)


def _object_url(req: Request) -> str:
    host = req.headers.get("host", "localhost")
    path = f"/{quote(req.key or '')}" if req.virtual_bucket else f"/{req.bucket}/{quote(req.key or '')}"
    return f"http://{host}{path}"


def _redirect_url(target: str, bucket: str, key: str, etag: str) -> str:
    parts = urlsplit(target)
    extra = urlencode({"bucket": bucket, "key": key, "etag": etag})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
