"""``async-uploader upload --dry-run``: the plan and what it would cost, with no request at all.

Nothing is sent and nothing is created: no credentials are resolved, no preflight is made, no checkpoint is
written, and a stdin source is not read. A plain FASTQ file is named as compressed on the fly (its parts are of
plain input), or, with ``--compress never``, refused as the real run refuses it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core.checkpoint import read_set_identity, verify_resumable
from ..core.config import FileType, RateLimits, ReadSet, Source, env_region
from ..core.errors import SourceError
from ..core.estimate import estimate
from ..core.fastq import check_file_type
from ..core.plan import Plan, make_plan
from ..core.protocol import Endpoint
from ..edge.journal import default_checkpoint_path, load_checkpoint
from ..edge.sources import (
    CODEC,
    check_source_path,
    fingerprint_source,
    is_plain_fastq,
    plain_fastq_refused,
    read_head,
)
from .common import EXIT_OK, endpoint_for, settings_for

__all__ = ["dry_run"]


def _sizes(read_set: ReadSet) -> tuple[dict[Source, int], tuple[Source, ...]]:
    sizes: dict[Source, int] = {}
    streams: list[Source] = []
    for source, given in read_set.sources.items():
        if isinstance(given, Path):
            sizes[source] = check_source_path(given)
        else:
            streams.append(source)
    return sizes, tuple(streams)


def _where(args: argparse.Namespace) -> str:
    endpoint = endpoint_for(args)
    if endpoint:
        return f"{endpoint} (a custom endpoint: no host prefixes)"
    region = args.region or env_region() or settings_for(args).region or "REGION"
    return f"https://{Endpoint.STORAGE.host(region)} (parts, Complete), https://{Endpoint.CONTROL.host(region)}"


def _check_file_types(read_set: ReadSet) -> None:
    """The first bytes of every file source must agree with --file-type, as the real run checks before Create."""
    for source, given in read_set.sources.items():
        if isinstance(given, Path):
            why = check_file_type(read_head(given), read_set.file_type)
            if why is not None:
                raise SourceError(
                    f"{source} {given} is declared {read_set.file_type.value} but {why}; check --file-type"
                )


def plain_fastq(args: argparse.Namespace, read_set: ReadSet) -> list[Source]:
    """The FASTQ file sources that are plain text, which the real run compresses while they upload; with
    ``--compress never`` the refusal the real run makes (SourceError). Streams are not read: they are not named."""
    if read_set.file_type is not FileType.FASTQ:
        return []
    plain = [s for s, given in read_set.sources.items() if isinstance(given, Path) and is_plain_fastq(given)]
    if plain and getattr(args, "compress", "auto") == "never":
        raise plain_fastq_refused(plain[0], read_set.sources[plain[0]])
    return plain


def compressed_line(plain: list[Source]) -> str:
    """What the dry run says of the plain FASTQ sources."""
    names = " and ".join(plain)
    return (
        f"{names}: plain FASTQ, gzip-compressed on the fly as {'they upload' if len(plain) > 1 else 'it uploads'} "
        f"({CODEC}, on every core); the parts above are of plain input, and fewer bytes are sent"
    )


def _resume(args: argparse.Namespace, read_set: ReadSet, plan: Plan) -> dict[str, Any] | None:
    """What the checkpoint this run would use says: None when it would start anew; else the upload it resumes,
    and the parts and bytes still to send. A checkpoint that cannot resume this upload is refused, as the real run
    refuses it."""
    paths = [given for given in read_set.sources.values() if isinstance(given, Path)]
    if args.no_checkpoint or args.restart or len(paths) != len(read_set.sources):  # a stream keeps no checkpoint
        return None
    path = args.checkpoint
    if path is None:
        sizes = [plan.sizes[source] for source in read_set.sources]
        path = default_checkpoint_path(args.store_id, read_set_identity(read_set), sizes, [str(p) for p in paths])
    if not path.exists():
        return None
    replayed = load_checkpoint(path)
    prints = [
        fingerprint_source(source, given) for source, given in read_set.sources.items() if isinstance(given, Path)
    ]
    resumed = plan  # the real run checks the checkpoint against this same plan
    verify_resumable(
        replayed.header,
        store_id=args.store_id,
        read_set=read_set,
        sources=prints,
        part_size=plan.part_size,
        name=str(path),
    )
    kept = set(replayed.parts)
    left = [part for source in resumed.sources for part in resumed.parts_of(source, kept)]
    return {
        "checkpoint": str(path),
        "uploadId": replayed.upload_id,
        "readSetId": replayed.read_set_id,
        "partSize": resumed.part_size,
        "partsKept": len(kept),
        "partsLeft": len(left),
        "bytesLeft": sum(part.length for part in left),
    }


def _resume_line(resume: dict[str, Any]) -> str:
    if resume["readSetId"]:
        return f"resume: the checkpoint {resume['checkpoint']} says this upload is done: read set {resume['readSetId']}"
    upload = f"upload {resume['uploadId']}" if resume["uploadId"] else "an upload not yet created"
    return (
        f"resume: {upload} from the checkpoint {resume['checkpoint']}: {resume['partsKept']:,} parts kept, "
        f"{resume['partsLeft']:,} parts ({resume['bytesLeft']:,} bytes) left to send"
    )


def dry_run(args: argparse.Namespace, read_set: ReadSet) -> int:
    """Check what needs no request (fields, sources, file types, the checkpoint), print the plan of ``read_set``
    (stdout; --json: one object) and exit 0, having sent nothing."""
    sizes, streams = _sizes(read_set)
    part_size = args.part_size
    plan = make_plan(sizes, part_size) if sizes else Plan(part_size or make_plan({Source.SOURCE1: 1}).part_size)
    _check_file_types(read_set)
    plain = plain_fastq(args, read_set)
    resume = _resume(args, read_set, plan)
    rates = RateLimits(parts=getattr(args, "max_rate", RateLimits().parts))
    found = estimate(plan, rates, streams)
    if args.json:
        compressed = {"compressOnTheFly": [str(source) for source in plain], "codec": CODEC}
        print(json.dumps({**found.as_json(), **compressed, "endpoint": _where(args), "resume": resume}))
        return EXIT_OK
    print("dry run: nothing is sent and nothing is created")
    if resume is not None:
        print(_resume_line(resume))
    for name, source in found.as_json()["sources"].items():
        if source["parts"] is None:
            print(f"{name}: a stream of unknown size, read in parts of {plan.part_size:,} bytes")
        else:
            print(
                f"{name}: {source['bytes']:,} bytes in {source['parts']:,} parts of {plan.part_size:,} bytes "
                f"(the last {source['lastPartBytes']:,})"
            )
    if plain:
        print(compressed_line(plain))
    print("requests: " + ", ".join(f"{count:,} {name}" for name, count in found.requests.items()) + " (retries aside)")
    if found.seconds is not None:
        print(
            f"time at the service's quotas: at least {found.seconds:.1f} s ({rates.parts:g} parts/s, "
            f"Create and Complete {rates.control:g}/s); the network may make it longer"
        )
    print(f"endpoint: {_where(args)}")
    return EXIT_OK
