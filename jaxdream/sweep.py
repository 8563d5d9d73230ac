"""Research sweeps: one image dreamed under a grid of settings with the same seed.

Settings that change shapes (layer, octaves) get one compiled program each; settings that do not (rate,
threshold) are a vmapped axis of that program, so a grid of 3 rates x 2 thresholds compiles once per layer.
Results: a labelled contact sheet (rows: layer/octaves, columns: rate/thresh) and an HDF5 file with each cell's
image, its options and the objective value per iteration.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw

from jaxdream import checks, progress
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, engine, tiles
from jaxdream.dream.engine import plan_tiles
from jaxdream.dream.validate import validate
from jaxdream.errors import OptionError
from jaxdream.files import hdf5_bytes, image_bytes, write_atomically
from jaxdream.image import to_uint8
from jaxdream.protocol import Model

SWEEP_OBJECTIVES = ("darknet", "l2")  # the objectives whose input is one number (the grid's threshold axis)


@dataclass(frozen=True)
class Cell:
    layer: int
    octaves: int
    rate: float
    thresh: float
    image: np.ndarray  # (H, W, 3)
    objective: np.ndarray  # (iters,) value before each iteration


def parse_layers(text: str, model: Model) -> list[int]:
    """'4:13' (Python-style, end excluded), '4,7,10', '10', or layer names where the model has them
    ('fire5/concat_1,fire9/concat_1'; a range of names 'fire2/concat:fire5/concat' too); each layer once."""
    layers: list[int] = []
    for piece in _items(text, "layers", "4,7,10"):
        if piece in model.layer_names or ":" not in piece:
            layers.append(model.resolve_layer(piece))
            continue
        start, stop = _range_ends(piece, model)
        layers += range(start, stop)
    if not layers:
        raise OptionError(f"--layers {text!r}: write a range 4:13, a list 4,7,10 or layer names")
    return list(dict.fromkeys(layers))  # a layer named and numbered is one column of the sheet


def _range_ends(piece: str, model: Model) -> tuple[int, int]:
    """The two ends of 'a:b', trying each ':' (layer names may hold one themselves)."""
    for at in (i for i, char in enumerate(piece) if char == ":"):
        try:
            return model.resolve_layer(piece[:at].strip()), model.resolve_layer(piece[at + 1 :].strip())
        except OptionError:
            continue
    raise OptionError(f"--layers {piece!r}: not a range of layers (4:13) or a layer {model.name} has")


def _items(text: str, name: str, example: str) -> list[str]:
    """The items of a comma-separated list; an empty one (``0.01,,0.02``, a trailing comma) is a typo, refused."""
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise OptionError(f"--{name} {text!r}: an empty item; write a comma-separated list, e.g. {example}")
    return items


def parse_ints(text: str, name: str) -> list[int]:
    items = _items(text, name, "2,4")
    try:
        return [int(v) for v in items]
    except ValueError:
        raise OptionError(f"--{name} {text!r}: write a comma-separated list of whole numbers") from None


def parse_floats(text: str, name: str) -> list[float]:
    items = _items(text, name, "0.01,0.02")
    try:
        return [float(v) for v in items]
    except ValueError:
        raise OptionError(f"--{name} {text!r}: write a comma-separated list of numbers") from None


def sweep(
    model: Model, x: Any, layers: list[int | str], rates: list[float], threshs: list[float] = (1.0,),
    octaves: list[int] = (4,), iters: int = 10, layer_range: int = 1, seed: int = 0,
    stats: RunStats | None = None, tile: int | None = None, memory: str | int | None = None,
    objective: str = "darknet", precision: str | None = None,
) -> list[Cell]:
    """Dream ``x`` (H, W, 3) for every combination; every cell uses the same random schedule per (layer, octaves).
    ``layers``: indices or, where the model has them, names.
    Tiled (``tile``, or an image over the ``memory`` budget), the cells run one after another through the one
    tile program of each layer. ``objective``: darknet (thresholded L2, the thresholds an axis of the grid) or l2
    (the thresholds unused); ``precision``: f32 (default), tf32 or bf16."""
    image = as_batch(x, images=True)
    if image.shape[0] != 1:
        raise OptionError("a sweep dreams one image")
    if not (layers and rates and threshs and octaves):
        raise OptionError("a sweep needs at least one layer, rate, threshold and octave count")
    for rate in rates:
        checks.check_number("rate", rate, 0.0)
    for thresh in threshs:
        checks.check_number("thresh", thresh)
    seed = checks.check_seed(seed)
    if objective not in SWEEP_OBJECTIVES:
        raise OptionError(f"--objective {objective!r}: a sweep takes {' or '.join(SWEEP_OBJECTIVES)}")
    grid = list(itertools.product(rates, threshs))
    layers = list(dict.fromkeys(model.resolve_layer(layer) for layer in layers))
    stats = stats if stats is not None else RunStats()
    with progress.task("dreaming", len(layers) * len(octaves) * len(grid) * iters, "iteration"):
        return _cells(model, image, layers, octaves, grid, iters, layer_range, seed, stats, tile, memory,
                      {"objective": objective, **({"precision": precision} if precision else {})})


def _cells(model: Model, image: Any, layers: list[int], octaves: list[int], grid: list[tuple[float, float]],
           iters: int, layer_range: int, seed: int, stats: RunStats, tile: int | None, memory: str | int | None,
           settings: dict[str, Any] | None = None) -> list[Cell]:
    """Every cell of the grid: untiled, the grid is one batch through the branch programs of each (layer, octaves),
    the next one's compiling while this one dreams."""
    rate_axis = np.array([r for r, _ in grid], np.float32)
    thresh_axis = np.array([t for _, t in grid], np.float32)
    params = placed_params(model, image)
    grid_images = np.repeat(image, len(grid), axis=0)
    configs = [core.DreamConfig(layer=layer, layer_range=layer_range, iters=iters, octaves=n_octaves,
                                **(settings or {})) for layer, n_octaves in itertools.product(layers, octaves)]
    for config in configs:
        validate(model, config, image.shape[1], image.shape[2])

    def prefetch(config: core.DreamConfig) -> None:
        """The next cell's branch programs compile while this one dreams (where it will not be tiled)."""
        if engine.surely_untiled(model, config, image.shape, tile, memory):
            engine.prefetch_round(model, config, params, grid_images, engine.drawn_schedule(config, seed, 0, stats),
                                  thresh_axis, stats, shared_aux=False)

    cells = []
    for k, config in enumerate(configs):
        layer, n_octaves = config.layer, config.octaves
        if k + 1 < len(configs):
            prefetch(configs[k + 1])
        tile_size, per_call = plan_tiles(model, config, image, np.float32(grid[0][1]), tile, memory, stats)
        if tile_size is not None:
            for rate, thresh in grid:
                dreamed, values = tiles.tiled_round(model, config, image, seed, 0, rate, np.float32(thresh),
                                                    tile_size, per_call, stats)
                cells.append(Cell(layer, n_octaves, rate, thresh, np.asarray(dreamed)[0], values[:, 0]))
            continue
        # The grid is a batch: one copy of the image per (rate, thresh) cell, each with its own rate and threshold.
        schedule = engine.drawn_schedule(config, seed, 0, stats)
        rates = np.stack([config.step_rates(rate) for rate in rate_axis], axis=1)
        images, values = engine.run_round(model, config, params, grid_images, schedule, rates, thresh_axis, stats,
                                          shared_aux=False, cells=len(grid))
        images = np.asarray(images)
        for g, (rate, thresh) in enumerate(grid):
            cells.append(Cell(layer, n_octaves, rate, thresh, images[g], values[:, g]))
    return cells


def contact_sheet(cells: list[Cell], path: Path, cell_width: int = 256) -> Path:
    """Rows: (layer, octaves); columns: (rate, thresh); each value printed on the sheet. A .jpg ``path`` is written
    as JPEG (quality 80), anything else as PNG."""
    rows = sorted({(c.layer, c.octaves) for c in cells})
    columns = sorted({(c.rate, c.thresh) for c in cells})
    h, w = cells[0].image.shape[:2]
    scale = cell_width / w
    ch, cw = max(1, round(h * scale)), cell_width
    margin_left, margin_top = 120, 24
    sheet = Image.new("RGB", (margin_left + cw * len(columns), margin_top + ch * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (rate, thresh) in enumerate(columns):
        draw.text((margin_left + j * cw + 4, 6), f"rate {rate:g}  thresh {thresh:g}", fill="black")
    for i, (layer, octaves) in enumerate(rows):
        draw.text((4, margin_top + i * ch + ch // 2 - 6), f"layer {layer}  oct {octaves}", fill="black")
    for cell in cells:
        i, j = rows.index((cell.layer, cell.octaves)), columns.index((cell.rate, cell.thresh))
        tile = Image.fromarray(to_uint8(cell.image)).resize((cw, ch), Image.BILINEAR)
        sheet.paste(tile, (margin_left + j * cw, margin_top + i * ch))
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    data = image_bytes(sheet, "JPEG", quality=80) if jpeg else image_bytes(sheet, "PNG")
    return write_atomically(path, data, "the contact sheet")


def write_results(cells: list[Cell], path: Path, source: str, seed: int) -> Path:
    """HDF5: cells/<k>/image (float32 H x W x 3), cells/<k>/objective (iters,), options as attributes."""
    def fill(f: h5py.File) -> None:
        f.attrs.update({"source": source, "seed": seed, "cells": len(cells)})
        for k, cell in enumerate(cells):
            group = f.create_group(f"cells/{k:04d}")
            group.create_dataset("image", data=cell.image.astype(np.float32), compression="gzip")
            group.create_dataset("objective", data=cell.objective.astype(np.float32))
            group.attrs.update({"layer": cell.layer, "octaves": cell.octaves, "rate": cell.rate,
                                "thresh": cell.thresh})

    return write_atomically(path, hdf5_bytes(fill), "the sweep results")
