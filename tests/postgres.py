"""A real PostgreSQL for the scale-out tests and benchmarks (issue 18), on 127.0.0.1 only.

Debian's ``postgresql`` package (``./dev test`` installs it when ``/usr/lib/postgresql/*/bin/initdb``
is missing): ``initdb`` into a fresh temp dir, then ``postgres`` on 127.0.0.1 and a free port,
``trust`` for 127.0.0.1 and the Unix socket in that dir only (pg_hba.conf is written here, not
initdb's). ``initdb`` refuses to run as root, so under root both run as the ``postgres`` user: the
child is started with ``Popen(user=, group=)`` (what ``runuser -u postgres --`` does, minus the PAM
session and the extra process, so the PID we hold is the postmaster's) in a dir ``postgres`` owns —
under /tmp, not pytest's 0700 ``/tmp/pytest-of-root``, which ``postgres`` cannot enter.

By hand, ``p = PostgreSQL(); p.start(); print(p.dsn(), p.pid, p.base)`` in ``python`` leaves one
running after Python exits; stop it with ``kill -INT PID`` and remove its dir.

Restartable on the same data dir and port (``stop(); start()``), as the "PostgreSQL restarted
during writes" proof needs; ``stop(immediate=True)`` is a crash (SIGQUIT: no checkpoint, WAL
replay at the next start). Stopped by its PID; ``cleanup()`` removes the dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port

__all__ = ["PostgreSQL", "pg_bindir"]

USER = "postgres"  # the superuser initdb creates (-U), whatever OS user runs the server


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb`` (Debian's layout), else None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


class _Exited(RuntimeError):
    """postgres exited while starting."""


@dataclass
class PostgreSQL:
    """One ``postgres`` server in its own session; its cluster, socket and log under ``base``."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tierstore-pg-")))
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)  # extra ``-c name=value``
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def dsn(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (trust: no password)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    # --- running as the postgres user when we are root -------------------------------------------

    def _as_user(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(USER)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if os.geteuid() == 0:
            env["HOME"] = str(self.base)  # not root's: postgres may not read it
        return dict(env, LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")

    def _run(self, *cmd: str) -> str:
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=self._env(), cwd=self.base, check=False, **self._as_user()
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return str(out.stdout)

    # --- lifecycle ----------------------------------------------------------------------------

    def _init(self, bindir: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.base.chmod(0o700)
        # UTF8 with the C locale: text compares byte-wise everywhere (keys are bytea anyway).
        self._run(str(bindir / "initdb"), "-D", str(self.data_dir), "-U", USER, "-E", "UTF8",
                  "--locale=C", "--auth=trust", "--no-sync", "--no-instructions")  # fmt: skip
        # Our own pg_hba.conf: the Unix socket (in our dir) and 127.0.0.1 only, nothing else.
        (self.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> None:
        """initdb on first start, then start and wait until it answers. A port taken between our
        check and its bind (busy machine): again on a fresh one, unless the port is fixed."""
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is missing: apt-get install -y postgresql (./dev test does it)")
        if not (self.data_dir / "PG_VERSION").exists():
            self._init(bindir)
        fixed_port = bool(self.port)
        for attempt in range(attempts):
            if not fixed_port:
                self.port = free_port()
            self._spawn(bindir)
            try:
                self._wait_ready(bindir, timeout_s)
                return
            except _Exited:
                if fixed_port or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, bindir: Path) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base),
            "max_connections": "200",  # two gateways' pools, benchmarks, psql
            "shared_buffers": "64MB",
            "logging_collector": "off",
            **self.settings,
        }
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
                cwd=self.base, start_new_session=True, **self._as_user(),
            )  # fmt: skip

    def _wait_ready(self, bindir: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self.proc = None
                raise _Exited(f"postgres exited:\n{self.log()[-3000:]}")
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER],
                check=False, env=self._env(),
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        self.stop(immediate=True)
        raise RuntimeError(f"PostgreSQL not ready after {timeout_s}s:\n{self.log()[-3000:]}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through psql (no driver needed); its unaligned output."""
        bindir = pg_bindir()
        assert bindir is not None
        return self._run(str(bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-d", self.dsn(database), "-c", sql)  # fmt: skip

    def create_database(self, name: str) -> str:
        """A fresh database (one per test module keeps modules apart on one server); its DSN."""
        assert name.replace("_", "").isalnum(), name
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, *, immediate: bool = False, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions ended, checkpoint) or, ``immediate``, SIGQUIT (a crash as
        far as the data is concerned: recovery replays the WAL at the next start). Waited for, so
        the port is free after; past ``timeout_s`` the whole session (postmaster and backends) is
        SIGKILLed."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def cleanup(self) -> None:
        """Stop, then remove the cluster."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
