"""The `jaxdream` command as a user runs it: Darknet command lines, file names, errors, no partial output."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
from conftest import cli, process_env
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

CLI = [sys.executable, "-c", "from jaxdream.cli import main; main()"]


def run(*args, cwd=None, env=None):
    """The command in a fresh process, with the session's warm program store (``env`` to start it otherwise)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=env or process_env())


@pytest.fixture(scope="module")
def yolo(shared):
    folder = shared / "models" / "yolo-fastest-1.1"
    return folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights"


@pytest.mark.slow  # a whole-process test (~20-35 s); run with -m slow
@pytest.mark.process
def test_four_round_darknet_command_on_real_weights(shared, yolo, tmp_path):
    from jaxdream.image import load_image

    scream = shared / "data" / "images" / "scream.jpg"
    args = ["nightmare", *yolo, scream, 6, "-rounds", "4", "-iters", "3", "-zoom", "1.05", "-prefix", tmp_path,
            "--stats", tmp_path / "stats.json", "--quiet"]
    env = process_env(JAXDREAM_HOME=str(tmp_path / "home"))  # cold: compile_seconds > 0; the second run is warm
    done = run(*args, env=env)
    assert done.returncode == 0, done.stderr
    names = [tmp_path / f"scream_yolo-fastest-1_6_{r:06d}.jpg" for r in range(4)]  # Darknet's basecfg naming
    assert sorted(tmp_path.glob("*.jpg")) == names
    images = [load_image(n) for n in names]
    source = load_image(scream)
    for i, img in enumerate(images):
        assert img.shape == source.shape
        assert abs(img - source).mean() > 0.005
        if i:
            assert abs(img - images[i - 1]).mean() > 0.002
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["iterations"] == 12 and stats["image_size"] == [352, 448] and stats["compile_seconds"] > 0
    first = names[0].read_bytes()
    again = tmp_path / "again" / "nested"  # created by the command
    assert run(*[again if a == tmp_path else a for a in args], env=env).returncode == 0
    assert (again / names[0].name).read_bytes() == first  # deterministic for a seed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "missing.jpg"}, "no such image file"),
        ({"image": "notimage.jpg"}, "not an image"),
        ({"layer": "999"}, "layer 999 is out of range"),
        ({"layer": "121"}, r"\[yolo\] detection/cost head"),
        ({"extra": ["-rate", "nan"]}, "--rate nan is not a finite number"),
        ({"extra": ["-rate", "-1"]}, "--rate -1.0 must be at least 0"),
        ({"extra": ["-zoom", "0"]}, "--zoom 0.0 must be greater than 0"),
        ({"extra": ["--out", "notimage.jpg/dreams"]}, "notimage.jpg is a file, not a folder"),
    ],
)
def test_bad_input_gives_one_clear_error_and_no_output(shared, yolo, tmp_path, change, message, monkeypatch, capsys):
    (tmp_path / "notimage.jpg").write_text("hello")
    image = change.get("image")
    image = tmp_path / image if image else shared / "data" / "images" / "dog.jpg"
    monkeypatch.chdir(tmp_path)
    code, _, lines = cli(monkeypatch, capsys, "nightmare", *yolo, image, change.get("layer", "6"), "-iters", "1",
                         *change.get("extra", []), "--quiet")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not list(tmp_path.glob("dog_*"))


def test_out_of_memory_becomes_one_line_of_advice():
    import jax
    import jax.numpy as jnp

    from jaxdream import cli

    with pytest.raises(jax.errors.JaxRuntimeError) as caught:  # a real XLA allocation failure: 4 PB
        jax.jit(lambda a: jnp.broadcast_to(a, (2**50,)) * 2)(jnp.float32(1)).block_until_ready()
    message = cli._out_of_memory(caught.value)
    assert message.startswith("out of memory (RESOURCE_EXHAUSTED") and "--batch-size" in message
    assert "\n" not in message
    assert cli._out_of_memory(RuntimeError("RESOURCE_EXHAUSTED but not from XLA")) is None


def test_weights_info_and_convert(shared, tmp_path, monkeypatch, capsys):
    cfg = shared / "models" / "tiny-darknet" / "tiny.cfg"
    out = tmp_path / "tiny.h5"
    weights = shared / "models" / "tiny-darknet" / "tiny.weights"
    code, _, err = cli(monkeypatch, capsys, "weights", "convert", cfg, weights, "-o", out)
    assert code == 0, err
    code, info, err = cli(monkeypatch, capsys, "weights", "info", out, "--height", "64", "--width", "64")
    assert code == 0, err
    # four 2x2 max-pools take 64 to 4
    assert re.search(r"│\s*19 │ convolutional\s*│\s*4 x 4 x 1000 │", info), info
    assert "total parameters: 1,046,488" in info
    _, builtin, _ = cli(monkeypatch, capsys, "weights", "info", "vgg-conv")
    assert "14,714,688" in builtin


@pytest.mark.parametrize(("spec", "tag", "top"), [
    ("ostrich", "ostrich", ["ostrich"]),
    ("ostrich:0.5,pelican:0.5", "ostrich-pelican", ["ostrich", "pelican"]),
])
def test_lucid_writes_an_image_that_classify_calls_its_class(shared, tmp_path, spec, tag, top, monkeypatch, capsys):
    folder = shared / "models" / "tiny-darknet"
    model = [folder / "tiny.cfg", "--weights", folder / "tiny.weights"]
    code, _, err = cli(monkeypatch, capsys, "lucid", model[0], shared / "data" / "images" / "dog.jpg", *model[1:],
                       "--class", spec, "--iters", "20", "--out", tmp_path, "--quiet")
    assert code == 0, err
    written = tmp_path / f"dog_tiny_class-{tag}_000000.jpg"  # the mode in the name
    assert written.exists(), sorted(p.name for p in tmp_path.iterdir())
    code, result, err = cli(monkeypatch, capsys, "classify", model[0], written, *model[1:], "--json", "--top", "3")
    assert code == 0, err
    report = json.loads(result)
    assert report[0]["image"] == str(written)
    assert sorted(row["name"] for row in report[0]["top"][: len(top)]) == top
    assert set(report[0]["top"][0]) == {"index", "name", "prob"}


def test_lucid_refuses_an_unknown_class_before_writing(shared, tmp_path, monkeypatch, capsys):
    folder = shared / "models" / "tiny-darknet"
    code, _, err = cli(monkeypatch, capsys, "lucid", folder / "tiny.cfg", shared / "data" / "images" / "dog.jpg",
                       "--weights", folder / "tiny.weights", "--class", "ostrch", "--out", tmp_path)
    assert code == 1
    assert "closest: 384 (ostrich)" in "\n".join(err)
    assert not list(tmp_path.iterdir())


@pytest.mark.process
def test_ctrl_c_stops_a_long_round_within_two_seconds_and_leaves_no_file(shared, yolo, tmp_path):
    import os
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "JAXDREAM_NO_CACHE"}
    env["JAXDREAM_HOME"] = str(tmp_path / "home")  # the stored program tells the test that dreaming has begun
    process = subprocess.Popen([*CLI, "nightmare", *map(str, yolo), str(shared / "data" / "images" / "dog.jpg"),
                                "20", "-iters", "100000", "--out", str(tmp_path / "out")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "home").rglob("*.program")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "Exception ignored" not in err
    assert list((tmp_path / "out").iterdir()) == []  # no image, no temp file


@pytest.fixture
def little_classifier(tmp_path):
    """A 4-class classifier cfg, its random weights, an image, and the weights with one value of 1e38."""
    import numpy as np

    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.darknet.weights import random_weights_bytes
    from jaxdream.image import save_image

    text = ("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\n"
            "activation=linear\n[avgpool]\n[softmax]\n")
    (tmp_path / "little.cfg").write_text(text)
    data = random_weights_bytes(parse_cfg(text, "little.cfg"), 1)
    (tmp_path / "little.weights").write_bytes(data)
    huge = bytearray(data)
    huge[-4:] = np.array([1e38], "<f4").tobytes()  # the last kernel value
    (tmp_path / "huge.weights").write_bytes(bytes(huge))
    save_image(tmp_path / "in.png", np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32))
    return tmp_path


@pytest.mark.parametrize(("args", "message"), [
    (["--top", "0"], r"^error: --top 0: show at least 1 class"),
    (["--top", "-1"], r"^error: --top -1: show at least 1 class"),
    (["--json", "--weights", "{huge}"], r"^error: little: the class probabilities have NaN or infinite values"),
])
def test_classify_refuses_a_bad_top_and_non_finite_probabilities(monkeypatch, capsys, little_classifier, args,
                                                                 message):
    folder = little_classifier
    args = [a.format(huge=folder / "huge.weights") for a in args]
    weights = [] if "--weights" in args else ["--weights", folder / "little.weights"]
    code, out, err = cli(monkeypatch, capsys, "classify", folder / "little.cfg", folder / "in.png", *weights, *args)
    assert code == 1 and out == "" and len(err) == 1 and re.search(message, err[0]), err


def test_classify_caps_top_at_the_class_count(monkeypatch, capsys, little_classifier):
    folder = little_classifier
    code, out, _ = cli(monkeypatch, capsys, "classify", folder / "little.cfg", folder / "in.png", "--weights",
                         folder / "little.weights", "--json", "--top", "99")
    assert code == 0 and len(json.loads(out)[0]["top"]) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "{cfg}", "{image}", "--weights", "{weights}", "--layers", "0", "--rates", "0.01,,0.02"],
     r"--rates '0\.01,,0\.02': an empty item"),
    (["plan", "{cfg}", "0", "--size", "1x1"], r"the 1x1 image is too small"),
    (["nightmare", "{cfg}", "{weights}", "{image}", "0", "--out", "{tmp}/a", "--prefix", "{tmp}/b"],
     r"--out .*/a and --prefix .*/b both name the output folder"),
])
def test_options_that_make_no_sense_are_one_line(monkeypatch, capsys, little_classifier, args, message):
    folder = little_classifier
    names = {"cfg": folder / "little.cfg", "weights": folder / "little.weights", "image": folder / "in.png",
             "tmp": folder}
    code, _, err = cli(monkeypatch, capsys, *[a.format(**names) for a in args])
    assert code == 1 and len(err) == 1 and err[0].startswith("error:") and re.search(message, err[0]), err
    assert not (folder / "a").exists() and not (folder / "b").exists()


def test_an_unknown_xla_flag_is_one_line_not_an_abort(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XLA_FLAGS", "--xla_bogus_flag=1")  # XLA itself would kill the process (SIGABRT)
    code, _, err = cli(monkeypatch, capsys, "plan", "vgg-conv", "3", "--size", "64x64")
    assert code == 1 and len(err) == 1, err
    assert re.search(r"^error: XLA_FLAGS='--xla_bogus_flag=1': Unknown flag in XLA_FLAGS: --xla_bogus_flag=1; "
                     "remove or correct", err[0]), err


@pytest.mark.process
def test_jax_platforms_naming_a_missing_backend_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("jax_plugins") is not None and any(
            importlib.util.find_spec(f"jax_plugins.{name}") for name in ("xla_cuda12", "xla_cuda13")):
        pytest.skip("CUDA is installed here")
    env = {**__import__("os").environ, "JAX_PLATFORMS": "cuda"}
    done = subprocess.run([*CLI, "plan", "vgg-conv", "3", "--size", "64x64"], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: JAX_PLATFORMS='cuda': JAX cannot start that backend"), lines


# Out of memory, and the numeric options, anything a user can type


def test_xlas_internal_out_of_memory_gets_the_advice():
    from jax.errors import JaxRuntimeError

    from jaxdream.cli import _out_of_memory

    advice = _out_of_memory(JaxRuntimeError("INTERNAL: Failed to allocate: Out of memory allocating 99 bytes"))
    assert advice is not None and "--batch-size" in advice


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
