"""Feature-visualisation rows (issue 25): ``render`` images/s at batch 1, 4 and 16, and an atlas's units/s against
rendering the same units one at a time (each a batch of one, through its own compiled program). Compiles are
made before the timed calls (the rows time the steady state; the compile seconds are reported beside)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from jaxdream.atlas import run_atlas
from jaxdream.compiled.stats import RunStats
from jaxdream.objectives import channel
from jaxdream.protocol import Model
from jaxdream.visual.render import render


def render_cases(model: Model, precision: str, size: int = 128, steps: int = 16, layer: int = 5,
                 units: int = 32) -> list[dict[str, Any]]:
    """The rows: render at batch 1, 4 and 16 (a channel objective), and an atlas of ``units`` channels of
    ``layer`` in batches of 16 and 4 against the same units one by one."""
    rows = []
    options = {"size": size, "steps": steps, "precision": precision}
    for batch in (1, 4, 16):
        objective = channel(layer, 3)
        stats = RunStats()
        render(model, objective, batch=batch, stats=stats, **options)  # compile
        began = time.perf_counter()
        render(model, objective, batch=batch, **options)
        took = time.perf_counter() - began
        rows.append({"case": f"render {size}x{size}, {steps} steps, batch {batch}", "median_s": took,
                     "images_per_s": batch / took, "compile_s": stats.compile_seconds})
    with tempfile.TemporaryDirectory() as scratch:
        timings = {}
        for batch_size in (16, 4, 1):
            run_atlas(model, layer, list(range(batch_size)), Path(scratch) / f"warm{batch_size}",
                      batch_size=batch_size, **options)  # compile
            began = time.perf_counter()
            run_atlas(model, layer, list(range(units)), Path(scratch) / f"atlas{batch_size}", batch_size=batch_size,
                      **options)
            timings[batch_size] = time.perf_counter() - began
    for batch_size in (16, 4):
        rows.append({"case": f"atlas: {units} channels of layer {layer}, {size}x{size}, {steps} steps, batches of "
                             f"{batch_size}", "median_s": timings[batch_size],
                     "units_per_s": units / timings[batch_size], "one_by_one_units_per_s": units / timings[1],
                     "speedup_vs_one_by_one": timings[1] / timings[batch_size]})
    return rows
