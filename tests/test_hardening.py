"""A hostile or careless user: links planted in shared folders, hand-edited files, NaN everywhere, absurd numbers.
Every case gets one clear error (a JaxdreamError) or a correct result, and nothing is written outside --out."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import jaxdream as jd
from jaxdream import batch, outputs
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import DarknetModel, model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes, write_weights
from jaxdream.errors import CfgError, ImageError, JaxdreamError, NumericError, OptionError, WeightsError
from jaxdream.model import load_model

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


@pytest.fixture(scope="module")
def small():
    cfg = parse_cfg(SMALL_CFG, "hardening")
    return model_from_bytes(cfg, random_weights_bytes(cfg, 3), "hardening")


@pytest.fixture(scope="module")
def small_files(tmp_path_factory, small):
    folder = tmp_path_factory.mktemp("small")
    (folder / "small.cfg").write_text(SMALL_CFG)
    write_weights(folder / "small.weights", small.cfg, small.params)
    return folder / "small.cfg", folder / "small.weights"


def _photos(folder: Path, n: int, h: int = 20, w: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return sorted(folder.glob("*.png"))


def _job(model, seed: int = 0) -> batch.Job:
    return batch.make_job("nightmare", model.name, {"layer": 2, "iters": 2, "octaves": 2}, seed, None, "png")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


# Security: nothing written outside --out


def test_a_link_planted_at_the_old_temp_name_or_the_output_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "shared"
    out.mkdir()
    (out / f".dream.png.tmp{os.getpid()}").symlink_to(victim)  # the name the writer used to pick
    (out / "dream.png").symlink_to(victim)
    jd.save_image(out / "dream.png", np.full((4, 4, 3), 0.5, np.float32))
    assert victim.read_text() == "precious"
    assert not (out / "dream.png").is_symlink()
    with Image.open(out / "dream.png") as im:
        assert im.size == (4, 4)


def test_a_linked_manifest_is_refused_and_its_target_untouched(tmp_path, small):
    victim = tmp_path / "victim.jsonl"
    victim.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(victim)
    with pytest.raises(JaxdreamError, match="not a regular file"):
        batch.run_batch(small, _job(small), _photos(tmp_path / "in", 2), out)
    assert victim.read_text() == "keep\n"
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").mkdir()
    with pytest.raises(JaxdreamError, match="not a regular file"):
        batch.run_batch(small, _job(small), _photos(tmp_path / "in", 2), out)


# Integrity: resume redoes what another run overwrote, from any working directory


def test_resume_redoes_outputs_that_another_run_overwrote(tmp_path, small):
    files = _photos(tmp_path / "in", 4)
    batch.run_batch(small, _job(small, 0), files, tmp_path / "reference")
    out = tmp_path / "out"
    batch.run_batch(small, _job(small, 0), files, out)
    batch.run_batch(small, _job(small, 1), files, out)  # same names, other seed: overwrites every output
    assert _files(out) != _files(tmp_path / "reference")
    again = batch.run_batch(small, _job(small, 0), files, out, resume=True)
    assert again.skipped == 0 and again.done == 4
    assert _files(out) == _files(tmp_path / "reference")
    untouched = batch.run_batch(small, _job(small, 0), files, out, resume=True)
    assert untouched.skipped == 4 and untouched.done == 0


def test_resume_redoes_what_other_weights_made(tmp_path, small):
    files = _photos(tmp_path / "in", 2)
    batch.run_batch(small, _job(small), files, tmp_path / "out")
    other = model_from_bytes(small.cfg, random_weights_bytes(small.cfg, 4), small.name)  # same name, new weights
    again = batch.run_batch(other, _job(other), files, tmp_path / "out", resume=True)
    assert again.skipped == 0 and again.done == 2


def test_resume_from_another_working_directory_skips_what_is_done(tmp_path, small, monkeypatch):
    files = [p.resolve() for p in _photos(tmp_path / "in", 3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    batch.run_batch(small, _job(small), files, Path("../out"))
    monkeypatch.chdir(tmp_path / "b")
    resumed = batch.run_batch(small, _job(small), files, tmp_path / "out", resume=True)
    assert resumed.skipped == 3 and resumed.done == 0


def test_names_stay_unique_whatever_the_inputs_are_called(tmp_path):
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    digest = hashlib.sha256(str(b.resolve()).encode()).hexdigest()[:8]
    c = tmp_path / "a" / f"x_{digest}.jpg"  # named like the hash the second x.jpg gets
    names = outputs.output_names(sorted([a, b, c], key=lambda p: str(p.resolve())), tmp_path, "m", "10",
                                 outputs.round_endings(2), "jpg")
    every = [n for paths in names.values() for n in paths]
    assert len(every) == len(set(every)) == 6


def test_lucid_with_two_inputs_of_one_name_writes_two_files(tmp_path, shared):
    import subprocess

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        jd.save_image(tmp_path / folder / "dog.png", np.random.default_rng(len(folder)).random((40, 40, 3)))
    folder = shared / "models" / "tiny-darknet"
    done = subprocess.run([sys.executable, "-c", "from jaxdream.cli import main; main()", "lucid",
                           str(folder / "tiny.cfg"), str(tmp_path / "a" / "dog.png"), str(tmp_path / "b" / "dog.png"),
                           "--weights", str(folder / "tiny.weights"), "--class", "ostrich", "--iters", "1",
                           "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 2


# NaN and infinity anywhere


def test_nan_never_becomes_a_black_image(tmp_path, small, small_files):
    with pytest.raises(NumericError, match="NaN or infinite"):
        jd.save_image(tmp_path / "x.png", np.full((4, 4, 3), np.nan, np.float32))
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(OptionError, match="NaN or infinite"):
        jd.nightmare(small, np.full((20, 24, 3), np.nan, np.float32), 2, iters=1)
    broken = {k: {n: a.copy() for n, a in v.items()} for k, v in small.params.items()}
    broken["layer_2"]["kernel"][0, 0, 0, 0] = np.inf
    write_weights(tmp_path / "broken.weights", small.cfg, broken)
    with pytest.raises(WeightsError, match="layer_2/kernel has NaN or infinite"):
        load_model(small_files[0], tmp_path / "broken.weights")


def test_class_weights_that_overflow_are_refused(tiny_darknet):
    with pytest.raises(OptionError, match="class weights are too large"):
        jd.lucid(tiny_darknet, np.full((32, 32, 3), 0.5, np.float32), "ostrich:1e308,pelican:1e308", iters=1)


def test_a_huge_threshold_on_a_flat_image_leaves_it_alone(small):
    flat = np.full((20, 24, 3), 0.5, np.float32)
    out = jd.nightmare(small, flat, 2, iters=2, thresh=1000.0)
    np.testing.assert_array_equal(out[0, 0], flat)


def test_a_float_tiff_loads_with_its_values(tmp_path):
    values = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    loaded = jd.load_image(tmp_path / "f.tif")
    assert loaded.shape == (12, 10, 3)
    np.testing.assert_allclose(loaded[..., 0], np.round(values * 255) / 255, atol=1e-6)


# Settings that must not be silently ignored or changed


def test_settings_that_would_be_ignored_are_refused(tmp_path):
    from jaxdream.sweep import parse_ints

    with pytest.raises(OptionError, match="whole numbers"):
        parse_ints("1.7", "octaves")
    crop = SMALL_CFG.replace("[convolutional]", "[crop]\ncrop_width=64\ncrop_height=64\n[convolutional]", 1)
    with pytest.raises(CfgError, match="a crop must fit inside its input"):
        DarknetModel("c", parse_cfg(crop, "crop.cfg"), {}).describe()
    with pytest.raises(CfgError, match="at most 2147483647"):
        parse_cfg(SMALL_CFG.replace("stride=1", "stride=99999999999999999999999", 1), "stride.cfg")


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((20, 24, 4), np.float32, r"\(H, W, 3\) or \(N, H, W, 3\) RGB"),
    ((20, 24, 1), np.float32, "RGB arrays"),
    ((20, 24, 3), np.uint8, "float arrays with values in"),
])
def test_library_images_of_the_wrong_kind_are_refused(small, shape, dtype, message):
    with pytest.raises(OptionError, match=message):
        jd.nightmare(small, np.zeros(shape, dtype), 2, iters=1)


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8)])
def test_saving_the_wrong_shape_is_refused(tmp_path, shape):
    with pytest.raises(ImageError, match=r"float \(H, W, 3\) RGB"):
        jd.save_image(tmp_path / "x.png", np.zeros(shape, np.float32))


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x: jd.deepdream(m, x, 2, octaves=0), "--octaves 0 must be"),
    (lambda m, x: jd.deepdream(m, x, 2, octaves=-2), "--octaves -2 must be"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, zoom=0.001, rounds=2), "--zoom 0.001 on a 24x20 image"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, zoom=1e6, rounds=2), "--zoom 1000000.0"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, seed=9223372036854775808), "--seed .* from 0 to 4294967295"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, rate=float("inf")), "--rate inf is not a finite number"),
])
def test_absurd_numbers_get_one_clear_error(small, call, message):
    with pytest.raises(OptionError, match=message):
        call(small, np.full((20, 24, 3), 0.5, np.float32))


@pytest.mark.parametrize("size", ["0x0", "-5x10", "100000x100000", "axb"])
def test_batch_sizes_are_checked(size):
    with pytest.raises(OptionError, match="--size"):
        batch.parse_size(size)


def test_an_output_folder_that_cannot_be_made_is_named(tmp_path, small):
    with pytest.raises(OptionError, match="cannot create it"):
        outputs.output_folder(Path("/proc/jaxdream-test/out"))
    with pytest.raises(OptionError, match="cannot create it"):
        batch.run_batch(small, _job(small), _photos(tmp_path / "in", 1), Path("/proc/jaxdream-test/out"))


def test_process_options_are_checked(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "abc")
    with pytest.raises(OptionError, match="JAX_NUM_PROCESSES='abc' is not a whole number"):
        batch.join_processes(None, None, None)
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    with pytest.raises(OptionError, match=r"--process-id 5 must be in 0 \.\. 1"):
        batch.join_processes("127.0.0.1:1", 2, 5)


def test_xlas_internal_out_of_memory_gets_the_advice():
    from jax.errors import JaxRuntimeError

    from jaxdream.cli import _out_of_memory

    advice = _out_of_memory(JaxRuntimeError("INTERNAL: Failed to allocate: Out of memory allocating 99 bytes"))
    assert advice is not None and "--batch-size" in advice


# Hand-edited files


def _keras_file(path: Path, mutate=None) -> Path:
    from test_keras import _small_vgg_weights, _write_full_model

    _write_full_model(path, _small_vgg_weights(np.random.default_rng(0)))
    if mutate:
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            mutate(config)
            f.attrs["model_config"] = json.dumps(config)
    return path


def _set(layer: int, key: str, value):
    def mutate(config):
        config["config"]["layers"][layer]["config"][key] = value

    return mutate


@pytest.mark.parametrize("mutate", [
    lambda c: c["config"].update(layers=["x", "y"]),
    lambda c: c["config"]["layers"][1].update(config=None),
    _set(1, "kernel_size", None),
    _set(0, "batch_input_shape", [None, -5, 0, 3]),
    _set(1, "strides", [0, 0]),
    _set(1, "data_format", "channels_first"),
    lambda c: c["config"].update(layers=[]),
])
def test_a_hand_edited_keras_file_gets_one_error(tmp_path, mutate):
    with pytest.raises(WeightsError, match=str(tmp_path)):
        load_model(_keras_file(tmp_path / "k.h5", mutate))


@pytest.mark.parametrize(("attr", "value"), [
    ("architecture", "not json"), ("architecture", json.dumps({"layers": [{"kind": "Conv2D", "bogus": 1}],
                                                                "input_hw": [32, 32], "preprocessing": "tf"})),
    ("architecture", json.dumps({"layers": [], "input_hw": [32, 32], "preprocessing": "tf"})),
    ("version", "abc"), ("version", -1),
])
def test_a_hand_edited_converted_file_gets_one_error(tmp_path, attr, value):
    from jaxdream import converted

    model = load_model(_keras_file(tmp_path / "k.h5"))
    converted.write_converted(tmp_path / "c.h5", model.to_converted("0" * 64))
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f.attrs[attr] = value
    with pytest.raises(WeightsError, match=r"c\.h5"):
        load_model(tmp_path / "c.h5")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KEYS = ["class_name", "config", "kernel_size", "strides", "filters", "padding", "pool_size", "units", "activation",
        "name", "batch_input_shape", "use_bias", "inbound_nodes", "data_format", "target_shape"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer=st.integers(0, 7), key=st.sampled_from(KEYS), value=JSON_VALUES)
def test_no_keras_config_edit_escapes_as_anything_but_our_error(tmp_path_factory, layer, key, value):
    path = tmp_path_factory.mktemp("fuzz") / "k.h5"

    def mutate(config):
        entry = config["config"]["layers"][layer]
        (entry if key in ("class_name", "config", "inbound_nodes") else entry["config"])[key] = value

    try:
        model = load_model(_keras_file(path, mutate))
        model.describe()
    except JaxdreamError:
        pass


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=40) | JSON_VALUES.map(lambda v: json.dumps(v).encode()), max_size=6))
def test_no_manifest_content_escapes_as_anything_but_our_error(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "manifest.jsonl").write_bytes(b"\n".join(lines))
    batch.Manifest(folder / "manifest.jsonl").done("job")
    list(batch.read_records(folder))


def test_manifest_records_of_every_wrong_shape_are_passed_over(tmp_path, small):
    files = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    batch.run_batch(small, _job(small), files, out)
    with open(out / "manifest.jsonl", "ab") as handle:
        handle.write(b"\xff\xfe not utf-8\n[1,2,3]\n5\n" + json.dumps({"input": [1], "outputs": "x"}).encode() + b"\n")
        handle.write(json.dumps({"job": batch.run_key(_job(small), small), "status": "done",
                                 "input": str(files[0].resolve()),
                                 "outputs": ["../../etc/passwd"], "sha256": ["0"]}).encode() + b"\n")
    resumed = batch.run_batch(small, _job(small), files, out, resume=True)
    assert resumed.skipped == 2


def test_a_list_with_a_line_that_is_not_utf8_is_named(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.jpg\n\xff\xfe.jpg\n")
    with pytest.raises(OptionError, match=r"list.txt:2: the line is not UTF-8"):
        batch.discover([str(listing)])


# Hangs


def test_a_glob_through_linked_folders_ends(tmp_path):
    root = tmp_path / "gl"
    (root / "sub").mkdir(parents=True)
    for path in (root / "a.jpg", root / "sub" / "b.jpg"):
        Image.new("RGB", (4, 4)).save(path)
    (root / "s1").symlink_to(".")
    (root / "sub" / "s2").symlink_to("..")
    start = time.monotonic()
    found = batch.discover([str(root / "**" / "*.jpg")])
    assert time.monotonic() - start < 5
    assert sorted(p.name for p in found) == ["a.jpg", "b.jpg"]


def test_a_silent_weights_server_is_given_up_on_quickly_and_said_so(tmp_path):
    from jaxdream.darknet import zoo
    from jaxdream.errors import FetchError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []
    stop = threading.Event()

    def accept() -> None:  # answers nothing, ever
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    seen: list[tuple[int, int | None]] = []
    start = time.monotonic()
    try:
        with pytest.raises(FetchError, match="2 attempts"):
            zoo.download(f"http://127.0.0.1:{server.getsockname()[1]}/x.weights", tmp_path / "x.weights", (10,),
                         progress=lambda done, total: seen.append((done, total)), retries=1, timeout=1.0)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert time.monotonic() - start < 10
    assert seen and seen[0] == (0, None)


# The command line's numeric options, anything a user can type


NUMBERS = st.sampled_from(["0", "-1", "1", "2", "0.5", "1e308", "-1e308", "nan", "inf", "-inf", "1e-9", "3.5",
                           "99999999999999999999", "abc", ""])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@example(values={"-rounds": "2", "-iters": "1", "-range": "1", "-octaves": "2", "-rate": "0.5", "-thresh": "1",
                 "-zoom": "2", "-rotate": "0.5", "--seed": "1", "--channel": "0"}, layer="2")  # one that dreams
@given(values=st.fixed_dictionaries({name: NUMBERS for name in (
    "-rounds", "-iters", "-range", "-octaves", "-rate", "-thresh", "-zoom", "-rotate", "--seed", "--channel")}),
    layer=st.sampled_from(["-1", "0", "2", "3", "99"]))
def test_no_numeric_option_escapes_as_anything_but_a_clean_exit(tmp_path_factory, small_files, values, layer):
    from jaxdream.cli import main

    out = tmp_path_factory.mktemp("cli")
    image = out / "in.png"
    Image.new("RGB", (24, 20), (120, 80, 40)).save(image)
    chosen = {k: v for k, v in values.items() if k in ("-iters", "-range", "-octaves") or v not in ("", "abc")}
    chosen["-iters"] = chosen["-iters"] if chosen["-iters"] in ("0", "1", "2", "-1", "abc", "nan") else "1"
    argv = ["jaxdream", "nightmare", *map(str, small_files), str(image), layer, "--out", str(out / "o"), "--quiet"]
    argv += [a for k, v in chosen.items() for a in (k, v)]
    previous = signal.getsignal(signal.SIGINT)
    old_argv, sys.argv = sys.argv, argv
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = old_argv
        signal.signal(signal.SIGINT, previous)
    assert code in (0, 1, 2)  # done, one clear error, or the parser's own usage error
