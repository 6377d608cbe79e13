"""The AWS SDK for JavaScript v3 (@aws-sdk/client-omics) drives a paired upload against ``serve --tls``.

``make test`` installs the SDK into .venv/js-sdk with npm; the test is skipped where node or the SDK is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.store_serve import ROOT, serve

MODULES = ROOT / ".venv" / "js-sdk" / "node_modules"
NODE = shutil.which("node")
SCRIPT = Path(__file__).with_name("store_js_client.cjs")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (MODULES / "@aws-sdk" / "client-omics").is_dir(),
        reason="@aws-sdk/client-omics is not installed: `make test` installs it into .venv/js-sdk where npm exists",
    ),
]


def test_js_sdk_paired_upload(tmp_path: Path) -> None:
    rand = random.Random(3)
    reads = {
        source: "".join(f"@{source}:{i}\n{''.join(rand.choices('ACGT', k=100))}\n+\n{'?' * 100}\n" for i in range(900))
        for source in ("SOURCE1", "SOURCE2")
    }
    work = tmp_path / "parts"
    work.mkdir()
    compressed = {}
    for source, text in reads.items():
        compressed[source] = gzip.compress(text.encode())
        pieces = [compressed[source][i : i + 10_000] for i in range(0, len(compressed[source]), 10_000)]
        assert len(pieces) >= 3
        for number, piece in enumerate(pieces, 1):
            (work / f"{source}.{number}").write_bytes(piece)
    with serve(tmp_path, "--tls") as served:
        assert served.ca_file is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(NODE_PATH=str(MODULES), NODE_EXTRA_CA_CERTS=str(served.ca_file), AWS_CONFIG_FILE=os.devnull)
        assert NODE is not None
        done = subprocess.run(
            [NODE, str(SCRIPT), served.url, str(work)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    count = len(list(work.glob("SOURCE1.*")))
    pages = out["pages"]
    assert [len(page) for page in pages] == [2] * (count // 2) + ([1] if count % 2 else [])
    assert [number for page in pages for number, _ in page] == list(range(1, count + 1))
    assert out["inProgress"] == [out["uploadId"]]
    assert out["status"] == "ACTIVE"
    assert out["files"]["source1"]["contentLength"] == len(compressed["SOURCE1"])
    assert out["served"] == {s: hashlib.sha256(data).hexdigest() for s, data in compressed.items()}
    assert out["etag"] == {
        "algorithm": "FASTQ_MD5up",
        "source1": hashlib.md5(reads["SOURCE1"].encode()).hexdigest(),
        "source2": hashlib.md5(reads["SOURCE2"].encode()).hexdigest(),
    }
    assert out["sequenceInformation"] == {"totalReadCount": 1800, "totalBaseCount": 180_000}
    assert out["pastLast"] == ["RangeNotSatisfiableException", 416]
    records = [json.loads(line) for line in served.log.read_text().splitlines()]
    assert [r["status"] for r in records if r["status"] != 200] == [416]
