"""jaxdream throughput suite: `python -m benchmarks.bench [--cases step,round,batch] [--out results.json]`.

Compile and steady-state time are measured apart (AOT compile, then >= 5 timed runs with block_until_ready).
FLOPs are counted analytically from the layer table (2 per multiply-add, convolutions only; one iteration is the
forward plus the input gradient, 2x the forward), and set against a matmul rate the suite measures itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream import dream
from jaxdream.darknet import cfg as C
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.shapes import layer_shapes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.model import Model, model_from_bytes
from jaxdream.weights import ARCHITECTURES

LAYER = 10


def timed(fn, *args, runs: int = 5) -> dict:
    """Compile seconds and steady-state seconds (median/min/max over ``runs``) of jax.jit(fn)(*args)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def forward_flops(cfg: C.Cfg, height: int, width: int, upto: int) -> float:
    shapes = layer_shapes(cfg, height, width, upto)
    flops, channels = 0.0, cfg.net.channels
    for spec, (h, w, c) in zip(cfg.layers[: upto + 1], shapes, strict=True):
        if isinstance(spec, C.Conv):
            flops += 2.0 * spec.size * spec.size * channels // spec.groups * spec.filters * h * w
        channels = c
    return flops


def matmul_rate(dtype, n: int) -> float:
    a = jnp.ones((n, n), dtype)
    t = timed(lambda x: x @ x, a, runs=5)
    return 2.0 * n**3 / t["median_s"] / 1e9


def vgg(seed: int = 1000) -> Model:
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    return model_from_bytes(cfg, random_weights_bytes(cfg, seed, bias_std=0.0), "vgg-conv")


def round_fn(model: Model, config: dream.DreamConfig):
    program = dream.random_round_program(model, config)
    return lambda params, images, key: program(params, images, key, jnp.float32(0.04), jnp.float32(1.0))


def step_case(model: Model, height: int, width: int, iters: int = 5) -> dict:
    config = dream.DreamConfig(LAYER, 1, iters, 1, "std", False)
    images = jnp.full((1, height, width, 3), 0.5, jnp.float32)
    t = timed(round_fn(model, config), jax.device_put(model.params), images, jax.random.key(0))
    flops = 2 * forward_flops(model.cfg, height, width, LAYER)
    per_iter = t["median_s"] / iters
    return {"case": f"step {width}x{height}", **t, "s_per_iter": per_iter, "gflop_per_iter": flops / 1e9,
            "gflops": flops / per_iter / 1e9}


def round_case(model: Model, iters: int, layer_range: int) -> dict:
    config = dream.DreamConfig(LAYER, layer_range, iters, 4, "std", True)
    images = jnp.full((1, 448, 352, 3), 0.5, jnp.float32)
    t = timed(round_fn(model, config), jax.device_put(model.params), images, jax.random.key(0))
    return {"case": f"round scream 448x352 iters={iters} range={layer_range}", **t}


def batch_case(model: Model, batch: int, iters: int = 5) -> dict:
    config = dream.DreamConfig(LAYER, 1, iters, 1, "std", False)
    images = jnp.full((batch, 224, 224, 3), 0.5, jnp.float32)
    t = timed(round_fn(model, config), jax.device_put(model.params), images, jax.random.key(0))
    flops = 2 * forward_flops(model.cfg, 224, 224, LAYER) * batch * iters
    return {"case": f"batch {batch} at 224x224", **t, "images_per_s": batch * iters / t["median_s"],
            "gflops": flops / t["median_s"] / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="step,round,batch")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--sizes", default="448x352,224x224")
    parser.add_argument("--matmul", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/results.json"))
    args = parser.parse_args()
    device = jax.devices()[0]
    rates = {"f32_matmul_gflops": matmul_rate(jnp.float32, args.matmul)}
    if device.platform == "gpu":
        rates["bf16_matmul_gflops"] = matmul_rate(jnp.bfloat16, args.matmul * 2)
    model = vgg()
    rows = []
    cases = args.cases.split(",")
    if "step" in cases:
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            rows.append(step_case(model, h, w))
    if "round" in cases:
        ten, twenty = round_case(model, 10, 1), round_case(model, 20, 3)
        twenty["ratio_to_10_iters"] = twenty["median_s"] / ten["median_s"]
        rows += [ten, twenty]
    if "batch" in cases:
        rows += [batch_case(model, int(b)) for b in args.batches.split(",")]
    for row in rows:
        if "gflops" in row:
            row["fraction_of_f32_matmul"] = row["gflops"] / rates["f32_matmul_gflops"]
    result = {"machine": platform.machine(), "device": device.device_kind, "platform": device.platform,
              "jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
              **rates, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
