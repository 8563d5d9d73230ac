"""What a user sees while jaxdream works: a line about compiling before the compile ends (in a pipe too), counted
progress, and nothing with --quiet."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import jaxdream as jd
from jaxdream import progress
from jaxdream.cli import app
from jaxdream.cli.feedback import Feedback
from jaxdream.image import save_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.process
def test_a_cold_run_in_a_pipe_says_it_is_compiling_before_the_compile_ends(tmp_path):
    command = [sys.executable, "-c", "from jaxdream.cli import main; main()", "nightmare", "tiny", "-",
               str(ROOT / "weights" / "dog.jpg"), "9", "-iters", "2", "-octaves", "1", "--no-cache",
               "--out", str(tmp_path)]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in run.stderr:
        lines.append((time.monotonic(), line.strip()))
    assert run.wait(timeout=300) == 0, lines
    texts = [text for _, text in lines]
    step = "dream step (layer 9 viewed at 768x576) for 768x576"
    first = next(i for i, text in enumerate(texts) if text.startswith(f"compiling {step}"))
    done = next(i for i, text in enumerate(texts) if text.startswith("compiled dream step"))
    assert first < done and lines[done][0] - lines[first][0] > 0.5  # said while compiling, not after
    assert (tmp_path / "dog_tiny_9_000000.jpg").is_file()


def test_quiet_prints_nothing(tmp_path):
    image = tmp_path / "small.png"
    save_image(image, np.full((40, 56, 3), 0.4, np.float32))
    result = CliRunner().invoke(app, ["nightmare", "tiny", "-", str(image), "5", "--iters", "2", "--octaves", "1",
                                      "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert (tmp_path / "small_tiny_5_000000.jpg").is_file()


def test_plain_lines_name_the_compile_and_count_iterations(monkeypatch):
    monkeypatch.setattr("jaxdream.cli.feedback.LINE_SECONDS", 0.0)  # a line per chunk
    out = io.StringIO()
    model = jd.load_model("tiny")
    x = np.full((37, 43, 3), 0.5, np.float32)  # a size no other test compiles
    with Feedback(Console(file=out, force_terminal=False, width=200)):
        jd.nightmare(model, x, layer=3, iters=3, octaves=1, rounds=2)
    text = out.getvalue()
    step = "dream step (layer 3 viewed at 43x37) for 43x37"
    assert text.index(f"compiling {step}") < text.index(f"compiled {step}")
    assert "dreaming: 6/6 iterations" in text


def test_tasks_count_only_their_own_unit():
    seen = []
    with progress.listening(seen.append), progress.task("images", 2, "image"), progress.task("dreaming", 4,
                                                                                              "iteration"):
        progress.advance(3, "iteration")
        progress.advance(1, "image")
        progress.advance(9, "iteration")  # never past the total
    advances = [(e.what, e.done) for e in seen if e.kind == "advance"]
    assert advances == [("dreaming", 3), ("images", 1), ("dreaming", 4)]
    progress.advance(1, "image")  # no task open, no listener: nothing happens
