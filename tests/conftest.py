"""Shared fixtures: ../shared is found through JAXDREAM_SHARED (default ../shared) and tests skip cleanly without it."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from jaxdream.darknet.cfg import Cfg, load_cfg, parse_cfg
from jaxdream.darknet.model import DarknetModel, model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes

ROOT = Path(__file__).resolve().parent.parent
# bf16 tests see the numbers a GPU computes: XLA:CPU has no bf16 convolution, runs it in float32 and by default skips
# rounding its result back to bf16 ("excess precision"). Read when the backend starts, i.e. before any test runs.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_allow_excess_precision=false".strip()
# Compiled programs stay in memory unless a test turns the disk store on (tests/test_program_cache.py): the suite
# never writes into the user's cache, and a test's compile counts do not depend on what an earlier run stored.
os.environ["JAXDREAM_NO_CACHE"] = "1"
# The suite's fresh processes share one warm program store instead: a session-wide JAXDREAM_HOME, a new private
# folder (mkdtemp makes it 0700 and ours, the only kind the store trusts), with the store on for them (process_env).
# A process that must start cold says so: --no-cache, or its own empty JAXDREAM_HOME.
_PROGRAM_HOME = tempfile.mkdtemp(prefix="jaxdream-home-")
atexit.register(shutil.rmtree, _PROGRAM_HOME, ignore_errors=True)
os.environ["JAXDREAM_HOME"] = _PROGRAM_HOME
# Hypothesis keeps its example database (and its other caches) in a temporary folder, not in .hypothesis/ of the repo.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="jaxdream-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", _HYPOTHESIS_HOME)
settings.register_profile("jaxdream", database=DirectoryBasedExampleDatabase(Path(_HYPOTHESIS_HOME) / "examples"))
settings.load_profile("jaxdream")
# The golden README's generated weight files: cfg name -> PCG64 seed.
GOLDEN_SEEDS = {"vgg-conv": 1001, "jnet-conv": 1002, "tiny": 1003}


def process_env(**extra: str) -> dict[str, str]:
    """The environment for a fresh jaxdream process: this one's, with the disk store on (the session's warm
    JAXDREAM_HOME, so it loads what earlier processes compiled), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "JAXDREAM_NO_CACHE"}
    return {**env, **extra}


def cli(monkeypatch, capsys, *args):
    """The command in this process, as `main` runs it: (exit status, stdout, stderr lines)."""
    import signal
    import sys

    from jaxdream.cli import main

    monkeypatch.setattr(sys, "argv", ["jaxdream", *map(str, args)])
    handler = signal.getsignal(signal.SIGINT)
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        signal.signal(signal.SIGINT, handler)
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


class ProgramEvents:
    """Counts of JAX traces and XLA compiles (jax.monitoring events) while a ``with`` block runs."""

    def __init__(self) -> None:
        self.traces: list[str] = []
        self.compiles: list[str] = []

    def _listen(self, event: str, duration: float, **kwargs: object) -> None:
        if event.endswith("jaxpr_trace_duration"):
            self.traces.append(str(kwargs.get("fun_name")))
        elif event.endswith("backend_compile_duration"):
            self.compiles.append(str(kwargs.get("fun_name")))

    def __enter__(self) -> ProgramEvents:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _untracked() -> set[str] | None:
    """The repo's untracked, non-ignored files (``git status --porcelain``), or None where git cannot say."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # not a git checkout (an unpacked sdist)
        return None
    return {line[3:] for line in done.stdout.splitlines() if line.startswith("?? ")}


@pytest.fixture(scope="session", autouse=True)
def no_files_left_in_the_repo():
    """The suite writes under tmp_path (or the system's temp folder), never into the checkout: a run that leaves a
    new untracked, non-ignored file in the repo fails."""
    before = _untracked()
    yield
    after = _untracked()
    if before is not None and after is not None and (left := sorted(after - before)):
        pytest.fail(f"the tests left files in the repo (write them under tmp_path): {', '.join(left)}")


@pytest.fixture
def program_events() -> type[ProgramEvents]:
    """``with program_events() as seen: ...`` then ``seen.traces`` / ``seen.compiles`` (function names)."""
    return ProgramEvents


@pytest.fixture(scope="session")
def shared() -> Path:
    path = Path(os.environ.get("JAXDREAM_SHARED", ROOT.parent / "shared")).resolve()  # tests may change cwd
    if not (path / "golden").is_dir():
        pytest.skip(f"shared data not found at {path}; set JAXDREAM_SHARED to the folder holding golden/ and models/")
    return path


@pytest.fixture(scope="session")
def darknet_cfg(shared: Path):
    def get(name: str) -> Cfg:
        return load_cfg(shared / "darknet" / "cfg" / f"{name}.cfg")

    return get


@pytest.fixture(scope="session")
def golden_model(darknet_cfg):
    """The random-weight models the golden vectors were computed with, regenerated by the README's rule."""
    cache: dict[str, DarknetModel] = {}

    def get(name: str) -> DarknetModel:
        if name not in cache:
            cfg = darknet_cfg(name)
            cache[name] = model_from_bytes(cfg, random_weights_bytes(cfg, GOLDEN_SEEDS[name]), name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def small_vgg() -> DarknetModel:
    """vgg-conv (the built-in architecture) with random weights: real layer shapes, no download."""
    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.weights import ARCHITECTURES

    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    return model_from_bytes(cfg, random_weights_bytes(cfg, 5), "vgg-conv")


@pytest.fixture(scope="session")
def yolo_fastest(shared: Path) -> DarknetModel:
    from jaxdream.model import load_model

    folder = shared / "models" / "yolo-fastest-1.1"
    return load_model(folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights")


@pytest.fixture(scope="session")
def tiny_darknet() -> DarknetModel:
    """The real Tiny Darknet, bundled in the package (the same bytes as ../shared/models/tiny-darknet)."""
    from jaxdream.model import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def mobilenet_dir(shared: Path) -> Path:
    return shared / "models" / "mobilenet-v1-0.25"


@pytest.fixture(scope="session")
def mobilenet(mobilenet_dir: Path):
    """The real Keras MobileNet 0.25 full model (shared/models/SOURCES.md)."""
    from jaxdream.model import load_model

    return load_model(mobilenet_dir / "mobilenet_v1_0.25_224.h5")


@pytest.fixture(scope="session")
def squeezenet_dir(shared: Path) -> Path:
    return shared / "models" / "squeezenet-1.1-onnx"


@pytest.fixture(scope="session")
def squeezenet(squeezenet_dir: Path):
    """The real SqueezeNet 1.1 ONNX export (float16, Caffe preprocessing) with its labels."""
    pytest.importorskip("onnx")
    from jaxdream.model import load_model

    return load_model(squeezenet_dir / "squeezenet1.1_fp16.onnx", preprocess="caffe",
                      labels=squeezenet_dir / "labels.txt")


# A small Darknet model, its files, photos and a batch job, for the tests of hostile or careless use (links, NaN,
# absurd numbers, hand-edited files) spread over the modules' own test files.

SMALL_CFG = """[net]
width=32
height=32
channels=3
[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=6
size=3
stride=1
pad=1
activation=leaky
"""


def random_darknet(cfg_text: str, name: str, seed: int = 0) -> DarknetModel:
    """A Darknet model of ``cfg_text`` with seeded random weights (its own architecture: programs compile fresh)."""
    cfg = parse_cfg(cfg_text, name)
    return model_from_bytes(cfg, random_weights_bytes(cfg, seed), name)


@pytest.fixture(scope="session")
def small():
    cfg = parse_cfg(SMALL_CFG, "hardening")
    return model_from_bytes(cfg, random_weights_bytes(cfg, 3), "hardening")


@pytest.fixture(scope="session")
def small_files(tmp_path_factory, small):
    from jaxdream.darknet.weights import write_weights

    folder = tmp_path_factory.mktemp("small")
    (folder / "small.cfg").write_text(SMALL_CFG)
    write_weights(folder / "small.weights", small.cfg, small.params)
    return folder / "small.cfg", folder / "small.weights"


# Any JSON value, NaN and huge numbers included: what a hand-edited file may hold.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def photos(folder: Path, n: int, h: int = 20, w: int = 24) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return sorted(folder.glob("*.png"))


def batch_job(model, seed: int = 0):
    from jaxdream import batch

    return batch.make_job("nightmare", model.name, {"layer": 2, "iters": 2, "octaves": 2}, seed, None, "png")
