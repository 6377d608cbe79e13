"""The floor under a Python client over TLS, beside async_uploader and TransferManager, through stunnel.

    python benchmarks/tls_floor.py                 # 2 × 1 GiB, 5 alternated runs of each client
    python benchmarks/tls_floor.py --gib 0.5 --runs 3

The clients in turn, each its own process, each paired source sent over its own TLS connection to stunnel (TLS in
C, OpenSSL) on 127.0.0.1:
- the floor (``clients/tls_floor.py``): each file read a MiB at a time and written on a blocking ``ssl.SSLSocket``,
  nothing else: no HTTP, no signing, no library, stunnel forwarding to a sink that throws the bytes away;
- the floor with what async_uploader's design cannot do without (``--design``): asyncio and botocore imported,
  the credentials resolved through a botocore session, each 100 MiB signed with SigV4, and nothing else;
- async_uploader at its defaults without verification (the Python API, and ``async-uploader upload --no-verify``
  run as a pipeline runs it), and TransferManager at its defaults, all through stunnel in front of the local store
  (plain HTTP, ``--discard``).
CPU is the whole process's (user + system from wait4, start-up included); the ratios are to TransferManager's
median, taken in one run. Beside it, for the clients that print them, the main thread's CPU and the other threads'
when the client printed its result: what the bytes cost apart from start-up and the event loop. The floor says
what part of a client's CPU no Python uploader on OpenSSL can save; the floor with the design's parts, what no
client of this design can.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.data import ensure_pair, pair_parser, parse_pair_args
from harness.proc import GIB, Measured, client_argv, close_launcher, run_measured
from harness.runner import OURS, TM, Context, measure
from harness.stunnel import Terminated, find_stunnel
from harness.terminator import CLI

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = parse_pair_args(pair_parser(__doc__ or "", runs=5), argv)
    stunnel, why = find_stunnel()
    if not stunnel:
        print(f"error: {why}", file=sys.stderr)
        return 2
    ctx = Context(quick=False, runs=args.runs, gib=args.gib, data_dir=args.data_dir, out_dir=HERE, timeout=600)
    sources = ensure_pair(args.data_dir, int(args.gib * GIB))
    ours = OURS.with_args("async_uploader (defaults, --no-verify)")
    floors = {"floor": [], "floor + the design's parts (--design)": ["--design"]}
    runs: dict[str, list[Measured]] = {label: [] for label in floors}
    runs.update({ours.label: [], CLI.label: [], TM.label: []})
    try:
        with Terminated(stunnel, sink=True) as sink, Terminated(stunnel) as store:
            floor_args = ["--endpoint", sink.url, "--store-id", "-", "--source1", str(sources[0])]
            floor_args += ["--source2", str(sources[1])]
            for index in range(args.runs):
                ctx.log(f"run {index + 1}/{args.runs}")
                for label, extra in floors.items():
                    argv = client_argv("tls_floor", [*floor_args, *extra])
                    floor = run_measured(label, argv, timeout=ctx.timeout, env=sink.client_env())
                    failed = "" if floor.ok else f"  FAILED: {floor.error}"
                    ctx.log(f"  {label:<42} cpu {floor.cpu:6.2f} s{failed}")
                    runs[label].append(floor)
                for client in (ours, CLI, TM):
                    runs[client.label].append(measure(ctx, store, client, sources))
    finally:
        close_launcher()
    gib = 2 * args.gib
    reference = statistics.median(run.cpu for run in runs[TM.label])
    print(f"\n2 × {args.gib:g} GiB through {stunnel}, {args.runs} alternated run(s); medians")
    print(f"{'client':<50}{'CPU s':>8}{'CPU s/GiB':>11}{'÷ TM':>7}{'wall s':>8}{'main':>7}{'threads':>9}")
    for label, measured in runs.items():
        done = [run for run in measured if run.ok]
        if not done:
            print(f"{label:<50}  failed: {measured[0].error[:80]}")
            continue
        cpu = statistics.median(run.cpu for run in done)
        wall = statistics.median(run.wall for run in done)
        print(f"{label:<50}{cpu:8.2f}{cpu / gib:11.2f}{cpu / reference:7.2f}{wall:8.2f}{_split(done)}")
    print(
        "main: the main thread's CPU s (start-up, imports, the event loop) and threads: the other threads' (the"
        " bytes), when the client printed its result, before the interpreter's exit; '-' where a client does not"
        " report them"
    )
    return 0


def _split(done: list[Measured]) -> str:
    """The medians of the main thread's CPU and of the other threads', as the client reported them."""
    main, total = [run.report.get("main_thread_cpu") for run in done], [run.report.get("process_cpu") for run in done]
    pairs = [(m, t) for m, t in zip(main, total, strict=True) if isinstance(m, float) and isinstance(t, float)]
    if len(pairs) < len(done):
        return f"{'-':>7}{'-':>9}"
    threads = statistics.median(t - m for m, t in pairs)
    return f"{statistics.median(m for m, _ in pairs):7.2f}{threads:9.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
