"""The benchmark suite behind `jaxdream bench` and `python -m benchmarks.bench`.

Compile and steady-state time are measured apart (ahead-of-time compile, a warm-up, then >= 5 timed runs with
block_until_ready; median, min, max). FLOPs are counted analytically from the layer table (2 per multiply-add,
convolutions only; an iteration is the forward plus the input gradient, 2x the forward) and set against the
matmul rate the suite measures on the same device. Baselines in the same run: the same program on the CPU
backend, the eager path (the same math, op by op, without jit), PyTorch eager on the CPU when importable, and
Darknet's published figures as reference rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxdream import image
from jaxdream.compiled.cache import program_peak_bytes
from jaxdream.compiled.stats import RunStats
from jaxdream.darknet import cfg as C
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import DarknetModel, model_from_bytes
from jaxdream.darknet.shapes import layer_shapes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.dream import core
from jaxdream.dream.nightmare_mode import nightmare
from jaxdream.files import image_bytes, write_atomically
from jaxdream.ops import check_precision
from jaxdream.weights import ARCHITECTURES

LAYER = 10
CASES = ("step", "round", "batch", "lucid", "eager", "torch", "pipeline", "startup", "mixed", "tiles", "video")
# Darknet's published timings for `nightmare vgg-conv.cfg vgg-conv.weights scream.jpg 10` (README of the site).
DARKNET_REFERENCE = [
    {"case": "reference: Darknet CPU, scream command (published)", "median_s": 15 * 60.0, "device": "CPU"},
    {"case": "reference: Darknet Titan X, scream command (published)", "median_s": 7.0, "device": "Titan X"},
    {"case": "reference: Darknet CPU build, 2 cores OpenMP, this machine (golden README)", "median_s": 76.6,
     "device": "2-core Xeon"},
]


def timed(fn: Callable, *args: Any, runs: int = 5) -> dict[str, float]:
    """Compile seconds, steady-state seconds (median/min/max over ``runs`` after a warm-up) and the program's
    peak memory."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "program_peak_bytes": program_peak_bytes(compiled)}


def forward_flops(cfg: C.Cfg, height: int, width: int, upto: int) -> float:
    """Multiply-adds x 2 of the convolutions and connected layers up to ``upto`` for one image."""
    shapes = layer_shapes(cfg, height, width, upto)
    flops, incoming = 0.0, (height, width, cfg.net.channels)
    for spec, shape in zip(cfg.layers[: upto + 1], shapes, strict=True):
        if isinstance(spec, C.Conv):
            flops += 2.0 * spec.size**2 * incoming[2] // spec.groups * spec.filters * shape[0] * shape[1]
        elif isinstance(spec, C.Connected):
            flops += 2.0 * incoming[0] * incoming[1] * incoming[2] * spec.output
        incoming = shape
    return flops


def matmul_rate(dtype: Any, n: int, precision: Any = jax.lax.Precision.HIGHEST) -> float:
    """The device's attainable matmul rate: the best of 10 timed n x n products (the ceiling rows are set against;
    the best, not the median, because the CPU's available throughput varies from moment to moment). f32 at
    HIGHEST precision is true float32, what jaxdream computes by default; GPUs' TF32 is recorded separately."""
    a = jnp.ones((n, n), dtype)
    return 2.0 * n**3 / timed(lambda x: jnp.matmul(x, x, precision=precision), a, runs=10)["min_s"] / 1e9


def vgg_conv(seed: int = 1000) -> DarknetModel:
    """vgg-conv with the golden README's timing weights (He-normal, zero biases)."""
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    return model_from_bytes(cfg, random_weights_bytes(cfg, seed, bias_std=0.0), "vgg-conv")


def _round_fn(model: DarknetModel, config: core.DreamConfig) -> Callable:
    program = core.drawn_round(model, config)
    return lambda params, images: program(params, images, 0, 0, jnp.float32(0.04), jnp.float32(1.0))[0]


def _step_config(iters: int, precision: str) -> core.DreamConfig:
    return core.DreamConfig(layer=LAYER, iters=iters, octaves=1, jitter=False, precision=precision)


def step_case(model: DarknetModel, height: int, width: int, precision: str, iters: int = 5) -> dict[str, Any]:
    images = jnp.full((1, height, width, 3), 0.5, jnp.float32)
    t = timed(_round_fn(model, _step_config(iters, precision)), jax.device_put(model.params), images)
    flops = 2 * forward_flops(model.cfg, height, width, LAYER)
    per_iter = t["median_s"] / iters
    return {"case": f"step {width}x{height} layer {LAYER}", **t, "s_per_iter": per_iter,
            "gflop_per_iter": flops / 1e9, "gflops": flops / per_iter / 1e9}


def eager_case(model: DarknetModel, height: int, width: int, precision: str) -> dict[str, Any]:
    """The same iteration op by op (jit disabled): what compilation buys."""
    images = jnp.full((1, height, width, 3), 0.5, jnp.float32)
    fn = _round_fn(model, _step_config(1, precision))
    params = jax.device_put(model.params)
    times = []
    with jax.disable_jit():
        for _ in range(3):
            start = time.perf_counter()
            jax.block_until_ready(fn(params, images))
            times.append(time.perf_counter() - start)
    flops = 2 * forward_flops(model.cfg, height, width, LAYER)
    median = statistics.median(times)
    return {"case": f"eager step {width}x{height} layer {LAYER}", "compile_s": 0.0, "median_s": median,
            "min_s": min(times), "max_s": max(times), "s_per_iter": median, "gflops": flops / median / 1e9}


def torch_case(height: int, width: int) -> dict[str, Any] | None:
    """PyTorch eager CPU, the same step (VGG convs to layer 10, thresholded L2, input gradient), channels_last."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512]  # Darknet layers 0 .. 10 of vgg-conv
    layers, cin = [], 3
    for item in plan:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [torch.nn.Conv2d(cin, item, 3, padding=1), torch.nn.ReLU()]
            cin = item
    net = torch.nn.Sequential(*layers).to(memory_format=torch.channels_last).eval()
    x = torch.full((1, 3, height, width), 0.5).to(memory_format=torch.channels_last)

    def step() -> None:
        inp = x.clone().requires_grad_(True)
        out = net(inp)
        threshold = out.mean() + out.std(unbiased=False)
        (0.5 * (out * (out > threshold)).pow(2).sum()).backward()

    step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    flops = 2 * forward_flops(cfg, height, width, LAYER)
    median = statistics.median(times)
    return {"case": f"pytorch eager step {width}x{height} layer {LAYER}", "compile_s": 0.0, "median_s": median,
            "min_s": min(times), "max_s": max(times), "s_per_iter": median, "gflops": flops / median / 1e9,
            "torch": torch.__version__}


def round_case(model: DarknetModel, scream: Path | None, iters: int, layer_range: int, rounds: int, rate: float,
               out: Path, precision: str) -> dict[str, Any]:
    """The command end to end: load the image, dream every round, write each round's JPEG."""
    stats = RunStats()
    start = time.perf_counter()
    x = image.load_image(scream) if scream else np.full((448, 352, 3), 0.5, np.float32)

    def write(r: int, frames: np.ndarray) -> None:
        image.save_image(out / f"bench_round_{r:06d}.jpg", frames[0])

    nightmare(model, x, LAYER, rounds=rounds, iters=iters, layer_range=layer_range, rate=rate, on_round=write,
              stats=stats, precision=precision)
    total = time.perf_counter() - start
    flops = drawn_flops(model, core.DreamConfig(layer=LAYER, layer_range=layer_range, iters=iters), rounds,
                        x.shape[0], x.shape[1])
    name = f"round scream {x.shape[1]}x{x.shape[0]}: {rounds} x {iters} iters, range {layer_range}, rate {rate}"
    return {"case": name, "compile_s": stats.compile_seconds, "median_s": total - stats.compile_seconds,
            "run_s": stats.run_seconds, "io_and_host_s": total - stats.compile_seconds - stats.run_seconds,
            "program_peak_bytes": stats.program_peak_bytes, "gflop": flops / 1e9,
            "gflops": flops / stats.run_seconds / 1e9}


def drawn_flops(model: DarknetModel, config: core.DreamConfig, rounds: int, height: int, width: int,
                seed: int = 0) -> float:
    """FLOPs of the iterations a seed's rounds really run: each draws its own layer and octave size."""
    total = 0.0
    for r in range(rounds):
        for layer, octave, *_ in np.asarray(core.draw_schedule(core.round_key(seed, r), config)).tolist():
            total += 2 * forward_flops(model.cfg, *core.octave_size(height, width, octave), layer)
    return total


def batch_case(model: DarknetModel, batch: int, precision: str, iters: int = 3) -> dict[str, Any]:
    images = jnp.full((batch, 224, 224, 3), 0.5, jnp.float32)
    t = timed(_round_fn(model, _step_config(iters, precision)), jax.device_put(model.params), images)
    flops = 2 * forward_flops(model.cfg, 224, 224, LAYER) * batch * iters
    return {"case": f"batch {batch} at 224x224 (vmapped)", **t, "images_per_s": batch * iters / t["median_s"],
            "gflops": flops / t["median_s"] / 1e9}


def lucid_case(tiny: DarknetModel, precision: str, iters: int = 5) -> dict[str, Any]:
    """Class-targeted iterations on Tiny Darknet at 224x224."""
    from jaxdream.dream.lucid_mode import target_vector

    config = core.DreamConfig(layer=tiny.logits_layer, iters=iters, octaves=1, objective="class", gray_pull=0.0,
                              precision=precision)
    program = core.drawn_round(tiny, config)
    target = jnp.asarray(target_vector({9: 1.0}, tiny.num_classes, 100.0))
    fn = lambda params, images: program(params, images, 0, 0, jnp.float32(0.02), target)[0]
    t = timed(fn, jax.device_put(tiny.params), jnp.full((1, 224, 224, 3), 0.5))
    flops = 2 * forward_flops(tiny.cfg, 224, 224, tiny.logits_layer)
    return {"case": "lucid Tiny Darknet 224x224", **t, "iterations_per_s": iters / t["median_s"],
            "gflops": flops * iters / t["median_s"] / 1e9}


def squeezenet_lucid_case(path: Path, precision: str, iters: int = 5) -> dict[str, Any]:
    """Class-targeted iterations on the real SqueezeNet 1.1 (ONNX) at 224x224, beside Tiny Darknet's row."""
    from jaxdream.dream.lucid_mode import target_vector
    from jaxdream.model import load_model

    model = load_model(path, preprocess="caffe")
    config = core.DreamConfig(layer=model.logits_layer, iters=iters, octaves=1, objective="class_mix",
                              gray_pull=0.0, precision=precision)
    program = core.drawn_round(model, config)
    target = jnp.asarray(target_vector({9: 1.0}, 1000, 100.0))
    fn = lambda params, images: program(params, images, 0, 0, jnp.float32(0.02), target)[0]
    t = timed(fn, jax.device_put(model.params), jnp.full((1, 224, 224, 3), 0.5))
    return {"case": "lucid SqueezeNet 1.1 (ONNX) 224x224", **t, "iterations_per_s": iters / t["median_s"]}


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Environment variables set (None: unset) for the block, restored after it."""
    saved = {key: os.environ.get(key) for key in values}

    def put(items: dict[str, str | None]) -> None:
        for key, value in items.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    put(values)
    try:
        yield
    finally:
        put(saved)


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """Smooth random JPEGs of the given (height, width) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        phase = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(xx / 9.0 + phase[0]), np.cos(yy / 7.0 + phase[1]), np.sin((xx + yy) / 11.0 + phase[2])],
                        -1) * 0.4 + 0.5
        path = folder / f"photo{i:03d}.jpg"
        write_atomically(path, image_bytes(Image.fromarray(image.to_uint8(base)), "JPEG", quality=90), "a photo")
        paths.append(path)
    return paths


def pipeline_case(model: DarknetModel, precision: str, scratch: Path, batch_size: int) -> dict[str, Any]:
    """`batch` end to end after the first compile: 32 photos 224x224, layer 10, 2 iterations. Its images/s against
    the compiled program's own time in the same run (decoding, writing and the host loop are the difference)."""
    from jaxdream.batch import Job, run_batch

    files = _photos(scratch / "pipeline", [(224, 224)] * 32)
    job = Job("nightmare", model.name, {"layer": LAYER, "iters": 2, "precision": precision}, 0, None, "jpg")
    run_batch(model, job, files, scratch / "pipeline-first", batch_size)  # compiles
    summary = run_batch(model, job, files, scratch / "pipeline-timed", batch_size)
    program_rate = len(files) / summary.stats.run_seconds
    rate = len(files) / summary.seconds
    return {"case": f"batch end to end: 32 x 224x224, layer {LAYER}, 2 iters, batch {batch_size}",
            "compile_s": summary.stats.compile_seconds, "median_s": summary.seconds,
            "images_per_s": rate, "program_images_per_s": program_rate, "end_to_end_vs_program": rate / program_rate}


def mixed_case(model: DarknetModel, precision: str, scratch: Path) -> dict[str, Any]:
    """24 photos in 6 sizes: one program per size, compiled in a cold run, loaded from the store in a warm one."""
    from jaxdream.batch import Job, run_batch
    from jaxdream.compiled.cache import program_cache
    from jaxdream.compiled.store import DISABLE_ENV

    sizes = [(224, 224), (200, 256), (256, 200), (192, 240), (240, 192), (208, 208)]
    files = _photos(scratch / "mixed", sizes * 4)
    job = Job("nightmare", model.name, {"layer": LAYER, "iters": 2, "precision": precision}, 0, None, "jpg")
    with _environment(**{"JAXDREAM_HOME": str(scratch / "mixed-home"), DISABLE_ENV: None}):
        program_cache().clear()
        cold = run_batch(model, job, files, scratch / "mixed-cold", 4)
        program_cache().clear()  # as a new process would start: only the disk store is warm
        warm = run_batch(model, job, files, scratch / "mixed-warm", 4)
    return {"case": f"mixed sizes: 24 photos in 6 sizes, layer {LAYER}, 2 iters, batch 4",
            "compile_s": cold.stats.compile_seconds, "median_s": cold.seconds,
            "programs_compiled": cold.stats.programs_compiled, "images_per_s": len(files) / cold.seconds,
            "warm_images_per_s": len(files) / warm.seconds, "warm_programs_loaded": warm.stats.programs_loaded,
            "warm_load_s": warm.stats.load_seconds}


def video_case(tiny: DarknetModel, scream: Path | None, scratch: Path, precision: str, frames: int = 12
               ) -> dict[str, Any]:
    """`video` on a 640x360 clip panning across scream.jpg (tiny darknet, layer 9, 5 iterations, 2 octaves, DIS
    flow, blend 0.5), timed after a first run compiled its program: frames/s and the share of each phase."""
    from jaxdream import video

    source = Image.open(scream).convert("RGB") if scream else Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (720, 1280, 3), np.uint8))
    clip = scratch / "clip.mp4"
    with video.Encoder(clip, 640, 360, 12) as encoder:
        for t in range(frames):
            left = t * (source.width // 2) // frames
            encoder.write(np.asarray(source.crop((left, 0, left + source.width // 2, source.height // 2))
                                     .resize((640, 360), Image.BILINEAR)))
        encoder.close()
    options = {"iters": 5, "octaves": 2, "precision": precision}
    video.dream_videos(tiny, [clip], [scratch / "first.mp4"], 9, **options)
    began = time.perf_counter()
    stats = video.dream_videos(tiny, [clip], [scratch / "timed.mp4"], 9, **options).as_dict()
    took = time.perf_counter() - began
    return {"case": f"video 640x360, {frames} frames, tiny darknet layer 9, 5 iters, 2 octaves, DIS flow",
            "median_s": took, "frames_per_s": frames / took,
            **{f"{phase}_share": share for phase, share in stats["share"].items()}}


def startup_case(model: DarknetModel, scream: Path | None, scratch: Path) -> list[dict[str, Any]]:
    """The seed command (`nightmare vgg-conv W scream.jpg 10`) in a fresh process with an empty and then a warm
    program cache, split into import, model load, compile (or cache load), dream and write."""
    import subprocess
    import sys

    from jaxdream.darknet.weights import write_weights

    weights = scratch / "vgg-conv.weights"
    write_weights(weights, model.cfg, model.params)
    photo = scream or _photos(scratch / "startup", [(448, 352)])[0]
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
    import subprocess
    import sys

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
    big = _photos(scratch / "big", [(1500, 2000)])[0]
    common = ["nightmare", "vgg-conv", str(weights), str(big), str(LAYER), "-iters", "2", "--out", str(scratch / "o"),
              "--precision", precision]
    for label, extra in (("tile 256", ["--tile", "256"]), ("untiled", [])):
        r = _measured_cli(common + extra, scratch, f"big-{label.replace(' ', '')}")
        rows.append({"case": f"tiles: 2000x1500 layer {LAYER}, 2 iters, {label}", "compile_s": r["compile_seconds"],
                     "median_s": r["run_seconds"], "peak_rss_mb": r["peak_rss_bytes"] / 2**20,
                     "program_peak_bytes": r["program_peak_bytes"], "wall_s": r["wall_s"]})
    twelve = _photos(scratch / "twelve", [(3024, 4032)])[0]
    r = _measured_cli(["nightmare", "vgg-conv", str(weights), str(twelve), str(LAYER), "-iters", "2", "-octaves", "1",
                       "--out", str(scratch / "o"), "--precision", precision], scratch, "twelve")
    rows.append({"case": f"tiles: 12 MP (4032x3024) layer {LAYER}, 2 iters at full size, planner's choice",
                 "compile_s": r["compile_seconds"], "median_s": r["run_seconds"],
                 "s_per_iteration": r["run_seconds"] / 2, "peak_rss_mb": r["peak_rss_bytes"] / 2**20,
                 "program_peak_bytes": r["program_peak_bytes"], "tile": r.get("tile", 0)})
    x = image.load_image(_photos(scratch / "mid", [(768, 1024)])[0])
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
    files = _photos(scratch / "sizes", sizes * 2)
    with _environment(**{DISABLE_ENV: "1"}):
        for label, tile in (("untiled", None), ("tile 128", 128)):
            options = {"layer": LAYER, "iters": 2, "precision": precision, **({"tile": tile} if tile else {})}
            program_cache().clear()
            summary = run_batch(model, Job("nightmare", model.name, options, 0, None, "jpg"), files,
                                scratch / f"sizes-{label.replace(' ', '')}", 2)
            rows.append({"case": f"tiles: 24 photos in 12 sizes, layer {LAYER}, 2 iters, {label}",
                         "compile_s": summary.stats.compile_seconds, "median_s": summary.seconds,
                         "programs_compiled": summary.stats.programs_compiled,
                         "network_programs": sum(p.name in ("drawn_iterations", "tile_gradient")
                                                 for p in program_cache().info()),
                         "images_per_s": len(files) / summary.seconds})
    return rows


def tiny_darknet(shared: Path | None) -> DarknetModel:
    """The real Tiny Darknet when ../shared is there, else the same architecture with random weights."""
    from jaxdream.model import load_model

    folder = shared / "models" / "tiny-darknet" if shared else None
    if folder and (folder / "tiny.weights").exists():
        return load_model(folder / "tiny.cfg", folder / "tiny.weights")
    cfg = parse_cfg(_tiny_cfg_text(), "tiny")
    return model_from_bytes(cfg, random_weights_bytes(cfg, 0), "tiny")


def _tiny_cfg_text() -> str:
    """Tiny Darknet's layer plan (filters, kernel; 'M' = 2x2 max-pool), for machines without ../shared."""
    plan = [(16, 3), "M", (32, 3), "M", (16, 1), (128, 3), (16, 1), (128, 3), "M", (32, 1), (256, 3), (32, 1),
            (256, 3), "M", (64, 1), (512, 3), (64, 1), (512, 3), (128, 1)]
    parts = ["[net]\nwidth=224\nheight=224\nchannels=3\n"]
    for item in plan:
        if item == "M":
            parts.append("[maxpool]\nsize=2\nstride=2\n")
        else:
            parts.append(f"[convolutional]\nbatch_normalize=1\nfilters={item[0]}\nsize={item[1]}\nstride=1\n"
                         "pad=1\nactivation=leaky\n")
    parts.append("[convolutional]\nfilters=1000\nsize=1\nstride=1\npad=1\nactivation=linear\n")
    parts.append("[avgpool]\n[softmax]\ngroups=1\n")
    return "\n".join(parts)


def peak_memory_bytes(device: jax.Device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if device.platform == "cpu" else None


def run_on(device: jax.Device, cases: tuple[str, ...], shared: Path | None, log: Callable[[str], None],
           precision: str = "f32") -> dict[str, Any]:
    """Every requested case on one device."""
    rows: list[dict[str, Any]] = []
    with jax.default_device(device):
        rates = {"f32_matmul_gflops": matmul_rate(jnp.float32, 4096 if device.platform == "cpu" else 8192)}
        if device.platform == "gpu":
            rates["tf32_matmul_gflops"] = matmul_rate(jnp.float32, 8192, jax.lax.Precision.DEFAULT)
            rates["bf16_matmul_gflops"] = matmul_rate(jnp.bfloat16, 16384, jax.lax.Precision.DEFAULT)
        log(f"{device.device_kind}: f32 matmul {rates['f32_matmul_gflops']:.0f} GFLOP/s")
        model = vgg_conv()
        cpu = device.platform == "cpu"
        if "step" in cases:  # on the CPU, one iteration per call where one takes seconds: the suite stays < 10 min
            rows += [step_case(model, h, w, precision, iters=1 if cpu and h * w > 448 * 352 else 5)
                     for h, w in ((448, 352), (224, 224), (768, 1024))]
        if "eager" in cases:
            rows.append(eager_case(model, 448, 352, precision))
        if "torch" in cases and device.platform == "cpu" and (row := torch_case(448, 352)):
            rows.append(row)
        if "round" in cases:
            scream = shared / "data" / "images" / "scream.jpg" if shared else None
            scream = scream if scream and scream.exists() else None
            with tempfile.TemporaryDirectory() as scratch:  # the rounds' JPEGs are timed, not kept
                ten = round_case(model, scream, 10, 1, 1, 0.04, Path(scratch), precision)
                special = round_case(model, scream, 20, 3, 4, 0.01, Path(scratch), precision)
                single20 = round_case(model, scream, 20, 1, 1, 0.04, Path(scratch), precision)
            single20["ratio_to_10_iters"] = single20["run_s"] / ten["run_s"]
            rows += [ten, single20, special]
        if "batch" in cases:
            batches = (1, 4, 8, 32) if cpu else (1, 4, 8, 32, 128)  # a GPU keeps gaining past 32 (H100: +57 % 8->32)
            results = [batch_case(model, b, precision, iters=2 if cpu else 3) for b in batches]
            one_by_one = results[0]["images_per_s"]
            for row in results:
                row["speedup_vs_one_by_one"] = row["images_per_s"] / one_by_one
            rows += results
        if "lucid" in cases:
            rows.append(lucid_case(tiny_darknet(shared), precision))
            squeezenet = shared / "models" / "squeezenet-1.1-onnx" / "squeezenet1.1_fp16.onnx" if shared else None
            if squeezenet and squeezenet.exists():
                rows.append(squeezenet_lucid_case(squeezenet, precision))
        with tempfile.TemporaryDirectory() as scratch:
            if "pipeline" in cases:
                rows.append(pipeline_case(model, precision, Path(scratch), 8 if cpu else 32))
            if "mixed" in cases:
                rows.append(mixed_case(model, precision, Path(scratch)))
            if "tiles" in cases and cpu:  # fresh processes run on the default device
                rows += tiles_cases(model, Path(scratch), precision)
            if "video" in cases:
                scream = shared / "data" / "images" / "scream.jpg" if shared else None
                rows.append(video_case(tiny_darknet(shared), scream if scream and scream.exists() else None,
                                       Path(scratch), precision))
            if "startup" in cases and cpu:  # a fresh process runs on the default device
                scream = shared / "data" / "images" / "scream.jpg" if shared else None
                rows += startup_case(model, scream if scream and scream.exists() else None, Path(scratch))
        for row in rows:
            log(f"  {row['case']}: {row['median_s'] * 1000:.1f} ms" + (
                f", {row['gflops']:.0f} GFLOP/s" if "gflops" in row else ""))
            if "gflops" in row:
                row["fraction_of_f32_matmul"] = row["gflops"] / rates["f32_matmul_gflops"]
                if "bf16_matmul_gflops" in rates:
                    row["fraction_of_bf16_matmul"] = row["gflops"] / rates["bf16_matmul_gflops"]
    return {"device": device.device_kind, "platform": device.platform, "compute": precision, **rates,
            "peak_memory_bytes": peak_memory_bytes(device), "rows": rows}


def _ratios(results: list[dict[str, Any]]) -> None:
    """Each GPU row against the same case on the CPU; eager and PyTorch rows against the jitted step."""
    cpu = next((r for r in results if r["platform"] == "cpu"), None)
    for result in results:
        jitted = {r["case"]: r for r in result["rows"]}
        for row in result["rows"]:
            if cpu and result is not cpu:
                base = next((r for r in cpu["rows"] if r["case"] == row["case"]), None)
                if base:
                    row["speedup_vs_cpu"] = base["median_s"] / row["median_s"]
            for prefix in ("eager ", "pytorch eager "):
                if row["case"].startswith(prefix) and (twin := jitted.get(row["case"][len(prefix):])):
                    row["jitted_speedup"] = row["s_per_iter"] / twin["s_per_iter"]


def _figure(value: float | None, form: str) -> str:
    return "–" if value is None else form.format(value).replace("%", " %")


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# jaxdream bench — {report['machine']}, jax {report['jax']}", ""]
    for result in report["results"]:
        lines += [f"## {result['device']} ({result['platform']}, compute {result.get('compute', 'f32')})", "",
                  f"measured f32 matmul: {result['f32_matmul_gflops']:.0f} GFLOP/s"
                  + (f"; bf16: {result['bf16_matmul_gflops']:.0f} GFLOP/s" if "bf16_matmul_gflops" in result else "")
                  + (f"; peak memory of the whole run: {result['peak_memory_bytes'] / 2**20:.0f} MB"
                     f" ({'process RSS' if result['platform'] == 'cpu' else 'device allocator'})"
                     if result.get("peak_memory_bytes") else ""),
                  "peak MB per row: the compiled program's arguments, outputs and temporaries (XLA's buffer plan).",
                  "", "| case | compile s | median ms | min ms | max ms | GFLOP/s | of f32 matmul | peak MB | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in result["rows"]:
            notes = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k in (
                "images_per_s", "speedup_vs_one_by_one", "ratio_to_10_iters", "speedup_vs_cpu", "jitted_speedup",
                "iterations_per_s", "io_and_host_s", "program_images_per_s", "end_to_end_vs_program",
                "programs_compiled", "warm_images_per_s", "warm_programs_loaded", "warm_load_s", "import_s",
                "model_load_s", "cache_load_s", "dream_s", "write_s", "over_dream_s", "peak_rss_mb", "s_per_iteration",
                "tile", "untiled_s_per_iteration", "tiled_vs_untiled", "wall_s", "network_programs", "frames_per_s",
                "decode_share", "flow_share", "dream_share", "encode_share"))
            lines.append(
                f"| {row['case']} | {row.get('compile_s', 0):.2f} | {1000 * row['median_s']:.1f} | "
                f"{1000 * row.get('min_s', row['median_s']):.1f} | {1000 * row.get('max_s', row['median_s']):.1f} | "
                f"{_figure(row.get('gflops'), '{:.0f}')} | "
                f"{_figure(row.get('fraction_of_f32_matmul'), '{:.0%}')} | "
                f"{_figure(row.get('program_peak_bytes') and row['program_peak_bytes'] / 2**20, '{:.0f}')} | {notes} |")
        lines.append("")
    lines += ["## Darknet reference rows", "", "| case | seconds |", "|---|---|"]
    lines += [f"| {row['case']} | {row['median_s']:.1f} |" for row in report["reference"]]
    return "\n".join(lines) + "\n"


def bar_chart(report: dict[str, Any], path: Path) -> bool:
    """Achieved GFLOP/s of every row that has one, per device, against that device's measured matmul ceiling (the
    roofline of these compute-bound programs), log axis; needs matplotlib (the ``plot`` extra). False without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    rows = [(r, row) for r in report["results"] for row in r["rows"] if row.get("gflops")]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * max(len(rows), 1)), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, result in enumerate(report["results"]):
        colour = colours[k % len(colours)]
        index = [i for i, (r, _) in enumerate(rows) if r is result]
        ax.barh(index, [rows[i][1]["gflops"] for i in index], color=colour,
                label=f"{result['device']} ({result.get('compute', 'f32')})")
        ax.axvline(result["f32_matmul_gflops"], color=colour, linestyle="--",
                   label=f"{result['device']}: measured f32 matmul, {result['f32_matmul_gflops']:,.0f} GFLOP/s")
    ax.set_yticks(range(len(rows)), [row["case"][:60] for _, row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    values = [row["gflops"] for _, row in rows] + [r["f32_matmul_gflops"] for r in report["results"]]
    ax.set_xlim(10 ** np.floor(np.log10(min(values) / 2)), max(values) * 2)
    ax.set_xlabel("achieved GFLOP/s (log scale)")
    ax.set_title(f"jaxdream bench, jax {report['jax']}, {report['time'][:10]}")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomically(path, buffer.getvalue(), "the chart")
    return True


def run(device: str = "cpu", cases: tuple[str, ...] = CASES, out: Path = Path("benchmarks/out/results.json"),
        shared: Path | None = None, log: Callable[[str], None] = print, precision: str = "f32") -> dict[str, Any]:
    """Run the suite in compute mode ``precision``; writes ``out`` (JSON), the same name with .md (table) and .png
    (chart)."""
    check_precision(precision)
    unknown = set(cases) - set(CASES)
    if unknown:
        from jaxdream.errors import OptionError

        raise OptionError(f"unknown benchmark cases {sorted(unknown)}; valid: {', '.join(CASES)}")
    platforms = {"cpu": ["cpu"], "gpu": ["gpu"], "all": ["cpu", "gpu"]}[device]
    devices = []
    for p in platforms:
        try:
            devices.append(jax.devices(p)[0])
        except RuntimeError:
            if device == "gpu":
                from jaxdream.errors import OptionError

                raise OptionError("--device gpu: JAX sees no GPU here (jaxdream info lists the devices); install "
                                  "the CUDA build with pip install -e \".[cuda]\", or use --device cpu") from None
            log(f"no {p} device here; skipped")
    out.parent.mkdir(parents=True, exist_ok=True)
    from jaxdream.compiled.store import DISABLE_ENV

    with _environment(**{DISABLE_ENV: "1"}):  # compile times are measured, not loaded from an earlier run's store
        results = [run_on(d, cases, shared, log, precision) for d in devices]
    _ratios(results)
    report = {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
              "jax": jax.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results,
              "reference": DARKNET_REFERENCE}
    write_atomically(out, json.dumps(report, indent=2), "the results")
    write_atomically(out.with_suffix(".md"), markdown(report), "the results table")
    if not bar_chart(report, out.with_suffix(".png")):
        log("no chart: matplotlib is not installed (pip install -e \".[plot]\")")
    return report
