"""Time to first image: what a new image size costs, in fresh processes with an empty program store (issue 24).

Tiny Darknet (the bundled model), layer 9, 5 iterations, 4 octaves unless said:
- a batch of 7 photos of one size (160x120) against 7 photos in 5 sizes (wall, compile and dream seconds);
- the library's first ``nightmare`` call on one 160x120 photo (4 octaves, then 1) against its second call, with
  JAX's trace, lowering and XLA seconds (summed over the compile threads, so they may exceed the wall);
- the command line (``nightmare tiny - dog.jpg 9 -iters 10``) cold and warm, and a second cold-store command with
  ``-range 3`` after a ``-range 1`` one (the branches they share are loaded, not compiled).

Every script here uses only the public API and the command line, so ``PYTHONPATH=<an older checkout>`` measures
the code before a change with the same harness (benchmarks/NOTES.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cases import photos

ONE_SIZE = [(120, 160)] * 7
FIVE_SIZES = [(120, 160), (120, 160), (150, 200), (150, 200), (160, 120), (132, 176), (144, 192)]
EVENTS = {"trace_s": "jaxpr_trace_duration", "lower_s": "jaxpr_to_mlir_module_duration",
          "xla_s": "backend_compile_duration"}

BATCH = """
import json, sys, time
from pathlib import Path
import jaxdream as jd
from jaxdream.batch import Job, run_batch
model = jd.load_model("tiny")
files = sorted(Path(sys.argv[2]).glob("*.jpg"))
options = {"layer": 9, "iters": 5, **({"exact_sizes": True} if sys.argv[4] == "exact" else {})}
summary = run_batch(model, Job("nightmare", model.name, options, 0, None, "jpg"), files, Path(sys.argv[3]), 4)
s = summary.stats
json.dump({"compile_s": s.compile_seconds, "dream_s": s.run_seconds, "programs_compiled": s.programs_compiled,
           "sizes": summary.sizes, "canvases": getattr(summary, "canvases", 0)}, open(sys.argv[1], "w"))
"""

FIRST_CALL = """
import json, sys, time
import jax, numpy as np
seconds = {}
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: seconds.__setitem__(event, seconds.get(event, 0.0) + duration))
import jaxdream as jd
model = jd.load_model("tiny")
x = np.random.default_rng(0).random((120, 160, 3), dtype=np.float32)
octaves = int(sys.argv[2])
times, splits = [], []
for _ in range(2):
    seconds.clear()
    start = time.perf_counter()
    stats = jd.RunStats()
    jd.nightmare(model, x, 9, iters=5, octaves=octaves, stats=stats)
    times.append(time.perf_counter() - start)
    splits.append({**seconds, "dream_s": stats.run_seconds})
json.dump({"times": times, "splits": splits}, open(sys.argv[1], "w"))
"""


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - start


def _event(split: dict[str, float], name: str) -> float:
    return sum(v for k, v in split.items() if k.endswith(name))


def first_image_cases(scratch: Path, dog: Path) -> list[dict[str, Any]]:
    """The rows of the time-to-first-image table (see the module's docstring)."""
    base = {k: v for k, v in os.environ.items() if k not in ("JAXDREAM_NO_CACHE", "JAXDREAM_HOME")}
    rows: list[dict[str, Any]] = []
    batches = {}
    for label, sizes, how in (("7 photos of one size (160x120)", ONE_SIZE, "default"),
                              ("7 photos in 5 sizes", FIVE_SIZES, "default"),
                              ("7 photos in 5 sizes, --exact-sizes", FIVE_SIZES, "exact")):
        folder, record = photos(scratch / label.split(",")[0].replace(" ", "-"), sizes)[0].parent, scratch / "b.json"
        env = {**base, "JAXDREAM_HOME": str(scratch / f"home-{len(batches)}")}
        wall = _run([sys.executable, "-c", BATCH, str(record), str(folder), str(scratch / f"out-{len(batches)}"),
                     how], env)
        r = json.loads(record.read_text())
        batches[label] = wall
        rows.append({"case": f"first image: batch nightmare, {label}", "median_s": wall, **r,
                     **({"wall_ratio_to_one_size": wall / rows[0]["median_s"]} if rows else {})})
    for octaves in (4, 1):
        record = scratch / "first.json"
        env = {**base, "JAXDREAM_HOME": str(scratch / f"home-first-{octaves}")}
        _run([sys.executable, "-c", FIRST_CALL, str(record), str(octaves)], env)
        r = json.loads(record.read_text())
        split = r["splits"][0]
        rows.append({"case": f"first image: library nightmare, one 160x120 photo, {octaves} octave(s)",
                     "median_s": r["times"][0], "second_call_s": r["times"][1],
                     **{key: _event(split, name) for key, name in EVENTS.items()},
                     "dream_first_s": split["dream_s"], "dream_second_s": r["splits"][1]["dream_s"]})
    env = {**base, "JAXDREAM_HOME": str(scratch / "home-cli")}
    command = [sys.executable, "-c", "from jaxdream.cli import main; main()", "nightmare", "tiny", "-", str(dog), "9",
               "-iters", "10", "--quiet"]
    cold, warm = (_run([*command, "--out", str(scratch / name)], env) for name in ("cold", "warm"))
    rows.append({"case": "first image: nightmare tiny dog.jpg 9 -iters 10, cold vs warm", "median_s": cold,
                 "warm_s": warm, "cold_over_warm": cold / warm})
    stats = scratch / "range3.json"
    _run([*command, "-range", "3", "--out", str(scratch / "range3"), "--stats", str(stats)], env)
    s = json.loads(stats.read_text())
    rows.append({"case": "first image: then -range 3 (the shared branches are loaded)",
                 "median_s": s["compile_seconds"], "programs_compiled": s["programs_compiled"],
                 "programs_loaded": s["programs_loaded"]})
    return rows
