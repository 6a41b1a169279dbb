"""``s3bench.py`` (../shared/bench) with every bucket it creates set to SSE-S3 by default.

Same arguments as s3bench. Right after s3bench creates its fresh bucket, this puts the bucket
default encryption ``AES256`` (PutBucketEncryption, as AWS and SeaweedFS take it), then writes
a probe object and HEADs it: the run stops unless the answer carries
``x-amz-server-side-encryption: AES256``, so an encrypted run can never silently measure plain
storage. The load itself is s3bench's, untouched: benchmarks/sse_side_by_side.py runs it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
ENCRYPTION_XML = (
    b'<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule>'
    b"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
    b"</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"
)
PROBE = b"sse probe"


def load_s3bench() -> Any:
    spec = importlib.util.spec_from_file_location("s3bench", BENCH / "s3bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["s3bench"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    s3bench = load_s3bench()
    make_bucket = s3bench.Bench._mkbucket

    async def mkbucket_encrypted(self: Any) -> None:
        await make_bucket(self)
        conn = s3bench.Conn(self.host, self.port, self.signer)
        path = "/" + self.bucket
        try:
            await conn.request(
                "PUT",
                path,
                params={"encryption": ""},
                body=ENCRYPTION_XML,
                payload_hash=hashlib.sha256(ENCRYPTION_XML).hexdigest(),
                headers={"Content-MD5": base64.b64encode(hashlib.md5(ENCRYPTION_XML).digest()).decode()},
            )
            probe = path + "/sse-probe"
            await conn.request("PUT", probe, body=PROBE, payload_hash=hashlib.sha256(PROBE).hexdigest())
            _, headers, _, _ = await conn.request("HEAD", probe, want_body=False)
            await conn.request("DELETE", probe)
        finally:
            conn.close()
        if headers.get("x-amz-server-side-encryption") != "AES256":
            raise SystemExit(f"bucket default encryption not applied: HEAD answered {headers}")
        print(f"[bench] bucket {self.bucket}: SSE-S3 by default (probe checked)", file=sys.stderr, flush=True)

    s3bench.Bench._mkbucket = mkbucket_encrypted
    result: int = s3bench.main()
    return result


if __name__ == "__main__":
    sys.exit(main())
