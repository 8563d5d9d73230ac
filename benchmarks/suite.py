"""The benchmark suite behind `python -m benchmarks` and `jaxdream bench` (from a source checkout).

Compile and steady-state time are measured apart (ahead-of-time compile, a warm-up, then >= 5 timed runs with
block_until_ready; median, min, max). FLOPs are counted analytically from the layer table (jaxdream.timing) and set
against the matmul rate the suite measures on the same device. Baselines in the same run: the same program on the
CPU backend, the eager path (the same math, op by op, without jit), PyTorch eager on the CPU when importable, and
Darknet's published figures as reference rows.
"""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdream.errors import OptionError
from jaxdream.ops import check_precision
from jaxdream.timing import matmul_rate
from jaxdream.weights import SAMPLE_IMAGE

from .cases import (
    batch_case,
    eager_case,
    environment,
    lucid_case,
    mixed_case,
    pipeline_case,
    round_case,
    squeezenet_lucid_case,
    step_case,
    tiny_darknet,
    torch_case,
    vgg_conv,
    video_case,
)
from .first_image import first_image_cases
from .processes import startup_case, tiles_cases
from .quality import quality_cases
from .render_cases import render_cases
from .report import DARKNET_REFERENCE, ratios, write_report
from .shard_cases import shard_cases

CASES = ("step", "round", "batch", "lucid", "eager", "torch", "pipeline", "startup", "mixed", "tiles", "video",
         "first-image", "render", "quality", "shards")


def peak_memory_bytes(device: jax.Device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if device.platform == "cpu" else None


def run_on(device: jax.Device, cases: tuple[str, ...], shared: Path | None, log: Callable[[str], None],
           precision: str = "f32", folder: Path = Path("benchmarks/out")) -> dict[str, Any]:
    """Every requested case on one device (``folder``: where cases keep what they render)."""
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
        if "render" in cases:
            rows += render_cases(tiny_darknet(shared), precision)
        if "quality" in cases:
            if shared is None:
                log("quality: needs the three classifiers of ../shared/models; skipped")
            else:
                rows += quality_cases(shared, folder / device.platform, precision, log)
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
            if "first-image" in cases and cpu:  # fresh processes run on the default device
                rows += first_image_cases(Path(scratch), SAMPLE_IMAGE)
            if "shards" in cases and cpu:  # fresh processes run on the default device
                rows += shard_cases(Path(scratch))
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


def run(device: str = "cpu", cases: tuple[str, ...] = CASES, out: Path = Path("benchmarks/out/results.json"),
        shared: Path | None = None, log: Callable[[str], None] = print, precision: str = "f32") -> dict[str, Any]:
    """Run the suite in compute mode ``precision``; writes ``out`` (JSON), the same name with .md (table) and .png
    (chart)."""
    check_precision(precision)
    unknown = set(cases) - set(CASES)
    if unknown:
        raise OptionError(f"unknown benchmark cases {sorted(unknown)}; valid: {', '.join(CASES)}")
    platforms = {"cpu": ["cpu"], "gpu": ["gpu"], "all": ["cpu", "gpu"]}[device]
    devices = []
    for p in platforms:
        try:
            devices.append(jax.devices(p)[0])
        except RuntimeError:
            if device == "gpu":
                raise OptionError("--device gpu: JAX sees no GPU here (jaxdream info lists the devices); install "
                                  "the CUDA build with pip install -e \".[cuda]\", or use --device cpu") from None
            log(f"no {p} device here; skipped")
    out.parent.mkdir(parents=True, exist_ok=True)
    from jaxdream.compiled.store import DISABLE_ENV

    with environment(**{DISABLE_ENV: "1"}):  # compile times are measured, not loaded from an earlier run's store
        results = [run_on(d, cases, shared, log, precision, out.parent) for d in devices]
    ratios(results)
    report = {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
              "jax": jax.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results,
              "reference": DARKNET_REFERENCE}
    write_report(report, out, log)
    return report


def shared_folder() -> Path | None:
    """The shared data folder ($JAXDREAM_SHARED, default ../shared), None where there is none (stand-ins run)."""
    shared = Path(os.environ.get("JAXDREAM_SHARED", "../shared"))
    return shared if shared.is_dir() else None


def run_command(device: str, cases: str, out: Path, precision: str = "f32",
                log: Callable[[str], None] = print) -> list[Path]:
    """`jaxdream bench`: ``cases`` comma-separated, the shared folder found by itself; returns the files written."""
    if device not in ("cpu", "gpu", "all"):
        raise OptionError(f"--device {device!r}: use cpu, gpu or all")
    run(device, tuple(c.strip() for c in cases.split(",") if c.strip()), out, shared_folder(), log=log,
        precision=precision)
    return [out, out.with_suffix(".md"), out.with_suffix(".png")]
