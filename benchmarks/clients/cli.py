"""async-uploader's command line as a pipeline runs it: ``async-uploader upload``, in this process.

The arguments the harness gives every client are turned into the command's own (``--endpoint-url``, ``--store-id``,
the read set's fields, the two sources); any other argument (``--no-verify``, ``--part-size 64MiB``...) is passed to
the command as it is. ``--json`` makes the command print its result, from which the one JSON line of the harness is
made. Checkpoints and receipts go to a temporary ``ASYNC_UPLOADER_HOME``, removed at the end. The command runs in
this process (``async_uploader.cli.main``), so its CPU and memory are this process's, start-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Any

import _common


def run(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as home:
        os.environ["ASYNC_UPLOADER_HOME"] = home
        from async_uploader.cli import main

        argv = ["upload", "--endpoint-url", args.endpoint, "--store-id", args.store_id, "--file-type", "FASTQ"]
        argv += ["--subject-id", _common.SUBJECT, "--sample-id", _common.SAMPLE, "--name", _common.name(0)]
        argv += ["--json", "--no-progress", *extra, *_common.sources(args)]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(argv)
        if code:
            raise RuntimeError(f"async-uploader upload exited with {code}")
        result = json.loads(printed.getvalue().strip().splitlines()[-1])
    return {
        "bytes": sum(result["bytes"].values()),
        "parts": sum(result["parts"].values()),
        "seconds": result["seconds"],
        "transfer_seconds": result["transferSeconds"],
        "verified": result["verified"],
    }


if __name__ == "__main__":
    parsed, rest = _common.parser(__doc__ or "").parse_known_args()
    if parsed.count != 1 or parsed.stream:
        sys.exit("error: the command-line client uploads one read set of files (no --count, no --stream)")
    raise SystemExit(_common.main(lambda args: run(args, rest), parsed))
