"""Run the benchmark scenarios and write benchmarks/results/ (RESULTS.md, results.json, PNG plots).

    python benchmarks/run.py                       # every scenario, 5 runs, 2 × 1 GiB bulk
    python benchmarks/run.py --quick               # CI smoke: tiny sizes, 1 run, well under a minute
    python benchmarks/run.py --only bulk tiny --runs 3 --gib 0.25

Each client runs in its own process against the project's local store (started here, in --discard mode), so its
CPU time and peak RSS are its own. Scenarios: bulk, terminator (TLS through stunnel), distant, tiny, scaling,
streams, faults, verify, batch, startup.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import batch, bulk, distant, faults, scaling, startup_cost, streams, terminator, tiny, tuning, verify
from harness.proc import close_launcher
from harness.report import Section, stamp, write
from harness.runner import Context
from harness.store import emulator_available

HERE = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Context], Section]] = {
    "bulk": bulk.run,
    "terminator": terminator.run,
    "distant": distant.run,
    "tiny": tiny.run,
    "tuning": tuning.run,
    "scaling": scaling.run,
    "streams": streams.run,
    "faults": faults.run,
    "verify": verify.run,
    "batch": batch.run,
    "startup": startup_cost.run,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one run (CI smoke)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="SCENARIO", help="run only these")
    parser.add_argument("--runs", type=int, default=5, help="runs per client in the bulk scenario (default 5)")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB per source in the bulk scenario (default 1)")
    parser.add_argument(
        "--verify-mb",
        type=int,
        default=200,
        help="MB of FASTQ.gz per source of each data set in the verify section's stage, store and compression "
        "tables (default 200)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--data-dir", type=Path, default=HERE / ".data", help="where test data is generated")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a client is killed")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.gib <= 0 or args.verify_mb < 1:
        parser.error("--runs and --verify-mb must be at least 1 and --gib positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not emulator_available():
        print("error: the local store (async_uploader.emulator) is not importable", file=sys.stderr)
        return 2
    ctx = Context(
        quick=args.quick,
        runs=args.runs,
        gib=args.gib,
        data_dir=args.data_dir,
        out_dir=args.out,
        timeout=args.timeout,
        pipeline_mb=args.verify_mb,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # Bytecode as an installed package has it (pip compiles at install): the peers' site-packages are compiled, and
    # without this a shell exporting PYTHONDONTWRITEBYTECODE makes every run of ours compile the package again.
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "async_uploader", quiet=1)
    header = stamp("quick" if args.quick else "full", ["python", "benchmarks/run.py", *(argv or sys.argv[1:])])
    sections: list[Section] = []
    failed = []
    for name in args.only or list(SCENARIOS):
        started = time.perf_counter()
        load = [round(x, 2) for x in os.getloadavg()]
        try:
            section = SCENARIOS[name](ctx)
        except Exception as exc:  # one broken scenario must not cost the others' results
            ctx.log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            section = Section(name, name, notes=[f"Scenario failed: {type(exc).__name__}: {exc}"])
            failed.append(name)
        section.seconds = time.perf_counter() - started
        section.measured = str(header["date"])
        section.load_average = load
        if ctx.skipped:
            section.notes.append(
                "Not measured (async_uploader's engine not importable): " + ", ".join(sorted(set(ctx.skipped)))
            )
            ctx.skipped.clear()
        sections.append(section)
        write(args.out, header, sections)
        ctx.log(f"{name}: done in {section.seconds:.1f} s")
    close_launcher()
    ctx.log(f"results written to {args.out / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
