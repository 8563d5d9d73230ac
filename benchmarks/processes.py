"""The benchmark cases that need a fresh process: the seed command's start-up (cold and warm program cache) and
tiled dreaming's peak memory (a process's peak RSS is only its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jaxdream import image
from jaxdream.compiled.stats import RunStats
from jaxdream.darknet.model import DarknetModel
from jaxdream.dream.nightmare_mode import nightmare

from .cases import LAYER, environment, photos


def startup_case(model: DarknetModel, scream: Path | None, scratch: Path) -> list[dict[str, Any]]:
    """The seed command (`nightmare vgg-conv W scream.jpg 10`) in a fresh process with an empty and then a warm
    program cache, split into import, model load, compile (or cache load), dream and write."""
    from jaxdream.darknet.weights import write_weights

    weights = scratch / "vgg-conv.weights"
    write_weights(weights, model.cfg, model.params)
    photo = scream or photos(scratch / "startup", [(448, 352)])[0]
    env = {k: v for k, v in os.environ.items() if k != "JAXDREAM_NO_CACHE"}
    env["JAXDREAM_HOME"] = str(scratch / "startup-home")
    rows = []
    for name in ("cold", "warm"):
        stats = scratch / f"startup-{name}.json"
        command = [sys.executable, "-c", "from jaxdream.cli import main; main()", "nightmare", "vgg-conv",
                   str(weights), str(photo), str(LAYER), "--out", str(scratch / f"startup-{name}"), "--quiet",
                   "--stats", str(stats)]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=1800)
        wall = time.perf_counter() - start
        s = json.loads(stats.read_text())
        phases = {"import_s": wall - s["command_seconds"] + s["import_seconds"],
                  "model_load_s": s["model_load_seconds"], "compile_s": s["compile_seconds"],
                  "cache_load_s": s["load_seconds"], "dream_s": s["run_seconds"], "write_s": s["write_seconds"]}
        rows.append({"case": f"cli {name}: nightmare vgg-conv scream.jpg {LAYER}", "median_s": wall, **phases,
                     "over_dream_s": wall - s["run_seconds"]})
    return rows


MEASURED_CLI = """
import atexit, json, resource, sys
record = sys.argv[1]
atexit.register(lambda: open(record, "w").write(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
sys.argv = ["jaxdream", *sys.argv[2:]]
from jaxdream.cli import main
main()
"""


def _measured_cli(args: list[str], scratch: Path, name: str) -> dict[str, Any]:
    """A jaxdream command in a fresh process (no program cache): its --stats, wall seconds and peak RSS."""
    stats, rss = scratch / f"{name}.json", scratch / f"{name}.rss"
    env = {**os.environ, "JAXDREAM_NO_CACHE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", MEASURED_CLI, str(rss), *args, "--stats", str(stats), "--quiet"],
                   env=env, check=True, capture_output=True, timeout=3600)
    wall = time.perf_counter() - start
    return {**json.loads(stats.read_text()), "wall_s": wall, "peak_rss_bytes": 1024 * json.loads(rss.read_text())}


def tiles_cases(model: DarknetModel, scratch: Path, precision: str) -> list[dict[str, Any]]:
    """Tiled dreaming: peak memory of a 2000x1500 dream with tiles of 256 and without, a 12-MP photo with the
    planner's choice, tiled against untiled time at 1024x768, and 24 photos in 12 sizes tiled and untiled."""
    from jaxdream.batch import Job, run_batch
    from jaxdream.compiled.cache import program_cache
    from jaxdream.compiled.store import DISABLE_ENV
    from jaxdream.darknet.weights import write_weights

    weights = scratch / "vgg-conv.weights"
    write_weights(weights, model.cfg, model.params)
    rows = []
    big = photos(scratch / "big", [(1500, 2000)])[0]
    common = ["nightmare", "vgg-conv", str(weights), str(big), str(LAYER), "-iters", "2", "--out", str(scratch / "o"),
              "--precision", precision]
    for label, extra in (("tile 256", ["--tile", "256"]), ("untiled", [])):
        r = _measured_cli(common + extra, scratch, f"big-{label.replace(' ', '')}")
        rows.append({"case": f"tiles: 2000x1500 layer {LAYER}, 2 iters, {label}", "compile_s": r["compile_seconds"],
                     "median_s": r["run_seconds"], "peak_rss_mb": r["peak_rss_bytes"] / 2**20,
                     "program_peak_bytes": r["program_peak_bytes"], "wall_s": r["wall_s"]})
    twelve = photos(scratch / "twelve", [(3024, 4032)])[0]
    r = _measured_cli(["nightmare", "vgg-conv", str(weights), str(twelve), str(LAYER), "-iters", "2", "-octaves", "1",
                       "--out", str(scratch / "o"), "--precision", precision], scratch, "twelve")
    rows.append({"case": f"tiles: 12 MP (4032x3024) layer {LAYER}, 2 iters at full size, planner's choice",
                 "compile_s": r["compile_seconds"], "median_s": r["run_seconds"],
                 "s_per_iteration": r["run_seconds"] / 2, "peak_rss_mb": r["peak_rss_bytes"] / 2**20,
                 "program_peak_bytes": r["program_peak_bytes"], "tile": r.get("tile", 0)})
    x = image.load_image(photos(scratch / "mid", [(768, 1024)])[0])
    times = {}
    for label, tile in (("untiled", None), ("tile 256", 256)):
        nightmare(model, x, LAYER, iters=1, octaves=1, tile=tile, precision=precision)  # compiles
        stats = RunStats()
        nightmare(model, x, LAYER, iters=3, octaves=1, tile=tile, precision=precision, stats=stats)
        times[label] = stats.run_seconds / 3
    rows.append({"case": f"tiles: 1024x768 layer {LAYER}, s per iteration, tile 256 vs untiled",
                 "median_s": times["tile 256"], "untiled_s_per_iteration": times["untiled"],
                 "tiled_vs_untiled": times["tile 256"] / times["untiled"]})
    sizes = [(224 + 16 * i, 320 - 8 * i) for i in range(12)]
    files = photos(scratch / "sizes", sizes * 2)
    with environment(**{DISABLE_ENV: "1"}):
        for label, tile in (("untiled", None), ("tile 128", 128)):
            options = {"layer": LAYER, "iters": 2, "precision": precision, **({"tile": tile} if tile else {})}
            program_cache().clear()
            summary = run_batch(model, Job("nightmare", model.name, options, 0, None, "jpg"), files,
                                scratch / f"sizes-{label.replace(' ', '')}", 2)
            rows.append({"case": f"tiles: 24 photos in 12 sizes, layer {LAYER}, 2 iters, {label}",
                         "compile_s": summary.stats.compile_seconds, "median_s": summary.seconds,
                         "programs_compiled": summary.stats.programs_compiled,
                         "network_programs": sum(p.name in ("dream_step", "tile_gradient")
                                                 for p in program_cache().info()),
                         "images_per_s": len(files) / summary.seconds})
    return rows
