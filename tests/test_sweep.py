"""Sweeps: a grid of rates x thresholds is one batch through each branch program, and each cell equals a single
run."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

import jaxdream as jd
from jaxdream import sweep
from jaxdream.dream import core, engine


@pytest.fixture(scope="module")
def yolo(yolo_fastest):
    return yolo_fastest


@pytest.fixture(scope="module")
def scream(shared):
    return jd.load_image(shared / "data" / "images" / "scream.jpg")[::4, ::4].copy()


def _branches(layer: int, seed: int) -> set[tuple[int, int]]:
    """The (layer, octave) pairs a sweep cell's round meets (its schedule, drawn as every run draws it)."""
    rows = engine.drawn_schedule(core.DreamConfig(layer=layer, iters=3, octaves=2), seed, 0)
    return {(int(layer), int(octave)) for layer, octave in rows[:, :2]}


def _steps(seen) -> int:
    return sum(name == "jit(dream_step)" for name in seen.compiles)


def test_a_grid_of_three_rates_by_two_thresholds_compiles_each_branch_once(yolo, scream, program_events):
    with program_events() as seen:
        cells = sweep.sweep(yolo, scream, [6], [0.01, 0.02, 0.04], [0.5, 1.0], octaves=[2], iters=3, seed=3)
    assert len(cells) == 6
    assert _steps(seen) == len(_branches(6, 3))  # the whole 3 x 2 grid is one batch through each branch
    with program_events() as seen:
        cells = sweep.sweep(yolo, scream, [6, 5], [0.01, 0.02, 0.04], [0.5, 1.0], octaves=[2], iters=3, seed=9)
    assert len(cells) == 12
    assert _steps(seen) == len((_branches(6, 9) | _branches(5, 9)) - _branches(6, 3))  # layer 6's are reused
    with program_events() as seen:
        sweep.sweep(yolo, scream, [6, 5], [0.02, 0.03, 0.05], [0.1, 2.0], octaves=[2], iters=3, seed=9)
    assert seen.traces == [] and seen.compiles == []  # other rates and thresholds: the same programs


def test_each_cell_equals_a_single_nightmare_run(yolo, scream):
    cells = sweep.sweep(yolo, scream, [6], [0.01, 0.04], [0.5, 1.0], octaves=[2], iters=3, seed=7)
    for cell in cells:
        alone = jd.nightmare(yolo, scream, 6, iters=3, octaves=2, rate=cell.rate, thresh=cell.thresh, seed=7)[0, 0]
        np.testing.assert_allclose(cell.image, alone, atol=1e-5)
        assert cell.objective.shape == (3,) and np.isfinite(cell.objective).all()


def test_contact_sheet_and_results_file(yolo, scream, tmp_path):
    cells = sweep.sweep(yolo, scream, [5, 6], [0.02, 0.04], [1.0], octaves=[1], iters=2)
    sheet = sweep.contact_sheet(cells, tmp_path / "sheet.png", cell_width=64)
    with Image.open(sheet) as im:
        assert im.size == (120 + 2 * 64, 24 + 2 * round(112 * 64 / 88))
    sweep.write_results(cells, tmp_path / "results.h5", "scream.jpg", 0)
    with h5py.File(tmp_path / "results.h5") as f:
        assert f.attrs["cells"] == 4
        first = f["cells/0000"]
        assert dict(first.attrs) == {"layer": 5, "octaves": 1, "rate": 0.02, "thresh": 1.0}
        np.testing.assert_array_equal(first["image"][()], cells[0].image)
        assert first["objective"].shape == (2,)


def test_sweep_command_writes_sheet_and_results(shared, tmp_path, monkeypatch, capsys):
    from conftest import cli

    folder = shared / "models" / "yolo-fastest-1.1"
    code, _, err = cli(monkeypatch, capsys, "sweep", folder / "yolo-fastest-1.1.cfg",
                       shared / "data" / "images" / "kite.jpg", "--weights", folder / "yolo-fastest-1.1.weights",
                       "--layers", "5:7", "--rates", "0.02,0.04", "--iters", "2", "--octaves", "1", "--out", tmp_path)
    assert code == 0, err
    with h5py.File(tmp_path / "kite_sweep.h5") as f:
        assert f.attrs["cells"] == 4
    assert (tmp_path / "kite_sweep.png").stat().st_size > 1000
