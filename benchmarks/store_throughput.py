"""How fast the local sequence store takes 100 MiB UploadReadSetPart bodies, and what CPU it spends.

Starts ``python -m async_uploader.emulator`` as a subprocess (with and without ``--discard``), PUTs parts from
a plain aiohttp client (1 MiB memoryview slices, explicit Content-Length, signed once per part with
UNSIGNED-PAYLOAD) and reads the store's utime+stime from /proc/PID/stat. With ``--tls`` the discard mode is
measured over HTTPS too (``serve --tls``, the client trusting the CA file the store prints).

    .venv/bin/python benchmarks/store_throughput.py --gib 1 --tls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MIB = 1024 * 1024
STORE_ID = "1234567890"
ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = Credentials("test", "test")


def signed(method: str, url: str, body: bytes = b"", unsigned: bool = False) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body)
    if unsigned:
        request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(CREDENTIALS, "omics", "us-east-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def slices(buffer: memoryview, step: int = MIB) -> AsyncIterator[memoryview]:
    for offset in range(0, len(buffer), step):
        yield buffer[offset : offset + step]


async def run_mode(
    flags: list[str], total: int, part_size: int, concurrency: int, buffer: memoryview
) -> dict[str, float]:
    command = [sys.executable, "-m", "async_uploader.emulator", "--max-part-size", str(part_size), *flags]
    proc = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        context = None
        if url.startswith("https://"):
            ca_file = (await proc.stdout.readline()).decode().strip().removeprefix("ca-file: ")
            context = ssl.create_default_context(cafile=ca_file)
        fields = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "bench"}
        body = json.dumps(fields).encode()
        connector = aiohttp.TCPConnector(limit=concurrency, ssl=context if context is not None else True)
        async with aiohttp.ClientSession(connector=connector) as session:
            create = f"{url}/sequencestore/{STORE_ID}/upload"
            async with session.post(create, data=body, headers=signed("POST", create, body)) as response:
                upload_id = (await response.json())["uploadId"]
            count = max(1, total // part_size)
            queue = list(range(1, count + 1))

            async def worker() -> None:
                while queue:
                    number = queue.pop(0)
                    part = f"{url}/sequencestore/{STORE_ID}/upload/{upload_id}/part"
                    part += f"?partSource=SOURCE1&partNumber={number}"
                    headers = signed("PUT", part, unsigned=True)
                    headers["Content-Length"] = str(len(buffer))
                    async with session.put(part, data=slices(buffer), headers=headers) as response:
                        reply = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"part {number}: {response.status} {reply[:200]!r}")

            cpu_before, started = cpu_seconds(proc.pid), time.perf_counter()
            mine = time.process_time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu_before
            client_cpu = time.process_time() - mine
            abort = f"{url}/sequencestore/{STORE_ID}/upload/{upload_id}/abort"
            async with session.delete(abort, headers=signed("DELETE", abort)) as response:
                await response.read()
        sent = count * len(buffer)
        gb = sent / 1e9
        return {
            "bytes": sent,
            "seconds": elapsed,
            "mb_s": sent / elapsed / 1e6,
            "cpu": cpu / gb,
            "client": client_cpu / gb,
        }
    finally:
        proc.terminate()
        await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="data per mode (default 1 GiB)")
    parser.add_argument("--part-mib", type=int, default=100, help="part size in MiB (default 100)")
    parser.add_argument("--concurrency", type=int, default=2, help="parallel PUTs (default 2)")
    parser.add_argument("--data-dir", help="also measure keeping parts in this directory (e.g. a tmpfs)")
    parser.add_argument("--tls", action="store_true", help="also measure --discard over HTTPS (serve --tls)")
    args = parser.parse_args()
    part_size = args.part_mib * MIB
    buffer = memoryview(os.urandom(part_size))
    total = int(args.gib * 1024 * MIB)
    modes = {"discard": ["--discard"]}
    if args.tls:
        modes["discard, TLS"] = ["--discard", "--tls"]
    modes["keep (temp dir)"] = []
    if args.data_dir:
        modes[f"keep ({args.data_dir})"] = ["--data-dir", args.data_dir]
    print(f"{'mode':<24} {'GB':>5} {'seconds':>8} {'MB/s':>6} {'store CPU s/GB':>15} {'client CPU s/GB':>16}")
    for mode, flags in modes.items():
        result = await run_mode(flags, total, part_size, args.concurrency, buffer)
        print(
            f"{mode:<24} {result['bytes'] / 1e9:>5.2f} {result['seconds']:>8.2f} {result['mb_s']:>6.0f}"
            f" {result['cpu']:>15.3f} {result['client']:>16.3f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
