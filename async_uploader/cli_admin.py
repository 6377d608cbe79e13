"""``async-uploader uploads``, ``parts`` and ``abort``: look at and clean up uploads in progress."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli_common import EXIT_OK, PROG, rate_limits, service_config
from .config import Source, UploadConfig
from .errors import UploaderError

# -- uploads, parts, abort --------------------------------------------------------------------------------------


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    """Where to look for checkpoints: --checkpoint-dir, else the whole uploader home (single uploads and batches)."""
    if args.checkpoint_dir is not None:
        return Path(args.checkpoint_dir)
    from .checkpoint import default_checkpoint_path

    return default_checkpoint_path("0000000000", ["."]).parent.parent


def _local_checkpoints(directory: Path, store_id: str) -> dict[str, tuple[Path, int, int]]:
    """upload id -> (checkpoint path, parts recorded, parts planned) for the checkpoints found under ``directory``."""
    from .checkpoint import Checkpoint
    from .plan import make_plan

    found: dict[str, tuple[Path, int, int]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.rglob("*.jsonl")):
        try:
            checkpoint = Checkpoint.load(path)
        except (UploaderError, OSError):
            continue
        try:
            header = checkpoint.header
            if header.store_id != store_id or checkpoint.upload_id is None or checkpoint.read_set_id:
                continue
            try:
                plan = make_plan({fp.source: fp.size for fp in header.sources}, header.part_size)
                planned = plan.total_parts
            except UploaderError:
                planned = 0
            found[checkpoint.upload_id] = (path, len(checkpoint.parts), planned)
        finally:
            checkpoint.close()
    return found


async def _cmd_uploads(args: argparse.Namespace) -> int:
    from .engine import Uploader

    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        listed = await uploader.client.list_uploads(args.store_id)
    local = _local_checkpoints(_checkpoint_dir(args), args.store_id)
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
                record.update(checkpoint=str(known[0]), partsRecorded=known[1], partsTotal=known[2])
            print(json.dumps(record))
        else:
            progress = "-"
            if known is not None:
                percent = f" ({known[1] * 100 // known[2]}%)" if known[2] else ""
                progress = f"{known[1]}/{known[2]} parts{percent} {known[0]}"
            print(
                f"{upload.upload_id}\t{upload.creation_time or '-'}\t{upload.source_file_type or '-'}\t"
                f"{upload.name or '-'}\t{progress}"
            )
    if not args.json:
        sys.stderr.write(f"{PROG}: {len(listed)} upload(s) in progress in store {args.store_id}\n")
    return EXIT_OK


async def _cmd_parts(args: argparse.Namespace) -> int:
    from .engine import Uploader

    sources = [args.source] if args.source else list(Source)
    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        for source in sources:
            listed = await uploader.client.list_parts(args.store_id, args.upload_id, source)
            for part in listed:
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
    return EXIT_OK


async def _cmd_abort(args: argparse.Namespace) -> int:
    from .engine import Uploader

    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        await uploader.client.abort_upload(args.store_id, args.upload_id)
    sys.stderr.write(f"{PROG}: aborted upload {args.upload_id}\n")
    local = _local_checkpoints(_checkpoint_dir(args), args.store_id)
    if args.upload_id in local:
        path = local[args.upload_id][0]
        path.unlink(missing_ok=True)
        sys.stderr.write(f"{PROG}: removed its checkpoint {path}\n")
    return EXIT_OK
