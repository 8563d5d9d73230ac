"""The one rule of every command: the files a run reads and the files it writes never meet (issue #21 A)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import batch_job, photos
from PIL import Image
from typer.testing import CliRunner

from jaxdream import batch, outputs
from jaxdream.cli import app
from jaxdream.errors import OptionError
from jaxdream.files import write_report
from jaxdream.outputs import check_io, check_report_path


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def tiny(shared, tmp_path):
    """tiny.cfg, tiny.weights and dog.jpg copied into tmp_path/in; OUT is tmp_path/out (made)."""
    source = tmp_path / "in"
    source.mkdir()
    for path in (shared / "models" / "tiny-darknet" / "tiny.cfg", shared / "models" / "tiny-darknet" / "tiny.weights",
                 shared / "data" / "images" / "dog.jpg"):
        shutil.copy(path, source / path.name)
    (tmp_path / "out").mkdir()
    return source, tmp_path / "out"


def _refused(args: list[str], match: str, *folders: Path) -> None:
    before = {folder: _digests(folder) for folder in folders}
    done = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(done.exception, OptionError), (done.output, done.exception)
    assert len(str(done.exception).splitlines()) == 1 and match in str(done.exception), done.exception
    assert {folder: _digests(folder) for folder in folders} == before  # every input byte-identical, nothing written


def test_an_output_never_replaces_the_guide(tiny):
    source, out = tiny
    guide = out / "dog_tiny_9_000000.jpg"
    shutil.copy(source / "dog.jpg", guide)  # an earlier run's output, now the guide
    _refused(["nightmare", source / "tiny.cfg", source / "tiny.weights", source / "dog.jpg", "9", "--objective",
              "guide", "--guide", guide, "--out", out], "is an input of this run (--guide", source, out)
    shutil.copy(guide, out / "dog_tiny_9_deepdream.jpg")
    _refused(["deepdream", source / "tiny.cfg", source / "tiny.weights", source / "dog.jpg", "9", "--objective",
              "guide", "--guide", out / "dog_tiny_9_deepdream.jpg", "--out", out], "is an input of this run (--guide",
             source, out)


def test_an_output_never_replaces_the_weights(tiny):
    source, out = tiny
    weights = out / "dog_tiny_9_000000.jpg"
    shutil.copy(source / "tiny.weights", weights)
    _refused(["nightmare", source / "tiny.cfg", weights, source / "dog.jpg", "9", "--out", out],
             "is an input of this run (WEIGHTS", source, out)
    linked = out / "dog_tiny_9_000001.jpg"  # through a link to the weights: the same file
    linked.symlink_to(source / "tiny.weights")
    _refused(["nightmare", source / "tiny.cfg", source / "tiny.weights", source / "dog.jpg", "9", "--rounds", "2",
              "--out", out], "is an input of this run (WEIGHTS", source, out)


def test_stats_never_replace_an_output_or_a_link(tiny, tmp_path):
    source, out = tiny
    args = ["nightmare", source / "tiny.cfg", source / "tiny.weights", source / "dog.jpg", "9", "--out", out]
    _refused([*args, "--stats", out / "dog_tiny_9_000000.jpg"], "two outputs of this run", source, out)
    target = tmp_path / "kept.json"
    target.write_text("keep me")
    (out / "stats.json").symlink_to(target)
    _refused([*args, "--stats", out / "stats.json"], "is a symbolic link", source, out, tmp_path / "in")
    assert (out / "stats.json").is_symlink() and target.read_text() == "keep me"
    _refused(["lucid", source / "tiny.cfg", source / "dog.jpg", "--weights", source / "tiny.weights", "--class",
              "9", "--out", out, "--stats", source / "tiny.cfg"], "is an input of this run", source, out)


def test_weights_convert_and_sweep_never_replace_an_input(tiny):
    source, out = tiny
    _refused(["weights", "convert", source / "tiny.cfg", source / "tiny.weights", "-o", source / "tiny.weights"],
             "is an input of this run (WEIGHTS", source)
    shutil.copy(source / "dog.jpg", out / "pic_sweep.png")
    (source / "pic.png").symlink_to(out / "pic_sweep.png")  # the image, through a link, is the sheet's name
    _refused(["sweep", source / "tiny.cfg", source / "pic.png", "--weights", source / "tiny.weights", "--layers",
              "9", "--out", out], "is an input of this run (IMAGE", source, out)


def test_check_io_is_one_rule_for_links_hard_links_folders_and_streams(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    os.link(image, tmp_path / "hard.jpg")
    (tmp_path / "soft.jpg").symlink_to(image)
    for target in ("a.jpg", "hard.jpg", "soft.jpg", "./sub/../a.jpg"):
        with pytest.raises(OptionError, match="is an input of this run"):
            check_io({"IMAGE": image}, {"output": tmp_path / target})
    with pytest.raises(OptionError, match="two outputs"):
        check_io({}, {"output": [tmp_path / "b.jpg"], "--stats": tmp_path / "b.jpg"})
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(OptionError, match="non-file"):
        check_io({}, {"output": tmp_path / "folder.jpg"})
    with pytest.raises(OptionError, match="lies in"):
        check_io({"VIDEO": tmp_path / ".o.mp4.frames" / "in.mp4"}, {"output": tmp_path / "o.mp4"},
                 trees={"frame store": tmp_path / ".o.mp4.frames"})
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "to-pipe").symlink_to(fifo)
    with pytest.raises(OptionError, match="device or FIFO"):
        check_io({}, {"output": fifo})
    assert check_report_path(tmp_path / "to-pipe", [image]) == tmp_path / "to-pipe"  # a stream: written through
    check_io({"IMAGE": image}, {"output": tmp_path / "new.jpg", "--stats": None, "--guide": "-"})


def test_a_report_is_written_through_a_stream_never_replacing_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"
    link.symlink_to(fifo)  # like /dev/stdout -> /proc/self/fd/1 -> a pipe
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_report(link, json.dumps({"ok": 1}), "the --stats report")
    reader.join(timeout=30)
    assert got and json.loads(got[0]) == {"ok": 1}
    assert link.is_symlink() and fifo.is_fifo()


def _small_model():
    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.darknet.model import model_from_bytes
    from jaxdream.darknet.weights import random_weights_bytes

    text = ("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\n"
            "activation=leaky\n")
    cfg = parse_cfg(text, "mini")
    return model_from_bytes(cfg, random_weights_bytes(cfg, 3), "mini")


@pytest.mark.parametrize("inside", ["out below the inputs", "out is the input folder"])
def test_a_batch_run_twice_never_dreams_its_own_outputs(tmp_path, inside):
    from jaxdream.batch import Job, discover, run_batch

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(photos / f"{name}.png")
    out = photos / "dreams" if inside == "out below the inputs" else photos
    model = _small_model()
    job = Job("nightmare", model.name, {"layer": 0, "iters": 1, "octaves": 1}, 0, None, "png")
    for _ in range(2):
        files = discover([str(photos)], out)
        assert sorted(p.name for p in files) == ["a.png", "b.png"]
        assert run_batch(model, job, files, out, batch_size=2).done == 2
    assert sorted(p.name for p in out.glob("*.png") if "mini" in p.name) == ["a_mini_0_000000.png",
                                                                            "b_mini_0_000000.png"]
    other = tmp_path / "other-out"  # another --out: a folder holding a manifest is still no input folder
    assert sorted(p.name for p in discover([str(photos)], other)) == ["a.png", "b.png"]
    with pytest.raises(OptionError, match="only outputs of earlier runs"):
        discover([str(out / "a_mini_0_000000.png")], other)


# Names and folders, whatever the inputs are called


def test_names_stay_unique_whatever_the_inputs_are_called(tmp_path):
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    digest = hashlib.sha256(str(b.resolve()).encode()).hexdigest()[:8]
    c = tmp_path / "a" / f"x_{digest}.jpg"  # named like the hash the second x.jpg gets
    names = outputs.output_names(sorted([a, b, c], key=lambda p: str(p.resolve())), tmp_path, "m", "10",
                                 outputs.round_endings(2), "jpg")
    every = [n for paths in names.values() for n in paths]
    assert len(every) == len(set(every)) == 6


def test_an_output_folder_that_cannot_be_made_is_named(tmp_path, small):
    with pytest.raises(OptionError, match="cannot create it"):
        outputs.output_folder(Path("/proc/jaxdream-test/out"))
    with pytest.raises(OptionError, match="cannot create it"):
        batch.run_batch(small, batch_job(small), photos(tmp_path / "in", 1), Path("/proc/jaxdream-test/out"))


def test_stats_to_dev_stdout_redirected_to_a_file_is_written_through(capfd):
    """`--stats /dev/stdout > s.json`: /dev/stdout is then a link to a file, but it is the stream the user named."""
    from jaxdream.files import write_report
    from jaxdream.outputs import check_io

    check_io({}, {"--stats": Path("/dev/stdout")}, ["--stats"])
    write_report("/dev/stdout", '{"a": 1}', "the --stats report")
    assert capfd.readouterr().out == '{"a": 1}\n'
