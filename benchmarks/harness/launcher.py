"""A tiny process that starts the benchmark clients and reaps them with wait4.

Why a separate process: Linux carries a process's peak RSS across exec, and a child spawned by the harness
starts out sharing the harness's memory, so its ``ru_maxrss`` can never read lower than the harness's own peak
(tens of MiB once matplotlib is loaded). Spawned from this small process instead, the floor is a bare interpreter's
few MiB, below any real client. Run with ``python -S``; speaks JSON lines on stdin/stdout:

    → {"argv": [...], "env": {...}, "stdout": PATH, "stderr": PATH, "timeout": SECONDS}
    ← {"pid": N}                       as soon as the child runs
    ← {"status": S, "utime": U, "stime": T, "maxrss": KiB, "timed_out": bool}   when it has been reaped
"""

import json
import os
import signal
import sys
import time


def _serve_one(line: str) -> None:
    job = json.loads(line)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, job["stdout"], flags, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, job["stderr"], flags, 0o600),
    ]
    try:
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions)
    except OSError as exc:
        _reply({"pid": 0, "error": str(exc)})
        return
    _reply({"pid": pid})
    deadline = time.monotonic() + float(job["timeout"])
    timed_out = False
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            break
        if not timed_out and time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    _reply(
        {
            "status": status,
            "utime": usage.ru_utime,
            "stime": usage.ru_stime,
            "maxrss": usage.ru_maxrss,
            "timed_out": timed_out,
        }
    )


def _reply(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            _serve_one(line)


if __name__ == "__main__":
    main()
