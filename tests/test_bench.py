"""The benchmark suite's bookkeeping: FLOP counts against the golden README's figures, its report files, and how
`python -m benchmarks` and `jaxdream bench` find and refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jaxdream import commands, dream, timing
from jaxdream.cli import app
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.errors import JaxdreamError, OptionError
from jaxdream.weights import ARCHITECTURES

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the source tree, not of the installed package
    sys.path.insert(0, str(ROOT))
from benchmarks import cases, report, suite  # noqa: E402


@pytest.mark.parametrize(("layer", "gflop"), [(9, 58.68), (10, 64.49), (11, 76.12)])
def test_forward_flops_match_the_golden_readme(layer, gflop):
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    assert timing.forward_flops(cfg, 448, 352, layer) / 1e9 == pytest.approx(gflop, abs=0.01)


def test_octave_sizes_cost_what_darknet_counted():
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    costs = [timing.forward_flops(cfg, h, w, 10) / 1e9 for h, w in ((336, 264), (252, 198), (189, 148))]
    assert costs == pytest.approx([36.28, 20.55, 11.58], abs=0.01)


def test_round_flops_follow_the_drawn_octaves():
    model = cases.vgg_conv()
    config = dream.DreamConfig(layer=10, iters=20)
    octaves = [row[1] for r in range(2) for row in np.asarray(dream.draw_schedule(dream.round_key(0, r), config))]
    assert len(set(octaves)) > 1
    per_octave = [64.49, 36.28, 20.55, 11.58]  # forward GFLOP to layer 10 at 448x352 and its octaves (tests above)
    expected = sum(2 * per_octave[k] for k in octaves)
    assert timing.drawn_flops(model, config, 2, 448, 352) / 1e9 == pytest.approx(expected, rel=2e-4)


def test_program_memory_counts_arguments_outputs_and_temporaries():
    """(a @ a.T) @ a must hold the 512 x 512 product between its two matmuls: the program holds at least the
    argument, the output and that temporary."""
    a = np.ones((512, 64), np.float32)
    row = timing.timed(lambda m: (m @ m.T) @ m, a, runs=1)
    assert 2 * a.nbytes + 512 * 512 * 4 <= row["program_peak_bytes"] < 2 * a.nbytes + 3 * 512 * 512 * 4


def test_a_dream_records_its_program_peak(tmp_path):
    model = cases.vgg_conv()
    stats = dream.RunStats()
    x = np.full((40, 48, 3), 0.5, np.float32)
    dream.nightmare(model, x, 4, iters=1, octaves=1, stats=stats)
    used = {k: v for k, v in model.params.items() if int(k.split("_")[1]) <= 4}  # later layers: not arguments
    params = sum(a.nbytes for a in jax.tree_util.tree_leaves(used))
    assert stats.program_peak_bytes >= params + x.nbytes
    assert stats.as_dict()["program_peak_bytes"] == stats.program_peak_bytes


REPORT = {"machine": "x86_64", "jax": "0", "time": "2026-12-03T10:00:00", "reference": report.DARKNET_REFERENCE,
          "results": [
    {"device": "cpu", "platform": "cpu", "compute": "f32", "f32_matmul_gflops": 100.0, "rows": [
        {"case": "step 1x1", "compile_s": 1.0, "median_s": 0.5, "gflops": 50.0, "fraction_of_f32_matmul": 0.5,
         "program_peak_bytes": 3 * 2**20},
        {"case": "round", "compile_s": 1.0, "median_s": 2.0, "ratio_to_10_iters": 1.9}]}]}


def test_reports_are_written(tmp_path):
    text = report.markdown(REPORT)
    assert "| step 1x1 | 1.00 | 500.0 | 500.0 | 500.0 | 50 | 50 % | 3 |  |" in text
    assert "| round | 1.00 | 2000.0 | 2000.0 | 2000.0 | – | – | – | ratio_to_10_iters 1.90 |" in text
    assert "| reference: Darknet CPU, scream command (published) | 900.0 |" in text
    pytest.importorskip("matplotlib")
    out = tmp_path / "run" / "results.json"
    out.parent.mkdir()
    report.write_report(REPORT, out, log=pytest.fail)  # with matplotlib there is nothing to say
    assert json.loads(out.read_text()) == REPORT
    assert out.with_suffix(".md").read_text() == text
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json", "results.md", "results.png"]
    with Image.open(out.with_suffix(".png")) as im:
        pixels = np.asarray(im.convert("RGB"))
    blue = (pixels == (31, 119, 180)).all(-1)  # matplotlib's first colour: the one row that has GFLOP/s
    widths = blue.sum(1)
    assert widths.max() > 0.3 * pixels.shape[1]  # the bar: 50 of a 100 GFLOP/s ceiling on a log axis from 10
    wide = np.flatnonzero(widths > 0.3 * pixels.shape[1])
    assert wide.max() - wide.min() + 1 == len(wide)  # one bar only


def test_without_matplotlib_there_is_no_chart_and_a_note_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert report.bar_chart(REPORT, tmp_path / "chart.png") is False
    assert not (tmp_path / "chart.png").exists()
    notes = []
    report.write_report(REPORT, tmp_path / "results.json", log=notes.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md"]
    assert notes == ['no chart: matplotlib is not installed (pip install -e ".[plot]")']


def test_gpu_bench_without_a_gpu_is_refused(tmp_path):
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    with pytest.raises(OptionError, match="--device gpu: JAX sees no GPU"):
        suite.run("gpu", ("step",), tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_unknown_cases_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(OptionError, match=r"unknown benchmark cases \['nope'\]; valid: step, round"):
        suite.run("cpu", ("step", "nope"), tmp_path / "r.json", log=pytest.fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.process
def test_the_suite_runs_as_a_module_from_the_repository_root(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--cases", "nope", "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "unknown benchmark cases ['nope']" in done.stderr
    assert list(tmp_path.iterdir()) == []
    shown = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0
    for option in ("--device {cpu,gpu,all}", "--cases", "--out", "--precision {f32,tf32,bf16}"):
        assert option in shown.stdout


def test_jaxdream_bench_finds_the_suite_in_the_source_tree(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--cases", "step,nope", "--out", str(tmp_path / "r.json")])
    assert isinstance(result.exception, OptionError)  # raised by benchmarks/suite.py: the suite was found and ran
    assert "unknown benchmark cases ['nope']" in str(result.exception)
    assert sys.modules["benchmarks.suite"].__file__ == str(ROOT / "benchmarks" / "suite.py")
    assert list(tmp_path.iterdir()) == []


def test_jaxdream_bench_from_a_wheel_says_where_the_suite_is(tmp_path, monkeypatch):
    """Installed from a wheel, jaxdream sits in site-packages with no benchmarks/ beside it: refused, nothing run."""
    package = tmp_path / "site-packages" / "jaxdream"
    package.mkdir(parents=True)
    monkeypatch.setattr(commands, "__file__", str(package / "commands.py"))
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "r.json")])
    assert isinstance(result.exception, JaxdreamError)  # main() prints it as one line and exits 1
    message = str(result.exception)
    assert "\n" not in message and "source tree (benchmarks/)" in message
    assert list(tmp_path.iterdir()) == [tmp_path / "site-packages"]
