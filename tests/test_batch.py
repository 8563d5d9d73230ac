"""Batch dreaming: mixed and broken inputs, kill and resume, several devices, several processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JSON_VALUES, batch_job, photos, process_env
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jaxdream import batch as batching
from jaxdream import manifests
from jaxdream.darknet.model import model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.errors import JaxdreamError, OptionError

CLI = [sys.executable, "-c", "from jaxdream.cli import main; main()"]


def _photo(rng, h, w) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 9.0)], -1) * 0.4 + 0.5
    return (np.clip(base + rng.normal(0, 0.05, (h, w, 3)), 0, 1) * 255).astype(np.uint8)


def make_inputs(folder: Path) -> list[Path]:
    """12 files: 10 readable in many modes and two sizes, one truncated JPEG, one text file posing as PNG."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    sub = folder / "nested"
    sub.mkdir()
    files = []
    for i in range(4):
        path = folder / f"rgb{i}.jpg"
        Image.fromarray(_photo(rng, 48, 64)).save(path, quality=95)
        files.append(path)
    Image.fromarray(_photo(rng, 48, 64)).convert("L").save(folder / "gray.png")
    Image.fromarray(_photo(rng, 48, 64)).convert("RGBA").save(sub / "rgba.png")
    Image.fromarray(_photo(rng, 48, 64)).convert("P").save(sub / "palette.png")
    gray16 = (np.asarray(Image.fromarray(_photo(rng, 48, 64)).convert("L"), np.uint16) * 257)
    Image.fromarray(gray16).save(sub / "deep16.png")
    Image.fromarray(_photo(rng, 48, 64)).convert("CMYK").save(sub / "cmyk.jpg")
    rotated = Image.fromarray(_photo(rng, 64, 48))  # stored 48 wide; EXIF says rotate to 64 x 48
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(folder / "exif.jpg", exif=exif)
    good = (folder / "rgb0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notanimage.png").write_text("not an image")
    return files


@pytest.fixture(scope="module")
def yolo(shared):
    folder = shared / "models" / "yolo-fastest-1.1"
    return [str(folder / "yolo-fastest-1.1.cfg"), "--weights", str(folder / "yolo-fastest-1.1.weights")]


def batch(yolo, inputs, out, *extra, env=None, wait=True):
    args = [*CLI, "batch", "nightmare", yolo[0], *map(str, inputs), "--out", str(out), *yolo[1:], "--layer", "6",
            "--iters", "2", "--octaves", "2", "--batch-size", "2", "--quiet", *extra]
    environment = process_env(**(env or {}))  # the session's warm program store
    if not wait:
        return subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=environment, capture_output=True, text=True, timeout=600)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, yolo):
    root = tmp_path_factory.mktemp("batch")
    make_inputs(root / "in")
    done = batch(yolo, [root / "in"], root / "out")
    return root, done


@pytest.mark.process
def test_mixed_folder_gives_ten_images_and_two_reported_errors(reference):
    root, done = reference
    assert done.returncode == 1, done.stderr
    assert "10 dreamed, 0 already done, 2 failed" in done.stderr
    assert len(outputs(root / "out")) == 10
    records = [json.loads(line) for line in (root / "out" / "manifest.jsonl").read_text().splitlines()]
    errors = {Path(r["input"]).name for r in records if r["status"] == "error"}
    assert errors == {"truncated.jpg", "notanimage.png"}
    assert all(r["options"]["layer"] == 6 and r["seed"] == 0 for r in records)
    exif = next(r for r in records if r["input"].endswith("exif.jpg"))
    with Image.open(root / "out" / exif["outputs"][0]) as im:  # names in the output folder
        assert im.size == (64, 48)  # EXIF orientation applied


@pytest.mark.process
def test_killed_run_resumes_to_identical_outputs(reference, yolo, tmp_path):
    root, _ = reference
    slow = ("--iters", "60")  # batches of ~0.1 s: the kill lands between the first record and the last
    process = batch(yolo, [root / "in"], tmp_path / "killed", *slow, wait=False)
    manifest = tmp_path / "killed" / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = manifest.read_text().splitlines() if manifest.exists() else []
        if any('"done"' in line for line in lines):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(outputs(tmp_path / "killed"))
    assert 0 < partial < 10
    resumed = batch(yolo, [root / "in"], tmp_path / "killed", *slow, "--resume")
    assert resumed.returncode == 1
    assert "already done" in resumed.stderr
    batch(yolo, [root / "in"], tmp_path / "whole", *slow)
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "whole")


@pytest.mark.slow  # a whole-process test (~20-35 s); run with -m slow
@pytest.mark.process
def test_four_devices_give_the_same_images_as_one(reference, yolo, tmp_path):
    root, _ = reference
    done = batch(yolo, [root / "in"], tmp_path, "--batch-size", "4",
                 env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert done.returncode == 1, done.stderr
    one = batch(yolo, [root / "in"], tmp_path / "one", "--batch-size", "4")
    assert one.returncode == 1, one.stderr
    assert len(outputs(tmp_path)) == 10
    assert outputs(tmp_path) == outputs(tmp_path / "one")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a whole-process test (~20-35 s); run with -m slow
@pytest.mark.process
def test_two_processes_cover_every_input_exactly_once(reference, yolo, tmp_path):
    root, _ = reference
    port = _free_port()
    procs = [batch(yolo, [root / "in"], tmp_path, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                   "--process-id", str(i), wait=False) for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], results
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    inputs = sorted(Path(r["input"]).name for r in records)
    assert len(inputs) == 12 and len(set(inputs)) == 12
    assert outputs(tmp_path) == outputs(root / "out")


def test_discover_folders_globs_and_lists(tmp_path):
    from jaxdream.batch import discover
    from jaxdream.errors import OptionError

    files = make_inputs(tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# chosen\n{files[0]}\nin/rgb1.jpg\n")
    assert discover([str(listing)]) == [files[0], files[1]]
    assert len(discover([str(tmp_path / "in" / "rgb*.jpg")])) == 4
    assert len(discover([str(tmp_path / "in")])) == 12
    with pytest.raises(OptionError, match="no such file, folder or matching glob"):
        discover([str(tmp_path / "missing")])
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 40)  # sparse: read whole it would be a MemoryError
    with pytest.raises(OptionError, match=r"huge\.txt: the list file holds 1,099,511,627,776 bytes, more than"):
        discover([str(huge)])


def _small_model(filters: int):
    """A two-conv network of its own architecture (so its programs are compiled fresh in each test)."""
    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.darknet.model import model_from_bytes
    from jaxdream.darknet.weights import random_weights_bytes

    text = (f"[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters={filters}\nsize=3\nstride=1\npad=1\n"
            "activation=leaky\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\n"
            "activation=leaky\n")
    cfg = parse_cfg(text, f"small{filters}")
    return model_from_bytes(cfg, random_weights_bytes(cfg, filters), f"small{filters}")


def _pictures(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    rng = np.random.default_rng(len(sizes))
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_photo(rng, h, w)).save(folder / f"p{i:03d}.png")
    return sorted(folder.glob("*.png"))


def test_a_batch_traces_each_branch_once_per_size_and_compiles_the_next_size_ahead(tmp_path, program_events):
    from jaxdream.batch import Job, run_batch
    from jaxdream.dream import core, engine

    model = _small_model(5)
    files = _pictures(tmp_path / "in", [(24, 32)] * 16)
    job = Job("nightmare", model.name, {"layer": 2, "iters": 2, "octaves": 2}, 0, None, "png")
    rows = engine.drawn_schedule(core.DreamConfig(layer=2, iters=2, octaves=2), 0, 0)
    branches = len({int(octave) for octave in rows[:, 1]})  # the (layer, octave) pairs the round meets
    with program_events() as seen:
        summary = run_batch(model, job, files, tmp_path / "out", batch_size=2)
    assert summary.done == 16 and summary.sizes == 1
    assert len(seen.traces) == len(seen.compiles) == branches  # eight batches, one program per branch
    assert summary.stats.programs_compiled == branches and summary.stats.run_seconds > 0
    mixed = _pictures(tmp_path / "mixed", [(24, 32), (20, 28), (24, 32), (30, 22), (20, 28)])
    exact = Job("nightmare", model.name, {**job.options, "exact_sizes": True}, 0, None, "png")
    with program_events() as seen:
        summary = run_batch(model, exact, mixed, tmp_path / "out-exact", batch_size=2)
    assert summary.done == 5 and summary.sizes == 3 and summary.canvases == 0
    assert len(seen.compiles) == 2 * branches  # 24x32 is already compiled; each new size's branches, once
    with program_events() as seen:  # by default the three sizes share one 30x32 canvas: its branches, once
        summary = run_batch(model, job, mixed, tmp_path / "out-mixed", batch_size=2)
    assert summary.done == 5 and summary.sizes == 3 and summary.canvases == 1
    assert len(seen.compiles) == branches


def test_memory_holds_only_the_batches_in_flight(tmp_path):
    """200 inputs, batch size 4, prefetch 2: decoded images alive at once stay within the pipeline's bound
    (the batches being decoded ahead, the one dreaming, the writer's queue and the one being written)."""
    from jaxdream.batch import Job, run_batch

    model = _small_model(6)
    files = _pictures(tmp_path / "in", [(16, 16)] * 200)
    job = Job("nightmare", model.name, {"layer": 2, "iters": 1, "octaves": 1}, 0, None, "png")
    summary = run_batch(model, job, files, tmp_path / "out", batch_size=4, prefetch=2)
    assert summary.done == 200 and len(list((tmp_path / "out").glob("*.png"))) == 200
    assert 4 <= summary.peak_decoded <= (2 * 2 + 2) * 4


def test_an_image_too_small_for_the_layer_is_its_own_error_and_the_rest_are_dreamed(tmp_path):
    from jaxdream.batch import Job, run_batch
    from jaxdream.manifests import read_records

    model = _small_model(7)
    files = _pictures(tmp_path / "in", [(16, 16), (1, 1), (16, 16)])
    job = Job("nightmare", model.name, {"layer": 2, "iters": 1, "octaves": 2}, 0, None, "png")
    summary = run_batch(model, job, files, tmp_path / "out", batch_size=2)
    assert summary.done == 2 and not summary.ok
    assert [(Path(s).name, "1x1 image is too small" in m) for s, m in summary.errors] == [("p001.png", True)]
    records = {Path(r["input"]).name: r["status"] for r in read_records(tmp_path / "out")}
    assert records == {"p000.png": "done", "p001.png": "error", "p002.png": "done"}


# A hostile or careless user: linked manifests, outputs another run overwrote, hand-edited manifests and lists,
# absurd sizes, linked folders


def test_a_linked_manifest_is_refused_and_its_target_untouched(tmp_path, small):
    victim = tmp_path / "victim.jsonl"
    victim.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(victim)
    with pytest.raises(JaxdreamError, match="not a regular file"):
        batching.run_batch(small, batch_job(small), photos(tmp_path / "in", 2), out)
    assert victim.read_text() == "keep\n"
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").mkdir()
    with pytest.raises(JaxdreamError, match="not a regular file"):
        batching.run_batch(small, batch_job(small), photos(tmp_path / "in", 2), out)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_resume_redoes_outputs_that_another_run_overwrote(tmp_path, small):
    files = photos(tmp_path / "in", 4)
    batching.run_batch(small, batch_job(small, 0), files, tmp_path / "reference")
    out = tmp_path / "out"
    batching.run_batch(small, batch_job(small, 0), files, out)
    batching.run_batch(small, batch_job(small, 1), files, out)  # same names, other seed: overwrites every output
    assert _files(out) != _files(tmp_path / "reference")
    again = batching.run_batch(small, batch_job(small, 0), files, out, resume=True)
    assert again.skipped == 0 and again.done == 4
    assert _files(out) == _files(tmp_path / "reference")
    untouched = batching.run_batch(small, batch_job(small, 0), files, out, resume=True)
    assert untouched.skipped == 4 and untouched.done == 0


def test_resume_redoes_what_other_weights_made(tmp_path, small):
    files = photos(tmp_path / "in", 2)
    batching.run_batch(small, batch_job(small), files, tmp_path / "out")
    other = model_from_bytes(small.cfg, random_weights_bytes(small.cfg, 4), small.name)  # same name, new weights
    again = batching.run_batch(other, batch_job(other), files, tmp_path / "out", resume=True)
    assert again.skipped == 0 and again.done == 2


def test_resume_redoes_an_input_whose_picture_changed(tmp_path, small):
    """Same name, same size, other pixels: the resumed set must be what an uninterrupted run of the new inputs
    gives, not the dream of the old picture."""
    files = photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    batching.run_batch(small, batch_job(small), files, out)
    files[1].write_bytes(files[2].read_bytes())  # the photos share a size
    again = batching.run_batch(small, batch_job(small), files, out, resume=True)
    assert again.skipped == 2 and again.done == 1
    batching.run_batch(small, batch_job(small), files, tmp_path / "reference")
    assert _files(out) == _files(tmp_path / "reference")


def test_resume_from_another_working_directory_skips_what_is_done(tmp_path, small, monkeypatch):
    files = [p.resolve() for p in photos(tmp_path / "in", 3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    batching.run_batch(small, batch_job(small), files, Path("../out"))
    monkeypatch.chdir(tmp_path / "b")
    resumed = batching.run_batch(small, batch_job(small), files, tmp_path / "out", resume=True)
    assert resumed.skipped == 3 and resumed.done == 0


@pytest.mark.parametrize("size", ["0x0", "-5x10", "100000x100000", "axb"])
def test_batch_sizes_are_checked(size):
    with pytest.raises(OptionError, match="--size"):
        batching.parse_size(size)


def test_process_options_are_checked(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "abc")
    with pytest.raises(OptionError, match="JAX_NUM_PROCESSES='abc' is not a whole number"):
        batching.join_processes(None, None, None)
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    with pytest.raises(OptionError, match=r"--process-id 5 must be in 0 \.\. 1"):
        batching.join_processes("127.0.0.1:1", 2, 5)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=40) | JSON_VALUES.map(lambda v: json.dumps(v).encode()), max_size=6))
def test_no_manifest_content_escapes_as_anything_but_our_error(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "manifest.jsonl").write_bytes(b"\n".join(lines))
    manifests.done_inputs(folder, "job")
    list(manifests.read_records(folder))


def test_manifest_records_of_every_wrong_shape_are_passed_over(tmp_path, small):
    files = photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    batching.run_batch(small, batch_job(small), files, out)
    with open(out / "manifest.jsonl", "ab") as handle:
        handle.write(b"\xff\xfe not utf-8\n[1,2,3]\n5\n" + json.dumps({"input": [1], "outputs": "x"}).encode() + b"\n")
        handle.write(json.dumps({"job": batching.run_key(batch_job(small), small), "status": "done",
                                 "input": str(files[0].resolve()),
                                 "outputs": ["../../etc/passwd"], "sha256": ["0"]}).encode() + b"\n")
    resumed = batching.run_batch(small, batch_job(small), files, out, resume=True)
    assert resumed.skipped == 2


def test_a_list_with_a_line_that_is_not_utf8_is_named(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.jpg\n\xff\xfe.jpg\n")
    with pytest.raises(OptionError, match=r"list.txt:2: the line is not UTF-8"):
        batching.discover([str(listing)])


def test_a_glob_through_linked_folders_ends(tmp_path):
    root = tmp_path / "gl"
    (root / "sub").mkdir(parents=True)
    for path in (root / "a.jpg", root / "sub" / "b.jpg"):
        Image.new("RGB", (4, 4)).save(path)
    (root / "s1").symlink_to(".")
    (root / "sub" / "s2").symlink_to("..")
    start = time.monotonic()
    found = batching.discover([str(root / "**" / "*.jpg")])
    assert time.monotonic() - start < 5
    assert sorted(p.name for p in found) == ["a.jpg", "b.jpg"]
