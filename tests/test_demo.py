"""`make demo` end to end at a small size, and the synthetic FASTQ.gz it writes."""

from __future__ import annotations

import asyncio
import gzip
import re
import sys
from pathlib import Path

from async_uploader.cli.demo import write_fastq_gz, write_pair
from tests.conftest import REPO_ROOT


def test_synthetic_fastq_is_valid_gzip_fastq_with_unique_names(tmp_path: Path) -> None:
    first, second = write_pair(tmp_path, 2_000_000, seed=3)
    for mate, path in ((1, first), (2, second)):
        size = path.stat().st_size
        assert 1_000_000 <= size <= 1_000_000 + 900_000  # overshoots by less than one block
        lines = gzip.decompress(path.read_bytes()).decode("ascii").splitlines()
        assert len(lines) % 4 == 0 and len(lines) >= 4 * 4096
        names = lines[0::4]
        assert all(name.startswith("@DEMO01:") and f" {mate}:N:0:" in name for name in names)
        assert len(set(names)) == len(names)
        assert all(set(seq) <= set("ACGT") and len(seq) == 150 for seq in lines[1::4])
        assert set(lines[2::4]) == {"+"}
        assert all(len(qual) == 150 for qual in lines[3::4])
    names1 = [n.split()[0] for n in gzip.decompress(first.read_bytes()).decode().splitlines()[0::4]]
    names2 = [n.split()[0] for n in gzip.decompress(second.read_bytes()).decode().splitlines()[0::4]]
    assert names1 == names2  # mates pair up by name
    assert write_fastq_gz(tmp_path / "tiny.fq.gz", 1) > 0  # at least one block, whatever the size


async def test_demo_runs_end_to_end_at_a_small_size(cli_env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "async_uploader.cli.demo",
        "--size",
        "4MB",
        "--part-size",
        "512KiB",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env,
        cwd=REPO_ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, stderr
    assert "verified" in stderr and "GetReadSet" in stderr
    assert re.search(r"^transfer: [0-9.]+ MB/s$", stdout, re.MULTILINE), stdout
    assert re.search(r"^store processing: [0-9.]+ s$", stdout, re.MULTILINE), stdout
    assert re.fullmatch(r"read set id: [0-9]{10,36}", stdout.splitlines()[-1]), stdout
    assert "\x1b[" not in stderr
