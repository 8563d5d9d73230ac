"""What the command line shows while the library works: one helper for every command.

In a terminal: a spinner while a program compiles, then a live bar with the rate and the time left. In a log (not a
terminal): plain lines, one when a compile starts and ends, and one about every ``LINE_SECONDS`` of counted work.
``quiet``: nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from jaxdream import progress

LINE_SECONDS = 10.0


def _plural(unit: str, n: int | None) -> str:
    return unit if n == 1 else f"{unit}s"


def _compile_note(event: progress.Event) -> str:
    kept = "kept for the next runs" if event.source == "kept" else "the program cache is off"
    first = "first time for this size" if " for " in event.what else "first time"  # some programs take no image
    return f"compiling {event.what} ({first}; {kept})"


class Feedback:
    """A ``progress`` listener that draws on ``console``; use it as a context manager around the command's work."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet, self.live = console, quiet, console.is_terminal
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                            transient=True, disable=quiet or not self.live)
        self.tasks: dict[tuple[str, str], Any] = {}
        self.last_line: dict[tuple[str, str], float] = {}
        self.first: dict[tuple[str, str], tuple[float, int]] = {}  # each task's first advance: (seconds, done)
        self.stack = ExitStack()
        self.lock = threading.Lock()  # programs compile on worker threads, and say so from there

    def __enter__(self) -> Feedback:
        if not self.quiet:
            self.stack.enter_context(progress.listening(self))
            self.stack.enter_context(self.bar)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def print(self, text: str) -> None:
        """A line above the live bar (or a plain line)."""
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, event: progress.Event) -> None:
        with self.lock:
            self._show(event)

    def _show(self, event: progress.Event) -> None:
        key = (event.what, event.unit)
        if event.kind == "compile":
            if self.live:
                self.tasks[key] = self.bar.add_task(escape(_compile_note(event)), total=None, rate="")
            else:
                self.print(_compile_note(event) + " ...")
        elif event.kind == "compiled":
            if key in self.tasks:
                self.bar.remove_task(self.tasks.pop(key))
            self.print(f"[dim]compiled {escape(event.what)} in {event.seconds:.1f} s[/dim]" if self.live
                       else f"compiled {event.what} in {event.seconds:.1f} s")
        elif event.kind == "start":
            self.first.pop(key, None)
            if self.live:
                self.tasks[key] = self.bar.add_task(event.what, total=event.total, rate="")
            self.last_line[key] = time.perf_counter()
        elif event.kind == "advance":
            # The rate counts from the first finished chunk: the first one also waited for the compile.
            first_seconds, first_done = self.first.setdefault(key, (event.seconds, event.done))
            pace = (event.done - first_done) / (event.seconds - first_seconds) if event.done > first_done else 0.0
            rate = f"{pace:.2f} {event.unit}/s" if pace else ""
            if key in self.tasks:
                self.bar.update(self.tasks[key], completed=event.done, total=event.total, rate=rate)
            elif not self.live and time.perf_counter() - self.last_line.get(key, 0.0) >= LINE_SECONDS:
                left = f", about {(event.total - event.done) / pace:.0f} s left" if pace and event.total else ""
                self.print(f"{event.what}: {event.done}/{event.total} {_plural(event.unit, event.total)}"
                           + (f", {rate}" if rate else "") + left)
                self.last_line[key] = time.perf_counter()
        elif event.kind == "end" and key in self.tasks:
            self.bar.remove_task(self.tasks.pop(key))

    def counter(self, what: str, unit: str) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback (batch, video) shown like any counted task, opened on its first call."""
        started = time.perf_counter()

        def advance(done: int, total: int) -> None:
            key = (what, unit)
            if key not in self.last_line:
                self(progress.Event("start", what, 0, total, unit))
            self(progress.Event("advance", what, done, total, unit, time.perf_counter() - started))

        return advance
