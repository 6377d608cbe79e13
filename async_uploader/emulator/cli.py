"""``async-uploader serve`` / ``python -m async_uploader.emulator``: run the store until SIGINT or SIGTERM.

The options are read without the server: it (and aiohttp) is imported only to serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
from pathlib import Path

from .etag import FAMILIES
from .faults import SERVICE_QUOTAS, FaultOptions
from .options import DEFAULT_MAX_PART_SIZE, StoreOptions
from .parsing import ID_RE

DEFAULT_STORE_ID = "1234567890"
"""The one store ``serve`` knows unless told others: the id the README's examples and the scripts use."""


def _store_id(text: str) -> str:
    if not ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"store id {text!r} must be 10 to 36 digits")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--data-dir", type=Path, help="where parts and read sets go (default: a temporary dir)")
    parser.add_argument(
        "--store-id",
        dest="store_ids",
        action="append",
        type=_store_id,
        metavar="ID",
        help=f"a sequence store this store knows (repeatable; default {DEFAULT_STORE_ID}); requests naming any "
        "other are answered 404 ResourceNotFoundException, as the service does",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the start line as one JSON object (url, keys, store ids, command)"
    )
    parser.add_argument("--access-key", default="test", help="the one accepted access key id (default test)")
    parser.add_argument("--secret-key", default="test", help="its secret key (default test)")
    parser.add_argument(
        "--max-part-size", type=int, default=DEFAULT_MAX_PART_SIZE, help="largest accepted part in bytes"
    )
    parser.add_argument("--discard", action="store_true", help="hash and count part bytes, keep none")
    parser.add_argument(
        "--hash-parts",
        action="store_true",
        help="compute SHA-256 over every part body received, signed or UNSIGNED-PAYLOAD (a store that checksums "
        "what it takes in)",
    )
    parser.add_argument("--log", type=Path, help="append one JSON line per finished request to this file")
    parser.add_argument(
        "--etag-family",
        choices=tuple(FAMILIES),
        default="MD5up",
        help="the ETag family of FASTQ read sets (default MD5up, as a sequence store made without one)",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=30.0, help="close a connection idle (or sending headers) this long"
    )
    parser.add_argument(
        "--body-timeout", type=float, default=30.0, help="answer 408 when no body byte arrives for this long"
    )
    tls = parser.add_argument_group("TLS")
    tls.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS; without --tls-cert, with a certificate for 127.0.0.1, ::1 and localhost signed by a CA "
        "made at start, whose PEM file is printed after the URL",
    )
    tls.add_argument("--tls-cert", type=Path, help="the server certificate chain (PEM); implies --tls")
    tls.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    faults = parser.add_argument_group("fault injection (deterministic per --seed)")
    faults.add_argument(
        "--seed",
        type=int,
        help="make the faults and the ids handed out (upload, read set) the same on every run with the same requests "
        "(default: faults as for seed 0, random ids)",
    )
    faults.add_argument("--throttle-rate", type=float, default=0.0, help="share of requests answered 429")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share answered 500 or 503")
    faults.add_argument("--reset-rate", type=float, default=0.0, help="share whose connection is dropped")
    faults.add_argument(
        "--fault-operations",
        metavar="OP[,OP...]",
        help="inject throttles, errors and resets only into these operations, e.g. UploadReadSetPart (default: all)",
    )
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every request")
    faults.add_argument(
        "--service-quotas",
        action="store_true",
        help="answer 429 above the service's default rates (1/s control, 10/s parts, 5/s listings)",
    )
    faults.add_argument("--quota-control", type=float, help="Create/Complete/Abort requests per second")
    faults.add_argument("--quota-parts", type=float, help="UploadReadSetPart requests per second")
    faults.add_argument("--quota-listings", type=float, help="listing and metadata requests per second")
    faults.add_argument("--connection-mbps", type=float, help="cap each TCP connection at this many MB/s")
    faults.add_argument(
        "--ingest-delay",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="keep each read set PROCESSING_UPLOAD at least this long after Complete (default 0.05)",
    )
    faults.add_argument(
        "--ingest-rate",
        type=float,
        metavar="MBPS",
        help="... and at least its size over this many MB/s, as the service hashing it would",
    )
    faults.add_argument("--corrupt-etag", action="store_true", help="report every FASTQ ETag with one digit wrong")
    faults.add_argument(
        "--clock-offset", type=float, default=0.0, metavar="S", help="run the store's clock S seconds off (Date, SigV4)"
    )


def options_from_args(args: argparse.Namespace) -> StoreOptions:
    quotas: dict[str, float] = dict(SERVICE_QUOTAS) if args.service_quotas else {}
    for kind in ("control", "parts", "listings"):
        value = getattr(args, f"quota_{kind}")
        if value is not None:
            quotas[kind] = value
    return StoreOptions(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        access_key=args.access_key,
        secret_key=args.secret_key,
        max_part_size=args.max_part_size,
        discard=args.discard,
        hash_parts=args.hash_parts,
        log_path=args.log,
        faults=FaultOptions(
            seed=args.seed,
            throttle_rate=args.throttle_rate,
            error_rate=args.error_rate,
            reset_rate=args.reset_rate,
            corrupt_etag=args.corrupt_etag,
            operations=None if args.fault_operations is None else frozenset(args.fault_operations.split(",")),
        ),
        quotas=quotas or None,
        connection_mbps=args.connection_mbps,
        latency_ms=args.latency_ms,
        etag_family=args.etag_family,
        idle_timeout=args.idle_timeout,
        body_timeout=args.body_timeout,
        tls=args.tls or args.tls_cert is not None or args.tls_key is not None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        clock_offset=args.clock_offset,
        processing_delay=args.ingest_delay,
        ingest_mbps=args.ingest_rate,
        store_ids=tuple(dict.fromkeys(args.store_ids or [DEFAULT_STORE_ID])),
    )


def upload_command(url: str, options: StoreOptions, ca_path: Path | None) -> str:
    """A command that uploads into this store, ready to paste (the file name is the one thing to change)."""
    store_id = (options.store_ids or (DEFAULT_STORE_ID,))[0]
    words = [
        f"AWS_ACCESS_KEY_ID={shlex.quote(options.access_key)}",
        f"AWS_SECRET_ACCESS_KEY={shlex.quote(options.secret_key)}",
        "async-uploader upload reads.fastq.gz",
        f"--endpoint-url {url} --region us-east-1",
    ]
    if ca_path is not None:
        words.append(f"--ca-bundle {shlex.quote(str(ca_path))}")
    words.append(f"--store-id {store_id} --file-type FASTQ --subject-id S1 --sample-id X1 --name reads")
    return " ".join(words)


def start_lines(url: str, options: StoreOptions, ca_path: Path | None, *, as_json: bool) -> list[str]:
    """What ``serve`` prints once it listens: the URL first (then ``ca-file: PATH`` with TLS), for scripts that read
    the first line(s); then the keys, the store ids and an upload command, for people. Or all as one JSON object."""
    command = upload_command(url, options, ca_path)
    stores = list(options.store_ids) if options.store_ids is not None else None
    if as_json:
        record = {
            "url": url,
            "caFile": str(ca_path) if ca_path is not None else None,
            "accessKeyId": options.access_key,
            "secretAccessKey": options.secret_key,
            "storeIds": stores,
            "uploadCommand": command,
        }
        return [json.dumps(record)]
    lines = [url]
    if ca_path is not None:
        lines.append(f"ca-file: {ca_path}")
    lines += [
        f"keys: access key id {options.access_key}, secret access key {options.secret_key} (signature version 4)",
        f"store ids: {', '.join(stores) if stores is not None else 'any'}",
        f"upload with: {command}",
    ]
    return lines


async def serve(options: StoreOptions, *, as_json: bool = False) -> None:
    from .server import LocalStore  # noqa: PLC0415 (the server only to serve, not to read the options)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStore(options) as store:
        for line in start_lines(store.url, options, store.ca_path, as_json=as_json):
            print(line, flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(options, as_json=getattr(args, "json", False)))
    except ValueError as exc:  # TLS files that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the address is taken, the data dir cannot be written, ...
        print(f"error: cannot serve on {options.host}:{options.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m async_uploader.emulator", description="A local HealthOmics sequence store.", allow_abbrev=False
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
