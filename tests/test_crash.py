"""Crash safety (issue 4): SIGKILL the server at seeded random moments while clients PUT,
overwrite, complete multipart uploads, delete and write versions; restart it and check that
every acknowledged write reads back byte-exact, that nothing torn is ever visible, that an
interrupted write is all-or-nothing, and, at the end, that the catalog and the blob directory
agree (no catalog row without its blob file, no orphan blob after GC).

A write is *acknowledged* when its 2xx status line arrived before the kill: it must survive.
A write that got no response may or may not have happened, but only as a whole. Each client
thread owns its keys for the round, so an unanswered write is the last operation on its key.
``TIERSTORE_TEST_SEED`` replays a run; ``TIERSTORE_CRASH_KILLS`` changes the number of kills,
``TIERSTORE_CRASH_BUDGET_S`` the seconds of kill rounds on a slow machine (at least 25 kills)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import random
import signal
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, make_client
from tests.s3http import UNSIGNED, sign_v4

KILLS = int(os.environ.get("TIERSTORE_CRASH_KILLS", "210"))  # on one data dir; see the parametrization
# On a loaded machine the kill rounds stop after this many seconds, once MIN_KILLS are done: the
# test checks every round it ran, and a slow machine must not turn it into a pytest timeout.
BUDGET_S = float(os.environ.get("TIERSTORE_CRASH_BUDGET_S", "150"))
MIN_KILLS = 25
THREADS = 3
FULL_CHECK_EVERY = 25
PLAIN, VERSIONED = "crash", "crashv"
PLAIN_KEYS = [f"k/{i:03d}" for i in range(24)]
VERSIONED_KEYS = [f"v/{i:03d}" for i in range(12)]
MIB = 1024 * 1024
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
DM = "delete-marker"
# During the kill loop, startup GC only collects orphans at least this old: a blob linked by a
# request in flight right after a restart is younger, and must not be taken for an orphan.
LOOP_GC_GRACE = "10"


def body_for(key: str, gen: int, size: int) -> bytes:
    """The content of write number ``gen`` of ``key``: any body read back can be attributed."""
    return random.Random(f"{key}#{gen}").randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NoResponse(Exception):
    """The request got no status line: the server died (or dropped the connection)."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes | None  # None: the status line came, the body was cut off


def call(
    port: int, method: str, path: str, query: list[tuple[str, str]] | None = None, body: bytes | None = None
) -> Reply:
    signed = sign_v4(port, method, path, payload_hash=UNSIGNED, query=query or [])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        try:
            conn.putrequest(method, signed.target, skip_host=True, skip_accept_encoding=True)
            for k, v in signed.headers.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise NoResponse(f"{method} {path}: {exc!r}") from exc
        headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            data: bytes | None = resp.read()
        except (OSError, http.client.HTTPException):
            data = None
        return Reply(resp.status, headers, data)
    finally:
        conn.close()


# --- the model ----------------------------------------------------------------------------


@dataclass
class PlainKey:
    possible: set[str | None] = field(default_factory=lambda: {None})  # digests; None = absent
    gen: int = 0


@dataclass
class VersionedKey:
    order: list[str] = field(default_factory=list)  # version ids, oldest first
    content: dict[str, str] = field(default_factory=dict)  # version id -> digest or DM
    uncertain: tuple[str, str] | None = None  # ("put", digest) | ("dm", "") | ("delv", version id)
    gen: int = 0
    fresh: set[str] = field(default_factory=set)  # versions written since the last check


class Model:
    def __init__(self) -> None:
        self.plain = {k: PlainKey() for k in PLAIN_KEYS}
        self.versioned = {k: VersionedKey() for k in VERSIONED_KEYS}
        self.sizes: dict[str, int] = {}
        self.origin: dict[str, str] = {}  # digest -> "key#gen", for messages
        self.errors: list[str] = []
        self.killing = threading.Event()
        self.acked: Counter[str] = Counter()
        self.unanswered = 0

    def note(self, key: str, gen: int, data: bytes) -> str:
        d = digest(data)
        self.sizes[d] = len(data)
        self.origin[d] = f"{key}#{gen}"
        return d

    def describe(self, d: str | None) -> str:
        return "absent" if d is None else self.origin.get(d, f"UNKNOWN CONTENT {d[:16]}")


def random_size(rng: random.Random, cap: int) -> int:
    kind = rng.choices(range(5), weights=[1, 1, 4, 3, 1])[0]
    size = [0, 1, rng.randint(2, 65_536), rng.randint(65_537, MIB), rng.randint(MIB, 3 * MIB)][kind]
    return min(size, cap)


class Client(threading.Thread):
    """Runs a seeded mix of writes on its own keys until the server is killed under it."""

    def __init__(self, port: int, model: Model, rng: random.Random, plain: list[str], versioned: list[str]) -> None:
        super().__init__(daemon=True)
        self.port, self.m, self.rng = port, model, rng
        self.plain_keys, self.versioned_keys = plain, versioned

    def run(self) -> None:
        try:
            for _ in range(200):
                self.one_op()
        except NoResponse as exc:
            self.m.unanswered += 1
            if not self.m.killing.is_set():
                self.m.errors.append(f"no response while the server was up: {exc}")
        except Exception as exc:  # pragma: no cover - reported by the round's check
            self.m.errors.append(f"client thread failed: {exc!r}")

    def expect(self, reply: Reply, what: str, *ok: int) -> bool:
        if reply.status in ok:
            self.m.acked[what.split(maxsplit=1)[0]] += 1
            return True
        self.m.errors.append(f"{what}: unexpected {reply.status} {reply.body[:300] if reply.body else b''!r}")
        return False

    def one_op(self) -> None:
        rng = self.rng
        op = rng.choices(
            ["put", "delete", "multipart", "vput", "vdelete", "vdelversion"], weights=[40, 10, 2, 26, 10, 8]
        )[0]
        if op in ("put", "delete", "multipart"):
            key = rng.choice(self.plain_keys)
            st = self.m.plain[key]
            st.gen += 1
            if op == "delete":
                new: str | None = None
                reply = self.uncertain_write(st, None, lambda: call(self.port, "DELETE", f"/{PLAIN}/{key}"))
                if reply is not None and self.expect(reply, f"DELETE {key}", 204):
                    st.possible = {new}
                return
            if op == "put":
                data = body_for(key, st.gen, random_size(rng, 3 * MIB))
                new = self.m.note(key, st.gen, data)
                reply = self.uncertain_write(st, new, lambda: call(self.port, "PUT", f"/{PLAIN}/{key}", body=data))
                if reply is not None and self.expect(reply, f"PUT {key}#{st.gen}", 200):
                    st.possible = {new}
                return
            self.multipart(key, st)
            return
        key = rng.choice(self.versioned_keys)
        vs = self.m.versioned[key]
        if op == "vdelversion" or len(vs.order) > 6:
            if not vs.order:
                return
            vid = rng.choice(vs.order)
            vs.uncertain = ("delv", vid)
            reply = call(self.port, "DELETE", f"/{VERSIONED}/{key}", [("versionId", vid)])
            vs.uncertain = None
            if self.expect(reply, f"DELETE {key}?versionId={vid}", 204):
                vs.order.remove(vid)
                vs.fresh.discard(vid)
            return
        if op == "vdelete":
            vs.uncertain = ("dm", "")
            reply = call(self.port, "DELETE", f"/{VERSIONED}/{key}")
            vs.uncertain = None
            if self.expect(reply, f"DELETE {key} (versioned)", 204):
                vid = reply.headers.get("x-amz-version-id", "")
                if reply.headers.get("x-amz-delete-marker") != "true" or not vid:
                    self.m.errors.append(f"DELETE {key}: no delete marker in {reply.headers}")
                vs.order.append(vid)
                vs.content[vid] = DM
                vs.fresh.add(vid)
            return
        vs.gen += 1
        data = body_for(key, vs.gen, random_size(rng, 256 * 1024))
        d = self.m.note(key, vs.gen, data)
        vs.uncertain = ("put", d)
        reply = call(self.port, "PUT", f"/{VERSIONED}/{key}", body=data)
        vs.uncertain = None
        if self.expect(reply, f"PUT {key}#{vs.gen} (versioned)", 200):
            vid = reply.headers.get("x-amz-version-id", "")
            if not vid or vid == "null":
                self.m.errors.append(f"PUT {key}: no version id in {reply.headers}")
            vs.order.append(vid)
            vs.content[vid] = d
            vs.fresh.add(vid)

    def uncertain_write(self, st: PlainKey, new: str | None, fn):  # type: ignore[no-untyped-def]
        """Run a write; while it is unanswered its outcome is part of the key's possibilities."""
        before = set(st.possible)
        st.possible = before | {new}
        reply = fn()
        st.possible = before
        return reply

    def multipart(self, key: str, st: PlainKey) -> None:
        rng = self.rng
        sizes = [5 * MIB] * rng.randint(1, 2) + [rng.randint(0, MIB)]
        data = body_for(key, st.gen, sum(sizes))
        new = self.m.note(key, st.gen, data)
        reply = call(self.port, "POST", f"/{PLAIN}/{key}", [("uploads", "")], body=b"")
        if not self.expect(reply, f"CreateMultipartUpload {key}", 200) or reply.body is None:
            return
        upload_id = ET.fromstring(reply.body).findtext(f"{NS}UploadId") or ""
        parts, offset = [], 0
        for n, size in enumerate(sizes, 1):
            reply = call(
                self.port,
                "PUT",
                f"/{PLAIN}/{key}",
                [("partNumber", str(n)), ("uploadId", upload_id)],
                body=data[offset : offset + size],
            )
            offset += size
            if not self.expect(reply, f"UploadPart {key} {n}", 200):
                return
            parts.append(f"<Part><PartNumber>{n}</PartNumber><ETag>{reply.headers['etag']}</ETag></Part>")
        xml = f"<CompleteMultipartUpload>{''.join(parts)}</CompleteMultipartUpload>".encode()
        reply = self.uncertain_write(
            st, new, lambda: call(self.port, "POST", f"/{PLAIN}/{key}", [("uploadId", upload_id)], body=xml)
        )
        if reply is not None and self.expect(reply, f"CompleteMultipartUpload {key}#{st.gen}", 200):
            if reply.body is not None and b"<Error>" in reply.body:
                self.m.errors.append(f"CompleteMultipartUpload {key}: 200 with an error body {reply.body[:300]!r}")
            st.possible = {new}


# --- checks after a restart -----------------------------------------------------------------


def get(port: int, bucket: str, key: str, version_id: str | None = None) -> Reply:
    reply = call(port, "GET", f"/{bucket}/{key}", [("versionId", version_id)] if version_id else None)
    assert reply.body is not None, f"GET {bucket}/{key} cut short"
    return reply


def check_plain(port: int, m: Model, key: str) -> None:
    st = m.plain[key]
    reply = get(port, PLAIN, key)
    if reply.status == 404:
        seen: str | None = None
    else:
        assert reply.status == 200, (key, reply.status, reply.body)
        assert reply.body is not None
        seen = digest(reply.body)
    assert seen in st.possible, (
        f"{PLAIN}/{key} reads {m.describe(seen)} ({len(reply.body or b'')} bytes);"
        f" expected one of {sorted(m.describe(p) for p in st.possible)}"
    )
    st.possible = {seen}


def list_versions(port: int, prefix: str) -> list[tuple[str, str, bool, str]]:
    """(key, version id, is latest, "v"/"dm") of the versioned bucket under ``prefix``."""
    out: list[tuple[str, str, bool, str]] = []
    query = [("versions", ""), ("prefix", prefix)]
    while True:
        reply = call(port, "GET", f"/{VERSIONED}", query)
        assert reply.status == 200 and reply.body is not None, reply
        root = ET.fromstring(reply.body)
        for el in root:
            if el.tag in (f"{NS}Version", f"{NS}DeleteMarker"):
                out.append(
                    (
                        el.findtext(f"{NS}Key") or "",
                        el.findtext(f"{NS}VersionId") or "",
                        el.findtext(f"{NS}IsLatest") == "true",
                        "v" if el.tag == f"{NS}Version" else "dm",
                    )
                )
        if root.findtext(f"{NS}IsTruncated") != "true":
            return out
        query = [
            ("versions", ""),
            ("prefix", prefix),
            ("key-marker", root.findtext(f"{NS}NextKeyMarker") or ""),
            ("version-id-marker", root.findtext(f"{NS}NextVersionIdMarker") or ""),
        ]


def check_versioned(
    port: int, m: Model, key: str, listed: list[tuple[str, str, bool, str]], *, all_versions: bool
) -> None:
    vs = m.versioned[key]
    mine = [x for x in listed if x[0] == key]
    ids = [x[1] for x in mine]
    assert len(set(ids)) == len(ids), (key, mine)
    expected = set(vs.order)
    extra = set(ids) - expected
    missing = expected - set(ids)
    unc = vs.uncertain
    if unc is not None and unc[0] == "delv":
        missing.discard(unc[1])
    assert not missing, f"{key}: acknowledged versions {missing} are gone (listed {mine})"
    assert len(extra) <= 1, f"{key}: unknown versions {extra}"
    if extra:
        (vid,) = extra
        kind = next(x[3] for x in mine if x[1] == vid)
        assert unc is not None and unc[0] in ("put", "dm"), f"{key}: version {vid} nobody wrote ({mine})"
        assert kind == ("v" if unc[0] == "put" else "dm"), (key, vid, kind, unc)
        vs.content[vid] = unc[1] if unc[0] == "put" else DM
        vs.fresh.add(vid)
    vs.order = [v for v in vs.order if v in ids] + sorted(extra)
    vs.uncertain = None
    latest = [x[1] for x in mine if x[2]]
    assert latest == vs.order[-1:], f"{key}: latest is {latest}, expected {vs.order[-1:]} ({mine})"
    for vid in [v for v in vs.order if all_versions or v in vs.fresh]:
        reply = get(port, VERSIONED, key, vid)
        if vs.content[vid] == DM:
            assert reply.status == 405, (key, vid, reply.status)
        else:
            assert reply.status == 200, (key, vid, reply.status, reply.body)
            assert reply.body is not None
            seen = digest(reply.body)
            assert seen == vs.content[vid], (
                f"{key}?versionId={vid} reads {m.describe(seen)}, wrote {m.describe(vs.content[vid])}"
            )
    vs.fresh.clear()
    reply = get(port, VERSIONED, key)
    if not vs.order or vs.content[vs.order[-1]] == DM:
        assert reply.status == 404, (key, reply.status)
    else:
        assert reply.status == 200 and reply.body is not None, (key, reply.status)
        assert digest(reply.body) == vs.content[vs.order[-1]], f"{key}: latest reads wrong bytes"


def list_keys(port: int, bucket: str) -> dict[str, int]:
    out: dict[str, int] = {}
    query = [("list-type", "2")]
    while True:
        reply = call(port, "GET", f"/{bucket}", query)
        assert reply.status == 200 and reply.body is not None, reply
        root = ET.fromstring(reply.body)
        for el in root.iter(f"{NS}Contents"):
            out[el.findtext(f"{NS}Key") or ""] = int(el.findtext(f"{NS}Size") or "-1")
        token = root.findtext(f"{NS}NextContinuationToken")
        if root.findtext(f"{NS}IsTruncated") != "true" or not token:
            return out
        query = [("list-type", "2"), ("continuation-token", token)]


def full_check(port: int, m: Model) -> None:
    for key in PLAIN_KEYS:
        check_plain(port, m, key)
    want = {k: m.sizes[d] for k, st in m.plain.items() for d in st.possible if d is not None}
    assert list_keys(port, PLAIN) == want
    listed = list_versions(port, "")
    assert {x[0] for x in listed} <= set(VERSIONED_KEYS), listed
    for key in VERSIONED_KEYS:
        check_versioned(port, m, key, listed, all_versions=True)
    want = {
        k: m.sizes[vs.content[vs.order[-1]]]
        for k, vs in m.versioned.items()
        if vs.order and vs.content[vs.order[-1]] != DM
    }
    assert list_keys(port, VERSIONED) == want


# --- on disk -------------------------------------------------------------------------------


@dataclass(slots=True)
class Layout:
    """Where the store keeps its files: one data dir, or an erasure set of drive dirs."""

    root: Path
    drives: int = 0  # 0: a single data directory

    @property
    def dirs(self) -> list[Path]:
        return [self.root / f"drive{i}" for i in range(self.drives)] if self.drives else [self.root / "data"]

    def server(self, gc_grace: str) -> ServerProcess:
        if not self.drives:
            return ServerProcess(self.dirs[0], extra_args=["--gc-grace", gc_grace])
        # small stripes and a small replica threshold: the 0.1-3 MiB bodies span many stripes
        args = ["--drives", *map(str, self.dirs), "--stripe-bytes", "262144", "--small-object-bytes", "16384"]
        return ServerProcess(self.root / "log", extra_args=[*args, "--gc-grace", gc_grace, "--scrub-interval", "0"])

    def catalogs(self) -> list[Path]:
        if not self.drives:
            return [self.dirs[0] / "catalog.db"]
        return [d / "catalog" / "catalog.db" for d in self.dirs]

    def files(self) -> dict[str, int]:
        """Blob id -> how many drives hold a file (a shard or a replica) for it."""
        out: Counter[str] = Counter()
        for d in self.dirs:
            out.update(p.name for p in (d / "blobs").rglob("*") if p.is_file())
        return dict(out)

    def tmp_files(self) -> list[Path]:
        return [p for d in self.dirs if (d / "tmp").exists() for p in (d / "tmp").iterdir()]


def catalog_state(db_path: Path) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """(references counted from versions and parts, the blobs table's refs, the trash)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        refs: dict[str, int] = {}
        for (blobs_json,) in db.execute("SELECT blobs FROM versions"):
            for blob_id, _size in json.loads(blobs_json):
                refs[blob_id] = refs.get(blob_id, 0) + 1
        for (blob_id,) in db.execute("SELECT blob_id FROM parts"):
            refs[blob_id] = refs.get(blob_id, 0) + 1
        table = dict(db.execute("SELECT blob_id, refs FROM blobs").fetchall())
        trash = {r[0] for r in db.execute("SELECT blob_id FROM trash")}
    finally:
        db.close()
    return refs, table, trash


def check_redundancy(layout: Layout, table: dict[str, int]) -> None:
    """Every referenced blob is fully redundant: all shards (or all replicas) present and intact."""
    from tierstore.blob import ErasureBlobStore
    from tierstore.drives import DriveSet

    store = ErasureBlobStore(DriveSet.open(layout.dirs, format_new=False))

    async def damaged() -> list[str]:
        return [b for b in table if not await store.verify(b)]

    bad = asyncio.run(damaged())
    assert not bad, f"blobs without full redundancy after a clean restart: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("drives", "kills"),
    [(0, KILLS), (4, int(os.environ.get("TIERSTORE_CRASH_KILLS_DRIVES", "100")))],
    ids=["data-dir", "4-drives"],
)
def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path, drives: int, kills: int) -> None:
    seed = int(os.environ.get("TIERSTORE_TEST_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"\ncrash test seed: {seed} (TIERSTORE_TEST_SEED={seed} replays the schedule)")
    rng = random.Random(seed)
    layout = Layout(tmp_path, drives)
    srv = layout.server(LOOP_GC_GRACE)
    srv.start()
    s3 = make_client(srv.endpoint)
    s3.create_bucket(Bucket=PLAIN)
    s3.create_bucket(Bucket=VERSIONED)
    s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
    m = Model()
    done = 0
    started = time.monotonic()
    try:
        for rnd in range(10**6):
            if done >= kills or (done >= MIN_KILLS and time.monotonic() - started > BUDGET_S):
                break
            plain, versioned = PLAIN_KEYS[:], VERSIONED_KEYS[:]
            rng.shuffle(plain)
            rng.shuffle(versioned)
            clients = [
                Client(srv.port, m, random.Random(rng.getrandbits(64)), plain[i::THREADS], versioned[i::THREADS])
                for i in range(THREADS)
            ]
            delay = rng.uniform(0.0, 0.3)
            m.killing.clear()
            for c in clients:
                c.start()
            time.sleep(delay)
            m.killing.set()
            srv.stop(signal.SIGKILL)
            done += 1
            for c in clients:
                c.join(60)
                assert not c.is_alive(), "client thread hung after the kill"
            assert not m.errors, f"round {rnd} (seed {seed}): {m.errors}"
            srv.start()
            try:
                for key in {k for c in clients for k in c.plain_keys}:
                    check_plain(srv.port, m, key)
                listed = list_versions(srv.port, "")
                for key in VERSIONED_KEYS:
                    check_versioned(srv.port, m, key, listed, all_versions=False)
                if rnd % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1:
                    full_check(srv.port, m)
            except AssertionError as exc:
                raise AssertionError(
                    f"after kill {done} (round {rnd}, seed {seed}, delay {delay:.3f}s): {exc}"
                ) from exc
        full_check(srv.port, m)
        print(
            f"crash test: {done} kills, {m.unanswered} unanswered requests, acknowledged: {dict(m.acked)},"
            f" {time.monotonic() - started:.0f}s"
        )
        assert srv.stop() == 0

        # Every blob the catalog references (versions, parts) has its files, with the right count;
        # on an erasure set every catalog copy says the same.
        states = [catalog_state(db) for db in layout.catalogs()]
        assert all(st == states[0] for st in states), "the catalog copies differ"
        refs, table, _trash = states[0]
        assert refs == table, f"blobs.refs disagrees with the references: {refs.items() ^ table.items()}"
        files = layout.files()
        missing = [b for b in refs if b not in files]
        assert not missing, f"catalog rows without blob files: {missing}"
        if drives:
            check_redundancy(layout, table)

        # A restart with no grace collects every orphan the kills left; nothing live goes.
        srv = layout.server("0")
        srv.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            refs, table, trash = catalog_state(layout.catalogs()[0])
            on_disk = set(layout.files())
            if on_disk == set(table) and not trash:
                break
            time.sleep(0.2)
        assert not trash, f"trash not drained: {trash}"
        assert on_disk == set(table), (
            f"orphans: {sorted(on_disk - set(table))}, missing: {sorted(set(table) - on_disk)}"
        )
        assert not layout.tmp_files(), layout.tmp_files()
        full_check(srv.port, m)
        assert done >= min(kills, MIN_KILLS), done
    except BaseException:
        print(srv.log())
        raise
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
