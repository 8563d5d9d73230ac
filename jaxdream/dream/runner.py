"""The host side of a dream: the images' checks, long rounds in interruptible chunks, and Darknet's loop over rounds.
Programs run through ``jaxdream.compiled`` (cache, store, placement)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxdream import progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core

CHUNK_SECONDS = 1.0  # a long round runs as calls of about this long, so Ctrl-C is seen within about a second


def run_in_chunks(call: Callable[[Any, int, int], Any], state: Any, count: int) -> Any:
    """``call(state, start, stop)`` over 0 .. count in chunks of about CHUNK_SECONDS each (the first of one step),
    so that an interrupt (``interrupts.request_stop``, the command line's Ctrl-C) is seen between chunks."""
    start, chunk = 0, 1
    while start < count:
        stop = min(count, start + chunk)
        began = time.perf_counter()
        state = call(state, start, stop)
        progress.advance(stop - start, "iteration")
        took = time.perf_counter() - began
        chunk = max(1, int((stop - start) * CHUNK_SECONDS / max(took, 1e-9)))
        start = stop
    return state


def run_rounds(
    step: Callable[[Any, int], Any], images: Any, rounds: int, zoom: float, rotate: float,
    on_round: Callable[[int, np.ndarray], None] | None, stats: RunStats, keep_rounds: bool = True,
) -> np.ndarray:
    """Darknet's round loop: run a round, hand the frame out, then rotate and zoom for the next round. Returns every
    round's images, or (``keep_rounds`` False: long runs whose frames ``on_round`` streams out) the last one."""
    post = Program("between_rounds", None, (zoom, rotate), lambda: core.between_rounds(zoom, rotate))
    frames = []
    for r in range(rounds):
        images = step(images, r)
        frame = np.asarray(images)
        frames = [*frames, frame] if keep_rounds else [frame]
        if on_round is not None:
            on_round(r, frame)
        if r + 1 < rounds and (zoom != 1.0 or rotate):
            images = program_cache()(post, images, stats=stats)
    return np.stack(frames)
