"""Compile once: a second call with the same shapes traces and compiles nothing, in the process and across
processes (the disk store), and a stale or foreign store entry is rebuilt, never used. Counted with jax.monitoring
events, not timed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxdream as jd
from jaxdream.compiled.cache import Program, ProgramCache
from jaxdream.compiled.store import ProgramStore
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.dream.core import DreamConfig
from jaxdream.dream.engine import drawn_schedule
from jaxdream.errors import OptionError
from jaxdream.weights import ARCHITECTURES


def _image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (h, w, 3)).astype(np.float32)


CALLS = {
    "nightmare": lambda m, x: jd.nightmare(m, x, 4, rounds=2, iters=2, octaves=2, zoom=1.1, rotate=0.1),
    "deepdream": lambda m, x: jd.deepdream(m, x, 4, octaves=2, iters=2),
    "reconstruct": lambda m, x: jd.reconstruct(m, x, 5, iters=2),
    "forward": lambda m, x: m.forward(x[None], (2, 4)),
}


@pytest.mark.parametrize("mode", sorted(CALLS))
def test_a_second_call_with_the_same_shapes_traces_and_compiles_nothing(small_vgg, mode, program_events):
    first = CALLS[mode](small_vgg, _image(1))
    with program_events() as seen:
        second = CALLS[mode](small_vgg, _image(2))  # other pixels, same shapes
    assert seen.traces == [] and seen.compiles == []
    assert np.shape(jax_tree_first(first)) == np.shape(jax_tree_first(second))


def jax_tree_first(out):
    return next(iter(out.values())) if isinstance(out, dict) else out


def test_a_second_lucid_call_and_a_reloaded_model_reuse_the_program(shared, program_events):
    folder = shared / "models" / "tiny-darknet"
    tiny = jd.load_model(folder / "tiny.cfg", folder / "tiny.weights")
    x = _image(3, 64, 64)
    jd.lucid(tiny, x, "ostrich", iters=2)
    again = jd.load_model(folder / "tiny.cfg", folder / "tiny.weights")  # the same architecture, a new object
    with program_events() as seen:
        jd.lucid(again, x, "pelican", iters=2, rate=0.05, seed=4)  # another class, rate and seed: arguments only
        again.logits(x[None])
        again.logits(_image(4, 64, 64)[None])
    assert seen.traces.count("<lambda>") == 1 and len(seen.compiles) == 1  # only logits is new
    assert len(jd.program_cache().info()) >= 2


def test_the_cache_is_bounded_and_inspectable(small_vgg):
    cache = ProgramCache(capacity=2, store=None)
    double = Program("double", None, (), lambda: lambda x: 2 * x)
    for n in (3, 4, 5):
        np.testing.assert_array_equal(cache(double, np.ones(n, np.float32)), np.full(n, 2.0))
    held = cache.info()
    assert [h.args for h in held] == ["", ""] and len(held) == 2  # the oldest (n=3) was dropped
    assert all(h.name == "double" and h.source == "compiled" for h in held)
    cache.clear()
    assert cache.info() == []


def test_config_is_keyword_only_and_checked_when_built():
    with pytest.raises(TypeError):
        jd.DreamConfig(10, 1, 20)  # the old positional form
    with pytest.raises(OptionError, match="norm 'std2': use one of std, mean_abs, none"):
        jd.DreamConfig(layer=1, norm="std2")
    with pytest.raises(OptionError, match="--iters -1 must be a whole number of at least 0"):
        jd.DreamConfig(layer=1, iters=-1)
    with pytest.raises(OptionError, match=r"--octaves 1\.7 must be a whole number"):
        jd.DreamConfig(layer=1, octaves=1.7)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXDREAM_NO_CACHE", raising=False)
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    return ProgramStore(tmp_path / "home" / "programs")


def _forward(cache: ProgramCache, model, x: np.ndarray, layer: int) -> np.ndarray:
    program = Program("forward", model, ((layer,), "f32"), lambda: lambda p, im: model.apply(p, im, (layer,))[layer])
    return np.asarray(cache(program, model.params, x))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "other model", "not a program", "empty"])
def test_a_damaged_or_foreign_store_entry_is_rebuilt_not_used(small_vgg, store, damage, program_events, caplog):
    x = _image(5)[None]
    expected = _forward(ProgramCache(store=None), small_vgg, x, 4)
    _forward(ProgramCache(store=store), small_vgg, x, 4)
    jnet_cfg = parse_cfg(ARCHITECTURES["jnet-conv"], "jnet-conv")
    jnet = model_from_bytes(jnet_cfg, random_weights_bytes(jnet_cfg, 6), "jnet-conv")
    _forward(ProgramCache(store=store), jnet, x, 4)
    entries = {e.model: e.path for e in store.entries()}  # 'name (fingerprint)'
    mine, other = (next(path for model, path in entries.items() if m.fingerprint[:12] in model)
                   for m in (small_vgg, jnet))
    data = mine.read_bytes()
    damaged = {"flipped byte": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:], "truncated": data[: len(data) // 2],
               "other model": other.read_bytes(), "not a program": b"hello", "empty": b""}[damage]
    mine.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="jaxdream"), program_events() as seen:
        got = _forward(ProgramCache(store=store), small_vgg, x, 4)
    np.testing.assert_array_equal(got, expected)
    assert len(seen.compiles) == 1  # rebuilt
    assert "rebuilding it" in caplog.text and mine.name in caplog.text
    with program_events() as seen:
        _forward(ProgramCache(store=store), small_vgg, x, 4)  # the rebuilt entry is good again
    assert seen.compiles == []


def test_a_program_stored_by_one_cache_is_loaded_by_another_without_tracing(small_vgg, store, program_events):
    x = _image(6)[None]
    cold = _forward(ProgramCache(store=store), small_vgg, x, 4)
    with program_events() as seen:
        warm = _forward(ProgramCache(store=store), small_vgg, x, 4)
    assert seen.traces == [] and seen.compiles == []
    np.testing.assert_array_equal(warm, cold)


COUNTING_CLI = """
import atexit, json, os, sys, jax
events = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: events.append(event.rsplit("/", 1)[-1]))
record = os.environ["COUNTING_CLI_EVENTS"]
atexit.register(lambda: open(record, "w").write(json.dumps(events)))
sys.argv = ["jaxdream", *sys.argv[1:]]
from jaxdream.cli import main
main()
"""


def _cli(args: list[str], events: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A jaxdream command in a fresh process that records its jax.monitoring events in ``events`` (an absolute path,
    passed apart from the command's own arguments); it runs in that file's folder, so nothing lands in the repo."""
    assert events.is_absolute()
    return subprocess.run([sys.executable, "-c", COUNTING_CLI, *args], env={**env, "COUNTING_CLI_EVENTS": str(events)},
                          cwd=events.parent, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a whole-process test (~20-35 s); run with -m slow
@pytest.mark.process
def test_a_warm_start_in_a_fresh_process_traces_nothing_and_gives_the_same_bytes(shared, tmp_path):
    folder = shared / "models" / "yolo-fastest-1.1"
    env = {k: v for k, v in os.environ.items() if k != "JAXDREAM_NO_CACHE"}
    env["JAXDREAM_HOME"] = str(tmp_path / "home")
    image = tmp_path / "scream.png"
    jd.save_image(image, jd.load_image(shared / "data" / "images" / "scream.jpg")[::4, ::4])
    args = ["nightmare", str(folder / "yolo-fastest-1.1.cfg"), str(folder / "yolo-fastest-1.1.weights"), str(image),
            "20", "-range", "3", "-iters", "3", "-rounds", "2", "-zoom", "0.9", "--format", "png"]
    runs = {}
    for name in ("cold", "warm"):
        done = _cli([*args, "--out", str(tmp_path / name), "--stats", str(tmp_path / f"{name}.json")],
                    tmp_path / f"{name}-events.json", env)
        assert done.returncode == 0, done.stderr
        events = json.loads((tmp_path / f"{name}-events.json").read_text())
        stats = json.loads((tmp_path / f"{name}.json").read_text())
        runs[name] = (events, stats, {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    cold_events, cold_stats, cold_files = runs["cold"]
    warm_events, warm_stats, warm_files = runs["warm"]
    config = DreamConfig(layer=20, layer_range=3, iters=3, octaves=4)
    branches = {(int(layer), int(octave)) for r in (0, 1) for layer, octave in drawn_schedule(config, 0, r)[:, :2]}
    programs = 2 + len(branches)  # the schedule, each branch the two rounds meet, the zoom
    assert cold_events.count("jaxpr_trace_duration") >= programs and cold_stats["programs_compiled"] == programs
    assert "jaxpr_trace_duration" not in warm_events and "backend_compile_duration" not in warm_events
    assert warm_stats["programs_compiled"] == 0 and warm_stats["programs_loaded"] == programs
    assert len(warm_files) == 2 and warm_files == cold_files

    listing = subprocess.run([sys.executable, "-c", "from jaxdream.cli import main; main()", "cache", "info"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert all(name in listing.stdout for name in ("round_schedule", "dream_step", "between_rounds"))
    assert f"{programs} program(s)" in listing.stdout
    cleared = subprocess.run([sys.executable, "-c", "from jaxdream.cli import main; main()", "cache", "clear"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert cleared.returncode == 0 and "MB freed" in cleared.stderr
    assert not list((tmp_path / "home" / "programs").glob("*.program"))


class _Plant:
    """A pickle that creates ``path`` when it is loaded: proof that an entry was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _forge(entry: Path, marker: Path) -> None:
    """Replace a stored entry by one with a consistent header and sha256 whose payload creates ``marker``."""
    import hashlib
    import pickle

    from jaxdream.compiled.store import MAGIC

    payload = pickle.dumps(_Plant(marker))
    header = {"digest": entry.name.split(".")[0], "key": {"name": "forward"}, "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    entry.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)


@pytest.mark.parametrize("how", ["trusted", "world-writable folder", "foreign folder", "foreign entry",
                                 "group-writable entry"])
def test_a_forged_entry_is_unpickled_only_from_a_private_store(small_vgg, store, how, program_events, caplog,
                                                                monkeypatch, tmp_path):
    import jaxdream.compiled.store as store_module

    x = _image(7)[None]
    _forward(ProgramCache(store=store), small_vgg, x, 3)
    (entry,) = [e.path for e in store.entries()]
    assert store.folder.stat().st_mode & 0o777 == 0o700 and entry.stat().st_mode & 0o777 == 0o600  # created private
    marker = tmp_path / "pwned"
    _forge(entry, marker)
    if how == "world-writable folder":
        store.folder.chmod(0o777)
    elif how == "foreign folder":
        real = os.geteuid()
        monkeypatch.setattr(store_module, "current_uid", lambda: real + 4242)
        os.chown(entry, real + 4242, -1)  # the entry is "ours" in that pretence: only the folder is foreign
    elif how == "foreign entry":
        os.chown(entry, os.geteuid() + 4242, -1)  # tests run as root: root may give a file away
    elif how == "group-writable entry":
        entry.chmod(0o620)
    with caplog.at_level(logging.WARNING, logger="jaxdream"), program_events() as seen:
        got = _forward(ProgramCache(store=store), small_vgg, x, 3)
    np.testing.assert_array_equal(got, _forward(ProgramCache(store=None), small_vgg, x, 3))
    assert len(seen.compiles) == 1  # compiled as if absent
    if how == "trusted":  # the payload is live: a store that passes the check does unpickle it (then rebuilds)
        assert marker.exists() and "rebuilding it" in caplog.text
        return
    assert not marker.exists()
    notices = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(notices) == 1, caplog.text  # one line, however many programs the run asks for


def test_a_fifo_named_like_an_entry_hangs_neither_a_dream_nor_cache_info(small_vgg, store, monkeypatch, tmp_path):
    import threading

    from typer.testing import CliRunner

    from jaxdream.cli import app

    x = _image(8)[None]
    _forward(ProgramCache(store=store), small_vgg, x, 2)
    (entry,) = [e.path for e in store.entries()]
    entry.unlink()
    os.mkfifo(entry)
    results = {}

    def dream() -> None:
        results["dream"] = _forward(ProgramCache(store=store), small_vgg, x, 2)
        os.mkfifo(store.folder / f"{'f' * 64}.program")  # the dream replaced the first FIFO; another for info
        results["info"] = CliRunner().invoke(app, ["cache", "info"])

    thread = threading.Thread(target=dream, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "a FIFO entry hung the run"
    assert results["dream"].shape[0] == 1
    assert results["info"].exit_code == 0, results["info"].output
    assert "1 program(s)" in results["info"].output


def test_cache_clear_removes_only_its_own_entries(small_vgg, store, tmp_path):
    from typer.testing import CliRunner

    from jaxdream.cli import app
    from jaxdream.compiled.store import MAGIC

    _forward(ProgramCache(store=store), small_vgg, _image(9)[None], 2)
    (entry,) = [e.path for e in store.entries()]
    outside = tmp_path / "precious.program"
    outside.write_bytes(MAGIC + b"mine")
    strangers = {
        "notes.txt": b"my notes", "model.program": MAGIC + b"a name the store never writes",
        f"{'a' * 64}.program": b"named like an entry, without the magic line",
    }
    for name, data in strangers.items():
        (store.folder / name).write_bytes(data)
    (store.folder / f"{'b' * 64}.program").symlink_to(outside)
    temp = store.folder / f".{'c' * 64}.program.x1y2.tmp"
    temp.write_bytes(MAGIC)  # a killed save's temp file: the store's own
    done = CliRunner().invoke(app, ["cache", "clear"])
    assert done.exit_code == 0, done.output
    assert not entry.exists() and not temp.exists()
    assert sorted(p.name for p in store.folder.iterdir()) == sorted([*strangers, f"{'b' * 64}.program"])
    assert outside.read_bytes() == MAGIC + b"mine"


def test_an_empty_jaxdream_home_means_unset(monkeypatch, tmp_path):
    import platformdirs

    from jaxdream.compiled.store import default_store
    from jaxdream.files import home_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXDREAM_NO_CACHE", raising=False)
    for value in ("", "  "):
        monkeypatch.setenv("JAXDREAM_HOME", value)
        assert home_dir() == Path(platformdirs.user_cache_dir("jaxdream"))
        assert home_dir().is_absolute() and default_store().folder == home_dir() / "programs"
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "h"))
    assert home_dir() == tmp_path / "h"


MULTI_PROCESS = """
import sys
import jax
import numpy as np
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from jaxdream.compiled.cache import Program, ProgramCache
from jaxdream.compiled.store import ProgramStore
cache = ProgramCache(store=ProgramStore(sys.argv[3]))
x = jax.device_put(np.arange(6, dtype=np.float32), jax.local_devices()[0])
out = cache(Program("double", None, (), lambda: lambda v: 2 * v + 1), x)
assert np.array_equal(np.asarray(out), 2 * np.arange(6) + 1)
print(cache.info()[0].source)
"""


@pytest.mark.process
def test_a_multi_process_run_loads_only_programs_compiled_for_its_own_devices(tmp_path):
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    sources = []
    for _ in range(2):  # the second run finds the programs stored by the first
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, "-c", MULTI_PROCESS, f"127.0.0.1:{port}", str(i),
                                   str(tmp_path / "programs")], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        sources.append([out.strip().splitlines()[-1] for out, _ in results])
    assert sources == [["compiled", "compiled"], ["loaded", "loaded"]]


DEFAULT_DEVICE = """
import jax
import numpy as np
from jaxdream.compiled.cache import Program, ProgramCache
cache, double = ProgramCache(store=None), Program("double", None, (), lambda: lambda v: 2 * v)
outs = {}
for device in jax.devices():  # programs compile on worker threads: each for the device its caller chose
    with jax.default_device(device):
        outs[device] = cache(double, np.arange(3, dtype=np.float32))
assert all(out.devices() == {device} for device, out in outs.items()), outs
assert len(cache.info()) == len(jax.devices()) == 2
"""


@pytest.mark.process
def test_programs_compile_for_the_callers_default_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    done = subprocess.run([sys.executable, "-c", DEFAULT_DEVICE], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_programs_own_xla_options_are_used_and_keyed(tmp_path, program_events):
    """The round's schedule compiles at LLVM level 0 (engine.SCHEDULE_OPTIONS): its own entry, the same draws."""
    from jaxdream.dream import core

    config = DreamConfig(layer=3, iters=6, octaves=3)
    cache = ProgramCache(store=ProgramStore(tmp_path))
    plain = Program("round_schedule", None, ("plain",), lambda: core.round_schedule(config))
    quick = Program("round_schedule", None, ("plain",), lambda: core.round_schedule(config),
                    options=(("xla_backend_optimization_level", 0),))
    with program_events() as seen:
        a = np.asarray(cache(plain, np.uint32(5), np.int32(2)))
        b = np.asarray(cache(quick, np.uint32(5), np.int32(2)))
    assert len(seen.compiles) == 2 and len(cache.info()) == 2
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, drawn_schedule(config, 5, 2))
