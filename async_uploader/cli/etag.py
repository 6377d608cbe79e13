"""``async-uploader etag FILE...``: what the service will report for each FASTQ file, computed here.

Like ``md5sum``: one line per file, ``DIGEST  READS reads  BASES bases  FILE``, the digest being the read set ETag
of that source (FASTQ_MD5up unless ``--family`` says otherwise) and the counts its share of
``sequenceInformation``; ``--json`` prints one object per line instead. A file that does not decode as FASTQ is one
error line on stderr and exit 2 (the other files are still summed).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.fastq import FastqSummary, NotFastqError, TruncatedError
from ..engine.hashing import READ_CHUNK, ThreadedSummer, summarize_path
from .common import EXIT_OK, EXIT_USAGE, PROG

__all__ = ["cmd_etag"]


def _summarize(name: str, family: str) -> FastqSummary:
    if name != "-":
        return summarize_path(name, family)
    summer = ThreadedSummer(family)
    while chunk := sys.stdin.buffer.read(READ_CHUNK):
        summer.update(chunk)
    return summer.finish()


def cmd_etag(args: argparse.Namespace) -> int:
    code = EXIT_OK
    for name in args.files:
        try:
            s = _summarize(name, args.family)
        except (NotFastqError, OSError) as exc:
            why = "is truncated" if isinstance(exc, TruncatedError) else "does not decode as FASTQ"
            why = f"cannot be read ({exc.strerror or exc})" if isinstance(exc, OSError) else f"{why}: {exc}"
            sys.stderr.write(f"{PROG}: error: {name} {why}\n")
            code = EXIT_USAGE
            continue
        if args.json:
            line = json.dumps(
                {"file": name, "algorithm": s.algorithm, "digest": s.digest, "reads": s.reads, "bases": s.bases}
            )
        else:
            line = f"{s.digest}  {s.reads} reads  {s.bases} bases  {name}"
        print(line, flush=True)
    return code
