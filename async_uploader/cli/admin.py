"""``async-uploader uploads``, ``parts`` and ``abort``: look at and clean up uploads in progress."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.config import Source, UploadConfig
from ..core.protocol import UploadSummary
from ..edge.journal import CheckpointSummary, find_checkpoints, uploader_home
from ..engine.uploader import Uploader
from .common import EXIT_OK, PROG, rate_limits, service_config
from .progress import human_size


def _local_checkpoints(args: argparse.Namespace) -> dict[str, CheckpointSummary]:
    """The unfinished uploads local checkpoints know: under --checkpoint-dir, else the whole uploader home."""
    directory = Path(args.checkpoint_dir) if args.checkpoint_dir is not None else uploader_home()
    return find_checkpoints(directory, args.store_id)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Rows under a header in aligned columns (numbers in the ``right`` columns aligned right)."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    print(line(header))
    for row in rows:
        print(line(row))


async def _cmd_uploads(args: argparse.Namespace) -> int:
    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        listed = await uploader.client.list_uploads(args.store_id)
    local = _local_checkpoints(args)
    if not args.json and sys.stdout.isatty():
        _uploads_table(listed, local)
        sys.stderr.write(f"{PROG}: {len(listed)} upload(s) in progress in store {args.store_id}\n")
        return EXIT_OK
    for upload in listed:
        known = local.get(upload.upload_id)
        if args.json:
            record: dict[str, Any] = {
                "uploadId": upload.upload_id,
                "name": upload.name,
                "sampleId": upload.sample_id,
                "subjectId": upload.subject_id,
                "sourceFileType": upload.source_file_type,
                "creationTime": upload.creation_time,
            }
            if known is not None:
                record.update(
                    checkpoint=str(known.path), partsRecorded=known.parts_recorded, partsTotal=known.parts_planned
                )
            print(json.dumps(record))
        else:
            progress = "-"
            if known is not None:
                percent = f" ({known.parts_recorded * 100 // known.parts_planned}%)" if known.parts_planned else ""
                progress = f"{known.parts_recorded}/{known.parts_planned} parts{percent} {known.path}"
            print(
                f"{upload.upload_id}\t{upload.creation_time or '-'}\t{upload.source_file_type or '-'}\t"
                f"{upload.name or '-'}\t{progress}"
            )
    if not args.json:
        sys.stderr.write(f"{PROG}: {len(listed)} upload(s) in progress in store {args.store_id}\n")
    return EXIT_OK


def _uploads_table(listed: Sequence[UploadSummary], local: dict[str, CheckpointSummary]) -> None:
    rows = []
    for upload in listed:
        known = local.get(upload.upload_id)
        progress = checkpoint = "-"
        if known is not None:
            percent = f" ({known.parts_recorded * 100 // known.parts_planned}%)" if known.parts_planned else ""
            progress = f"{known.parts_recorded}/{known.parts_planned}{percent}"
            checkpoint = str(known.path)
        rows.append(
            [
                upload.upload_id,
                str(upload.creation_time or "-"),
                upload.source_file_type or "-",
                upload.name or "-",
                progress,
                checkpoint,
            ]
        )
    _table(["UPLOAD ID", "CREATED", "TYPE", "NAME", "PARTS KEPT", "CHECKPOINT"], rows)


async def _cmd_parts(args: argparse.Namespace) -> int:
    sources = [args.source] if args.source else list(Source)
    table = not args.json and sys.stdout.isatty()
    rows: list[list[str]] = []
    total = 0
    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        for source in sources:
            listed = await uploader.client.list_parts(args.store_id, args.upload_id, source)
            for part in listed:
                if table:
                    rows.append([part.source.value, str(part.number), human_size(part.size), part.checksum])
                    total += part.size
                    continue
                if args.json:
                    print(
                        json.dumps(
                            {
                                "partSource": part.source.value,
                                "partNumber": part.number,
                                "partSize": part.size,
                                "checksum": part.checksum,
                                "creationTime": part.creation_time,
                            }
                        )
                    )
                else:
                    print(f"{part.source.value}\t{part.number}\t{part.size}\t{part.checksum}")
    if table:
        _table(["SOURCE", "PART", "SIZE", "CHECKSUM"], rows, right=(1, 2))
        sys.stderr.write(f"{PROG}: {len(rows)} part(s), {human_size(total)}\n")
    return EXIT_OK


async def _cmd_abort(args: argparse.Namespace) -> int:
    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        await uploader.client.abort_upload(args.store_id, args.upload_id)
    if not args.json:
        sys.stderr.write(f"{PROG}: aborted upload {args.upload_id}\n")
    local = _local_checkpoints(args)
    removed = None
    if args.upload_id in local:
        removed = local[args.upload_id].path
        removed.unlink(missing_ok=True)
        if not args.json:
            sys.stderr.write(f"{PROG}: removed its checkpoint {removed}\n")
    if args.json:
        record = {"uploadId": args.upload_id, "aborted": True, "checkpointRemoved": str(removed) if removed else None}
        print(json.dumps(record))
    return EXIT_OK
