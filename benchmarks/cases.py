"""The benchmark cases that run in this process: one compiled step, the eager and PyTorch baselines, the command
end to end, vmapped batches, class-targeted iterations, the batch pipeline, mixed sizes and video; and the models
they run (vgg-conv with the golden README's timing weights, Tiny Darknet)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxdream import image
from jaxdream.compiled.stats import RunStats
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import DarknetModel, model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.dream import core, engine
from jaxdream.dream.nightmare_mode import nightmare
from jaxdream.files import image_bytes, write_atomically
from jaxdream.timing import drawn_flops, forward_flops
from jaxdream.weights import ARCHITECTURES

LAYER = 10


def vgg_conv(seed: int = 1000) -> DarknetModel:
    """vgg-conv with the golden README's timing weights (He-normal, zero biases)."""
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    return model_from_bytes(cfg, random_weights_bytes(cfg, seed, bias_std=0.0), "vgg-conv")


def timed_round(model: Any, config: core.DreamConfig, images: Any, rate: float, aux: Any,
                runs: int = 5) -> dict[str, Any]:
    """A round as the engine runs it (each iteration's branch program dispatched from the host): the first call's
    compile (or store load) seconds, then steady-state seconds (median/min/max over ``runs``) and the largest
    branch program's peak memory."""
    params, schedule, rates = jax.device_put(model.params), engine.drawn_schedule(config, 0, 0), config.step_rates(rate)
    first = RunStats()
    engine.run_round(model, config, params, images, schedule, rates, aux, first)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(engine.run_round(model, config, params, images, schedule, rates, aux, RunStats())[0])
        times.append(time.perf_counter() - start)
    return {"compile_s": first.compile_seconds + first.load_seconds, "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "program_peak_bytes": first.program_peak_bytes}


def _step_config(iters: int, precision: str) -> core.DreamConfig:
    return core.DreamConfig(layer=LAYER, iters=iters, octaves=1, jitter=False, precision=precision)


def step_case(model: DarknetModel, height: int, width: int, precision: str, iters: int = 5) -> dict[str, Any]:
    images = jnp.full((1, height, width, 3), 0.5, jnp.float32)
    t = timed_round(model, _step_config(iters, precision), images, 0.04, np.float32(1.0))
    flops = 2 * forward_flops(model.cfg, height, width, LAYER)
    per_iter = t["median_s"] / iters
    return {"case": f"step {width}x{height} layer {LAYER}", **t, "s_per_iter": per_iter,
            "gflop_per_iter": flops / 1e9, "gflops": flops / per_iter / 1e9}


def eager_case(model: DarknetModel, height: int, width: int, precision: str) -> dict[str, Any]:
    """The same iteration op by op (jit disabled): what compilation buys."""
    images = jnp.full((1, height, width, 3), 0.5, jnp.float32)
    config = _step_config(1, precision)
    step = core.branch_step(model, config.step, LAYER, (height, width))
    row, rates = np.zeros(5, np.int32), np.full(1, 0.04, np.float32)
    fn = lambda params, images: step(params, images, row, rates, np.float32(1.0))[0]
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


def batch_case(model: DarknetModel, batch: int, precision: str, iters: int = 3) -> dict[str, Any]:
    images = jnp.full((batch, 224, 224, 3), 0.5, jnp.float32)
    t = timed_round(model, _step_config(iters, precision), images, 0.04, np.float32(1.0))
    flops = 2 * forward_flops(model.cfg, 224, 224, LAYER) * batch * iters
    return {"case": f"batch {batch} at 224x224 (vmapped)", **t, "images_per_s": batch * iters / t["median_s"],
            "gflops": flops / t["median_s"] / 1e9}


def lucid_case(tiny: DarknetModel, precision: str, iters: int = 5) -> dict[str, Any]:
    """Class-targeted iterations on Tiny Darknet at 224x224."""
    from jaxdream.dream.lucid_mode import target_vector

    config = core.DreamConfig(layer=tiny.logits_layer, iters=iters, octaves=1, objective="class", gray_pull=0.0,
                              precision=precision)
    target = target_vector({9: 1.0}, tiny.num_classes, 100.0)
    t = timed_round(tiny, config, jnp.full((1, 224, 224, 3), 0.5), 0.02, target)
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
    target = target_vector({9: 1.0}, 1000, 100.0)
    t = timed_round(model, config, jnp.full((1, 224, 224, 3), 0.5), 0.02, target)
    return {"case": "lucid SqueezeNet 1.1 (ONNX) 224x224", **t, "iterations_per_s": iters / t["median_s"]}


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
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


def photos(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
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

    files = photos(scratch / "pipeline", [(224, 224)] * 32)
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
    files = photos(scratch / "mixed", sizes * 4)
    job = Job("nightmare", model.name, {"layer": LAYER, "iters": 2, "precision": precision}, 0, None, "jpg")
    with environment(**{"JAXDREAM_HOME": str(scratch / "mixed-home"), DISABLE_ENV: None}):
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
