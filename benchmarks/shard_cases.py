"""Scale-out rows (issue 27): a 64-image folder dreamed by 1, 2 and 4 concurrent ``--shard I/N`` processes, and by
2 ``--claim`` workers against 2 shards (the cost of leases), and ``--ray`` with 1 and 2 actors on a local Ray
instance that the command starts (when the ray extra is installed), each a fresh process on a warm program store,
timed from the first start to the last exit (what the user waits for)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cases import photos

IMAGES, SIZE = 64, (120, 160)
DREAM = ["--layer", "8", "--iters", "5", "--octaves", "2", "--batch-size", "4", "--quiet"]


def _workers(folder: Path, out: Path, env: dict[str, str], extra: list[list[str]]) -> float:
    """Start one ``batch nightmare tiny`` process per ``extra`` argument list at once; seconds until all end."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "from jaxdream.cli import main; main()", "batch", "nightmare",
                               "tiny", str(folder), "--out", str(out), *DREAM, *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for args in extra]
    for proc in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"a worker failed: {err[-2000:]}")
    return time.perf_counter() - start


def shard_cases(scratch: Path) -> list[dict[str, Any]]:
    """The rows: images/s with 1, 2 and 4 shards; 2 claim workers against 2 shards; Ray with 1 and 2 actors."""
    folder = scratch / "shard-photos"
    photos(folder, [SIZE] * IMAGES)
    env = {k: v for k, v in os.environ.items() if k != "JAXDREAM_NO_CACHE"}
    env["JAXDREAM_HOME"] = str(scratch / "shard-home")
    _workers(folder, scratch / "shard-warm", env, [[]])  # compiles once into the store: the rows time dreaming
    rows, seconds = [], {}
    for count in (1, 2, 4):
        seconds[count] = _workers(folder, scratch / f"shards-{count}", env,
                                  [["--shard", f"{i}/{count}"] for i in range(count)])
        rows.append({"case": f"batch: {IMAGES} images {SIZE[1]}x{SIZE[0]}, {count} shard process(es)",
                     "median_s": seconds[count], "images_per_s": IMAGES / seconds[count],
                     "speedup_vs_one": seconds[1] / seconds[count]})
    claimed = _workers(folder, scratch / "claims-2", env, [["--claim"], ["--claim"]])
    rows.append({"case": f"batch: {IMAGES} images, 2 --claim workers", "median_s": claimed,
                 "images_per_s": IMAGES / claimed, "overhead_vs_2_shards": claimed / seconds[2] - 1.0})
    if importlib.util.find_spec("ray") is not None:
        for actors in (1, 2):
            took = _workers(folder, scratch / f"ray-{actors}", env, [["--ray", "--ray-actors", str(actors)]])
            rows.append({"case": f"batch: {IMAGES} images, --ray with {actors} actor(s) (Ray started by the command)",
                         "median_s": took, "images_per_s": IMAGES / took, "vs_1_shard": seconds[1] / took})
    return rows
