"""Progress of long work, told to whoever listens: the library never prints (DESIGN.md); the command line installs a
listener (a live bar in a terminal, plain lines in a log) with ``listening``, and tests may too.

Work reports three things: a program about to be compiled or loaded (``compiling``), a counted task with a total
(``task``), and units of it finished (``advance``). With no listener every call costs next to nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """``kind``: 'compile' (starting; ``source`` 'kept' when the program will be stored for the next runs, else
    'memory'), 'compiled' (done after ``seconds``), 'start' (a task of ``total`` ``unit``s), 'advance' (``done`` of
    ``total``, ``seconds`` since the start), 'end'."""

    kind: str
    what: str
    done: int = 0
    total: int | None = None
    unit: str = ""
    seconds: float = 0.0
    source: str = ""


Listener = Callable[[Event], None]
_lock = threading.Lock()
_listener: Listener | None = None
_tasks: list[list] = []  # open tasks, innermost last: [what, unit, done, total, started]


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send every event to ``listener`` while the block runs (None: silence)."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def _emit(event: Event) -> None:
    listener = _listener
    if listener is not None:
        listener(event)


@contextmanager
def compiling(what: str, kept: bool) -> Iterator[None]:
    """Around compiling a program (``kept``: it will be stored for the next runs)."""
    start, source = time.perf_counter(), "kept" if kept else "memory"
    _emit(Event("compile", what, source=source))
    try:
        yield
    finally:
        _emit(Event("compiled", what, seconds=time.perf_counter() - start, source=source))


@contextmanager
def task(what: str, total: int, unit: str) -> Iterator[None]:
    """A counted piece of work (``total`` ``unit``s, e.g. iterations or images); ``advance(n, unit)`` moves it."""
    entry = [what, unit, 0, total, time.perf_counter()]
    with _lock:
        _tasks.append(entry)
    _emit(Event("start", what, 0, total, unit))
    try:
        yield
    finally:
        with _lock:
            if entry in _tasks:
                _tasks.remove(entry)
        _emit(Event("end", what, entry[2], total, unit, time.perf_counter() - entry[4]))


def advance(n: int, unit: str) -> None:
    """``n`` more ``unit``s done: moves the innermost open task counting that unit (none open: nothing happens)."""
    with _lock:
        entry = next((t for t in reversed(_tasks) if t[1] == unit), None)
        if entry is None:
            return
        entry[2] = min(entry[2] + n, entry[3])
        event = Event("advance", entry[0], entry[2], entry[3], unit, time.perf_counter() - entry[4])
    _emit(event)
