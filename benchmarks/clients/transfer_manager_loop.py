"""aws-healthomics-tools' TransferManager over a batch manifest: its read sets one after another, in a loop.

What a user of AWS's recommended uploader writes for a sequencing run: for each row of the manifest (the same CSV
``async-uploader batch`` reads: source1, source2, sourceFileType, subjectId, sampleId, name), one
``upload_read_set(..., wait=True)``, which returns at Complete with the read set id; nothing is checked and no read
set is waited for. TransferManager at its defaults: TransferConfig() (10 request threads), its fixed 100 MiB part
size, a boto3 omics client whose connection pool (10) matches, botocore's own retries on throttling.

Prints ``{"ok", "bytes", "parts", "seconds", "readSets", "part_size"}``; ``seconds`` runs from just before the
first request to just after the last Complete.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

import _common
import boto3
from botocore.config import Config


def rows(manifest: Path) -> list[dict[str, str]]:
    """The manifest's rows, each source resolved against the manifest's folder."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        found = [dict(row) for row in csv.DictReader(handle)]
    for row in found:
        for column in ("source1", "source2"):
            if row.get(column):
                row[column] = str(manifest.parent / row[column])
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    from omics.transfer.config import TransferConfig
    from omics.transfer.manager import TransferManager
    from omics.transfer.read_set_upload import UPLOAD_PART_SIZE_BYTES

    client = boto3.session.Session().client(
        "omics",
        region_name=_common.REGION,
        endpoint_url=args.endpoint,
        config=Config(inject_host_prefix=False, max_pool_connections=10),
    )
    manifest = rows(Path(args.manifest))
    total = parts = 0
    read_sets = []
    started = time.perf_counter()
    with TransferManager(client, TransferConfig()) as manager:
        for row in manifest:
            paths = [row["source1"]] + ([row["source2"]] if row.get("source2") else [])
            read_sets.append(
                manager.upload_read_set(
                    paths,
                    args.store_id,
                    row.get("sourceFileType") or "FASTQ",
                    row["name"],
                    row["subjectId"],
                    row["sampleId"],
                    wait=True,
                )
            )
            sizes = [os.stat(path).st_size for path in paths]
            total += sum(sizes)
            parts += sum(len(_common.split(size, UPLOAD_PART_SIZE_BYTES)) for size in sizes)
    seconds = time.perf_counter() - started
    return {
        "bytes": total,
        "parts": parts,
        "seconds": seconds,
        "readSets": len(read_sets),
        "part_size": UPLOAD_PART_SIZE_BYTES,
    }


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--endpoint", required=True, help="store URL, http://127.0.0.1:PORT")
    cli.add_argument("--store-id", required=True)
    cli.add_argument("--manifest", required=True, help="the batch manifest (CSV) whose rows are uploaded in turn")
    raise SystemExit(_common.main(run, cli.parse_args()))
