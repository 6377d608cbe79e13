"""``async-uploader upload --dry-run``: the plan and what it would cost, with no request at all.

Nothing is sent and nothing is created: no credentials are resolved, no preflight is made, no checkpoint is
written, and a stdin source is not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.config import RateLimits, ReadSet, Source, env_region
from ..core.estimate import estimate
from ..core.plan import Plan, make_plan
from ..core.protocol import Endpoint
from ..edge.sources import check_source_path
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


def dry_run(args: argparse.Namespace, read_set: ReadSet) -> int:
    """Print the plan of ``read_set`` (stdout; --json: one object) and exit 0, having sent nothing."""
    sizes, streams = _sizes(read_set)
    part_size = args.part_size
    plan = make_plan(sizes, part_size) if sizes else Plan(part_size or make_plan({Source.SOURCE1: 1}).part_size)
    rates = RateLimits(parts=getattr(args, "max_rate", RateLimits().parts))
    found = estimate(plan, rates, streams)
    if args.json:
        print(json.dumps({**found.as_json(), "endpoint": _where(args)}))
        return EXIT_OK
    print("dry run: nothing is sent and nothing is created")
    for name, source in found.as_json()["sources"].items():
        if source["parts"] is None:
            print(f"{name}: a stream of unknown size, read in parts of {plan.part_size:,} bytes")
        else:
            print(
                f"{name}: {source['bytes']:,} bytes in {source['parts']:,} parts of {plan.part_size:,} bytes "
                f"(the last {source['lastPartBytes']:,})"
            )
    print("requests: " + ", ".join(f"{count:,} {name}" for name, count in found.requests.items()) + " (retries aside)")
    if found.seconds is not None:
        print(
            f"time at the service's quotas: at least {found.seconds:.1f} s ({rates.parts:g} parts/s, "
            f"Create and Complete {rates.control:g}/s); the network may make it longer"
        )
    print(f"endpoint: {_where(args)}")
    return EXIT_OK
