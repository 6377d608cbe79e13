"""Verification hashes files in threads of its own: a few at a time, first come first served, at a lower priority
than the uploads (Linux), and a cancelled wait stops its thread (or drops a file not yet started)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

import anyio
import pytest

from async_uploader.engine.hashers import NICENESS, HashingStopped, hash_in_background, hashing_slots

LIMIT = 10.0  # every wait below ends within this, whatever the machine's load


def test_about_one_file_at_a_time_per_two_cores() -> None:
    assert [hashing_slots(cpus) for cpus in (1, 2, 3, 4, 5, 16)] == [1, 1, 1, 2, 2, 8]
    assert hashing_slots() >= 1


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own priority is Linux's")
async def test_the_hashing_threads_are_nicer_than_the_uploads_and_so_are_the_stages_they_start() -> None:
    def work(_on_read: Callable[[int], None]) -> tuple[str, int, int]:
        found: list[int] = []
        stage = threading.Thread(target=lambda: found.append(_niceness()))  # as engine.hashing starts its stages
        stage.start()
        stage.join(LIMIT)
        return threading.current_thread().name, _niceness(), found[0]

    with anyio.fail_after(LIMIT):
        name, own, stage = await hash_in_background(work)
    assert name.startswith("verify-hash")
    assert own == stage == min(19, _niceness() + NICENESS)


async def test_no_more_files_at_once_than_the_slots_and_each_answer_to_its_own_wait() -> None:
    lock = threading.Lock()
    running, most = 0, 0

    def work(number: int) -> Callable[[Callable[[int], None]], int]:
        def hash_one(on_read: Callable[[int], None]) -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            for _ in range(20):
                on_read(1)
                threading.Event().wait(0.001)
            with lock:
                running -= 1
            return number

        return hash_one

    results: dict[int, int] = {}

    async def one(number: int) -> None:
        results[number] = await hash_in_background(work(number))

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            for number in range(3 * hashing_slots() + 2):
                group.start_soon(one, number)
    assert results == {number: number for number in range(3 * hashing_slots() + 2)}
    assert 1 <= most <= hashing_slots()


async def test_a_cancelled_wait_stops_its_thread_at_the_next_chunk_before_it_returns() -> None:
    entered, ended = threading.Event(), threading.Event()
    chunks = 0
    raised: list[BaseException] = []

    def endless(on_read: Callable[[int], None]) -> None:
        nonlocal chunks
        entered.set()
        try:
            for _ in range(int(LIMIT * 1000)):  # bounded even if no stop came
                on_read(1)
                chunks += 1
                threading.Event().wait(0.001)
        except HashingStopped as exc:
            raised.append(exc)
            raise
        finally:
            ended.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(hash_in_background, endless)
            assert await anyio.to_thread.run_sync(entered.wait, LIMIT)
            group.cancel_scope.cancel()
    assert ended.is_set()  # the wait returned only once the thread had stopped
    assert chunks < LIMIT * 1000 and len(raised) == 1


async def test_a_file_whose_wait_is_cancelled_before_a_slot_frees_is_never_hashed() -> None:
    release = threading.Event()
    started = [threading.Event() for _ in range(hashing_slots())]
    late_ran = threading.Event()

    def blocker(index: int) -> Callable[[Callable[[int], None]], None]:
        def block(_on_read: Callable[[int], None]) -> None:
            started[index].set()
            release.wait(LIMIT)

        return block

    def late(_on_read: Callable[[int], None]) -> None:
        late_ran.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            for index in range(hashing_slots()):
                group.start_soon(hash_in_background, blocker(index))
            for event in started:  # every slot is taken
                assert await anyio.to_thread.run_sync(event.wait, LIMIT)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await hash_in_background(late)
            release.set()
    assert not late_ran.is_set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
async def test_a_forked_child_hashes_in_threads_of_its_own() -> None:
    assert await hash_in_background(lambda _on_read: 1) == 1  # the parent's threads are started

    async def child() -> int:
        with anyio.fail_after(LIMIT):
            return await hash_in_background(lambda _on_read: 7)

    pid = os.fork()
    if pid == 0:  # the child: hash once in a fresh event loop, within LIMIT, and say how through its exit code
        code = 1
        try:
            code = 0 if anyio.run(child) == 7 else 1
        finally:
            os._exit(code)
    with anyio.fail_after(LIMIT):
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            await anyio.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0
