"""The suite's report: ratios between rows, the Markdown table, the bar chart against the matmul ceiling, and the
three files a run writes (JSON, .md, .png)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxdream.files import write_atomically

# Darknet's published timings for `nightmare vgg-conv.cfg vgg-conv.weights scream.jpg 10` (README of the site).
DARKNET_REFERENCE = [
    {"case": "reference: Darknet CPU, scream command (published)", "median_s": 15 * 60.0, "device": "CPU"},
    {"case": "reference: Darknet Titan X, scream command (published)", "median_s": 7.0, "device": "Titan X"},
    {"case": "reference: Darknet CPU build, 2 cores OpenMP, this machine (golden README)", "median_s": 76.6,
     "device": "2-core Xeon"},
]


def ratios(results: list[dict[str, Any]]) -> None:
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


def write_report(report: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> None:
    """``out`` (the JSON), the same name with .md (the table) and with .png (the chart, where matplotlib is)."""
    write_atomically(out, json.dumps(report, indent=2), "the results")
    write_atomically(out.with_suffix(".md"), markdown(report), "the results table")
    if not bar_chart(report, out.with_suffix(".png")):
        log("no chart: matplotlib is not installed (pip install -e \".[plot]\")")
