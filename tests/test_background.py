"""Background compiles: urgent jobs overtake prefetched ones, errors reach the waiter, and Ctrl-C stops a wait."""

from __future__ import annotations

import threading
import time

import pytest

from jaxdream import interrupts
from jaxdream.compiled.background import AHEAD, URGENT, CompileQueue, wait
from jaxdream.errors import Interrupted


def test_urgent_jobs_run_before_prefetched_ones_and_results_arrive():
    queue, gate, order = CompileQueue(workers=1), threading.Event(), []
    blocker = queue.submit(gate.wait)
    ahead = [queue.submit(lambda k=k: order.append(f"ahead{k}") or k, AHEAD) for k in range(2)]
    urgent = queue.submit(lambda: order.append("urgent") or "now", URGENT)
    gate.set()
    assert wait(urgent) == "now" and [wait(f) for f in ahead] == [0, 1] and wait(blocker)
    assert order == ["urgent", "ahead0", "ahead1"]


def test_a_failed_job_raises_in_the_waiter():
    def broken():
        raise ValueError("bad program")

    with pytest.raises(ValueError, match="bad program"):
        wait(CompileQueue(workers=1).submit(broken))


def test_a_stop_request_ends_a_wait_and_close_drops_queued_jobs():
    queue, gate = CompileQueue(workers=1), threading.Event()
    running = queue.submit(gate.wait)
    queued = queue.submit(lambda: "never")
    deadline = time.monotonic() + 10
    while not running.running() and time.monotonic() < deadline:  # the worker has taken the first job
        time.sleep(0.01)
    interrupts.request_stop()
    try:
        with pytest.raises(Interrupted):
            wait(queued)
    finally:
        interrupts.STOP.clear()
    closer = threading.Thread(target=queue.close)
    closer.start()  # drops the queued job at once, then waits for the running one
    closer.join(timeout=0.5)
    assert closer.is_alive() and queued.cancelled()
    gate.set()
    closer.join(timeout=5)
    assert not closer.is_alive() and running.result(timeout=5)


def test_two_jobs_for_one_program_compile_it_once(program_events):
    """A prefetched job and the urgent copy queued ahead of it can start at the same moment on two workers: the
    program must still compile once."""
    import jax
    import numpy as np

    from jaxdream.compiled.cache import Program, ProgramCache

    cache, start = ProgramCache(store=None), threading.Barrier(2)
    program = Program("triple", None, (), lambda: lambda v: 3 * v)
    args = (np.arange(5, dtype=np.float32),)
    key, device = cache._key(program, args), jax.devices()[0]
    results = []

    def job():
        start.wait()
        results.append(cache._hold(program, key, args, None, device))

    with program_events() as seen:
        threads = [threading.Thread(target=job) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == 2 and results[0] is results[1] and len(seen.compiles) == 1
