"""Tiled dreaming: a tile as large as the image is the untiled dream bit for bit, tiles leave no seams, one
gradient program serves every image size, and a dream too large for the memory budget tiles itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import jaxdream as jd
from jaxdream import batch
from jaxdream.dream import RunStats, engine, program_cache, tiles


@pytest.fixture(scope="module")
def scream(shared):
    return jd.load_image(shared / "data" / "images" / "scream.jpg")


def test_starts_cover_every_side_with_the_last_tile_overlapping():
    assert tiles.starts(100, 128) == [0]
    assert tiles.starts(256, 128) == [0, 128]
    assert tiles.starts(300, 128) == [0, 128, 172]
    assert tiles.tile_count(300, 256, 128) == 6


@pytest.mark.parametrize("mode", ["nightmare", "deepdream"])
def test_a_tile_as_large_as_the_image_is_the_untiled_dream(yolo_fastest, scream, mode):
    x = scream[::2, ::2]
    run = {"nightmare": lambda **kw: jd.nightmare(yolo_fastest, x, 20, iters=2, layer_range=3, seed=2, **kw),
           "deepdream": lambda **kw: jd.deepdream(yolo_fastest, x, 20, octaves=2, iters=2, seed=2, **kw)}[mode]
    np.testing.assert_array_equal(run(tile=max(x.shape[:2])), run())


def test_tiles_leave_no_seams(yolo_fastest, scream):
    """20 iterations at full size (one octave) with tiles of 96: the change on the rows and columns where tiles
    would meet without the random roll is within 15 % of the change elsewhere."""
    tile = 96
    out = jd.nightmare(yolo_fastest, scream, 20, iters=20, octaves=1, tile=tile, seed=0)[0, 0]
    change = np.abs(out - scream).mean(axis=2)
    rows = np.zeros(change.shape[0], bool)
    cols = np.zeros(change.shape[1], bool)
    for start in tiles.starts(change.shape[0], tile)[1:]:
        rows[max(start - 1, 0) : start + 1] = True
    for start in tiles.starts(change.shape[1], tile)[1:]:
        cols[max(start - 1, 0) : start + 1] = True
    border = rows[:, None] | cols[None, :]
    assert change.mean() > 0.01  # it dreamed
    assert abs(change[border].mean() / change[~border].mean() - 1) < 0.15


def test_a_folder_of_six_sizes_compiles_one_gradient_program(yolo_fastest, tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(200, 180), (160, 240), (250, 150), (190, 190), (140, 220), (230, 170)]
    (tmp_path / "in").mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / "in" / f"p{i}.png")
    job = batch.make_job("nightmare", yolo_fastest.name, {"layer": 20, "iters": 2, "octaves": 2, "tile": 128}, 0,
                         None, "png")
    before = {id(p.compiled) for p in program_cache().info() if p.name == "tile_gradient"}
    summary = batch.run_batch(yolo_fastest, job, batch.discover([str(tmp_path / "in")]), tmp_path / "out", 2)
    assert summary.done == 6 and summary.sizes == 6
    new = [p for p in program_cache().info() if p.name == "tile_gradient" and id(p.compiled) not in before]
    assert len(new) == 1


def test_a_dream_over_the_memory_budget_tiles_itself(yolo_fastest, scream, caplog):
    stats = RunStats()
    with caplog.at_level(logging.WARNING, logger="jaxdream"):
        out = jd.nightmare(yolo_fastest, scream, 20, iters=1, octaves=1, memory="20M", stats=stats)
    assert stats.extra["tile"] == tiles.DEFAULT_TILE and "tiling: a 352x448 dream" in caplog.text
    assert np.isfinite(out).all() and np.abs(out - scream).mean() > 0
    stats = RunStats()
    jd.nightmare(yolo_fastest, scream, 20, iters=1, octaves=1, stats=stats)  # the default budget holds it
    assert "tile" not in stats.extra


def test_tiles_per_call_follow_the_budget(yolo_fastest):
    config = jd.DreamConfig(layer=20, iters=1)
    roomy, planned = tiles.tiles_per_call(yolo_fastest, config, 128, np.float32(1), 1 << 40)
    assert roomy == tiles.MAX_TILES_PER_CALL["cpu"]
    tight, tight_planned = tiles.tiles_per_call(yolo_fastest, config, 128, np.float32(1), planned // 3)
    assert 1 <= tight < roomy and tight_planned <= planned // 3


def test_plan_needs_no_weights_and_says_what_fits():
    from jaxdream.model import describe_only

    rows = engine.plan(describe_only("vgg-conv"), 10, 600, 800, tile=256, memory="300M")
    untiled, tiled = rows
    assert untiled["how"] == "untiled, batch 1" and tiled["how"].startswith("tiles of 256, ")
    assert untiled["bytes"] > 300 << 20 and not untiled["fits"]
    assert tiled["bytes"] <= 300 << 20 and tiled["fits"]


def test_a_tiled_sweep_runs_every_cell_through_the_tile_program(yolo_fastest, scream):
    from jaxdream import sweep

    x = scream[::2, ::2]
    cells = sweep.sweep(yolo_fastest, x, [20], [0.01, 0.04], [0.5, 1.0], octaves=[1], iters=2, seed=1, tile=96)
    assert len(cells) == 4 and all(np.isfinite(c.image).all() and c.objective.shape == (2,) for c in cells)
    assert cells[0].objective[0] > 0 and not np.array_equal(cells[0].image, cells[3].image)
    same = sweep.sweep(yolo_fastest, x, [20], [0.04], [1.0], octaves=[1], iters=2, seed=1, tile=96)[0]
    np.testing.assert_array_equal(same.image, cells[3].image)  # a cell is the same dream alone or in a grid


@pytest.mark.slow  # a whole-process test (~20-35 s); run with -m slow
@pytest.mark.process
def test_tiles_are_sharded_over_every_local_device(shared, tmp_path):
    """Four (forced) CPU devices share each call's tiles; the dream agrees with one device's to float rounding
    (a device's share of the tiles is a smaller convolution batch, summed in another order)."""
    import os
    import subprocess
    import sys

    from conftest import process_env

    script = (
        "import sys, numpy as np, jax, jaxdream as jd\n"
        "folder = sys.argv[1]\n"
        "m = jd.load_model(folder + '/yolo-fastest-1.1.cfg', folder + '/yolo-fastest-1.1.weights')\n"
        "x = jd.load_image(sys.argv[2])[::2, ::2]\n"
        "np.save(sys.argv[3], jd.nightmare(m, x, 20, iters=2, tile=96, seed=1))\n"
        "print(len(jax.local_devices()))\n"
    )
    outs = []
    for count in (1, 4):
        env = process_env(XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                                    f"--xla_force_host_platform_device_count={count}")
        target = tmp_path / f"{count}.npy"
        done = subprocess.run([sys.executable, "-c", script, str(shared / "models" / "yolo-fastest-1.1"),
                               str(shared / "data" / "images" / "scream.jpg"), str(target)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and done.stdout.split()[-1] == str(count), done.stderr
        outs.append(np.load(target))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_a_tiled_batch_resumes_to_the_same_bytes(yolo_fastest, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i in range(4):
        Image.fromarray((rng.random((150, 200, 3)) * 255).astype(np.uint8)).save(tmp_path / "in" / f"p{i}.png")
    files = batch.discover([str(tmp_path / "in")])
    job = batch.make_job("nightmare", yolo_fastest.name, {"layer": 20, "iters": 2, "tile": 96}, 0, None, "png")
    batch.run_batch(yolo_fastest, job, files, tmp_path / "whole", 2)
    batch.run_batch(yolo_fastest, job, files[:2], tmp_path / "resumed", 2)  # as if stopped after two images
    summary = batch.run_batch(yolo_fastest, job, files, tmp_path / "resumed", 2, resume=True)
    assert summary.skipped == 2 and summary.done == 2
    read = lambda folder: {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    assert read(tmp_path / "resumed") == read(tmp_path / "whole") and len(read(tmp_path / "whole")) == 4


@pytest.mark.parametrize("objective", ["darknet", "l2", "channel", "neuron", "guide"])
def test_every_objective_dreams_in_tiles_over_rounds(yolo_fastest, scream, objective):
    x = scream[::2, ::2]
    frames = jd.nightmare(yolo_fastest, x, 20, iters=1, rounds=2, zoom=1.1, rotate=0.05, tile=96,
                          objective=objective, channel=3, guide=scream[::4, ::4] if objective == "guide" else None)
    assert frames.shape == (2, 1, *x.shape) and np.isfinite(frames).all()
    assert np.abs(frames[0, 0] - x).mean() > 1e-4 and np.abs(frames[1, 0] - frames[0, 0]).mean() > 1e-4
