"""Ctrl-C as the library sees it: a flag the command line's signal handler sets and long work checks between
steps (kept free of heavy imports, so the handler can run at any moment, even while JAX is being imported)."""

from __future__ import annotations

import threading

from jaxdream.errors import Interrupted

STOP = threading.Event()


def request_stop() -> None:
    """Ask every loop of the library to stop at its next check (the CLI's SIGINT handler calls it)."""
    STOP.set()


def check() -> None:
    """Raise Interrupted if a stop was requested."""
    if STOP.is_set():
        raise Interrupted()
