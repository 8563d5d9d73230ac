"""Compiling in the background: a few worker threads take compile jobs, the most urgent first.

XLA compiles without holding Python's lock, so programs compile while the host dispatches (or the device runs)
what is already compiled, and on machines with cores to spare several compile at once. Jobs carry a priority: a
program the current iteration waits for goes before one prefetched for the next image. The threads are daemons and
the queue is emptied when the interpreter exits, so Ctrl-C never waits for compiles nobody will run; a compile
already running is waited for (XLA must not be torn down under it).
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from jaxdream import interrupts

MAX_WORKERS = 4
URGENT, AHEAD = 0, 1  # priorities: needed now, or prefetched for later work


def worker_count() -> int:
    """Compile threads: one per core, at most MAX_WORKERS (each XLA compile also uses a few threads of its own)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


class CompileQueue:
    """Daemon worker threads running submitted jobs in priority order (then submission order)."""

    def __init__(self, workers: int | None = None):
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._running = 0
        self._idle = threading.Condition()
        self._closed = False
        for n in range(workers or worker_count()):
            threading.Thread(target=self._work, name=f"jaxdream-compile-{n}", daemon=True).start()
        atexit.register(self.close)

    def submit(self, job: Callable[[], Any], priority: int = URGENT) -> Future:
        """Run ``job`` on a worker; its result (or exception) arrives through the returned future."""
        future: Future = Future()
        self._jobs.put((priority, next(self._order), job, future))
        return future

    def _work(self) -> None:
        while True:
            _, _, job, future = self._jobs.get()
            if self._closed or not future.set_running_or_notify_cancel():
                continue
            with self._idle:
                self._running += 1
            try:
                future.set_result(job())
            except BaseException as error:  # handed to whoever waits for the program
                future.set_exception(error)
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

    def close(self) -> None:
        """Drop the jobs not started and wait for the running ones (at exit)."""
        self._closed = True
        while True:
            try:
                _, _, _, future = self._jobs.get_nowait()
            except queue.Empty:
                break
            future.cancel()
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0)


def wait(future: Future) -> Any:
    """The future's result, checking for Ctrl-C (``interrupts``) while it is not ready."""
    while True:
        interrupts.check()
        try:
            return future.result(timeout=0.05)
        except TimeoutError:
            continue
