"""Atlases: every channel of a layer (or every class of a classifier) rendered, one picture per unit, with a
labelled contact sheet.

Units are rendered ``batch_size`` at a time (by default 1 on a CPU, 16 on accelerators) through one compiled
program (each item its own unit's objective, ``Objective.for_item``; a short last batch is filled with copies, so
the shape never changes), split over the local devices. Each unit draws its noise and transforms from the seed and
its own index, so its picture is the same in any batch: a run killed and resumed (``resume``, the manifest of
``jaxdream.batch``) writes the same bytes as one that was not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxdream import checks, interrupts, records
from jaxdream.batch import Job, run_key
from jaxdream.compiled.stats import RunStats
from jaxdream.errors import OptionError
from jaxdream.files import image_bytes, write_atomically
from jaxdream.image import encode_image, load_image, to_uint8
from jaxdream.imagenet import target
from jaxdream.manifests import Manifest, done_inputs
from jaxdream.objectives import Objective, channel, class_logit
from jaxdream.outputs import check_io, output_folder
from jaxdream.protocol import Model
from jaxdream.visual.render import render

SHEET_CELL = 96  # pixels per unit on the contact sheet


@dataclass
class AtlasSummary:
    """What an atlas run did."""

    done: int = 0
    skipped: int = 0
    files: list[Path] = field(default_factory=list)
    sheet: Path | None = None
    seconds: float = 0.0
    stats: RunStats = field(default_factory=RunStats)


def parse_units(text: str | None, count: int, what: str) -> list[int]:
    """'A:B' (B excluded), 'A,B,C' or None (all ``count``) -> unit indices, each checked, each once."""
    if text is None:
        return list(range(count))
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            units = list(range(int(start or 0), int(stop) if stop else count))
        else:
            units = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"--{what} {text!r}: write a range A:B (B excluded) or a list A,B,C") from None
    if not units:
        raise OptionError(f"--{what} {text!r} is empty: a range A:B holds A .. B - 1")
    if min(units) < 0 or max(units) >= count:
        raise OptionError(f"--{what} {text!r}: choose among 0 .. {count - 1}")
    return list(dict.fromkeys(units))  # each unit once, in the order given


def default_batch_size() -> int:
    """Units per batch when none is asked for: 1 on a CPU, where a batch only adds memory traffic (measured on 2
    cores: 0.8-0.9x the units/s of one at a time, benchmarks/NOTES.md), 16 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 16


def run_atlas(model: Model, layer: int | None, units: list[int], out: Path, *, batch_size: int | None = None,
              resume: bool = False, progress: Callable[[int, int], None] | None = None, seed: int = 0,
              reads: dict[str, Any] | None = None, **options: Any) -> AtlasSummary:
    """Render each unit (a channel of ``layer``, or with ``layer`` None a class) into ``out``: one PNG per unit
    (``<model>_<layer>_<unit:04d>.png`` or ``<model>_class_<unit:04d>.png``), a manifest, and a contact sheet
    (``..._atlas.png``) of every unit done. ``options`` go to ``jaxdream.render`` (size, steps, param, ...);
    ``reads``: the run's files (model, weights), which no output may replace."""
    batch_size = default_batch_size() if batch_size is None else checks.check_count("batch-size", batch_size, 1)
    out = output_folder(out)
    tag = "class" if layer is None else str(layer)
    names = {unit: out / f"{model.name}_{tag}_{unit:04d}.png" for unit in units}
    sheet = out / f"{model.name}_{tag}_atlas.png"
    check_io(reads or {}, {"output": [*names.values(), sheet]})
    Manifest(out / records.MANIFEST)  # a manifest that is a link or a folder is refused before any work
    job = Job("atlas", model.name, {"layer": tag, **{k: v for k, v in options.items() if k != "stats"}}, seed, None,
              "png")
    key = run_key(job, model)
    finished = done_inputs(out, key) if resume else set()
    todo = [unit for unit in units if _unit_id(tag, unit) not in finished]
    summary = AtlasSummary(skipped=len(units) - len(todo))
    run = records.new_run()
    start = time.perf_counter()
    for first in range(0, len(todo), batch_size):
        interrupts.check()
        group = todo[first : first + batch_size]
        filled = group + [group[-1]] * (batch_size - len(group))
        objective = Objective(tuple(term for i, unit in enumerate(filled)
                                    for term in _unit_objective(layer, unit).for_item(i).terms))
        images = render(model, objective, batch=batch_size, seed=seed, item_seeds=np.asarray(filled, np.uint32),
                        stats=summary.stats, **options)
        for unit, picture in zip(group, images, strict=False):
            data = encode_image(names[unit], picture)
            write_atomically(names[unit], data, "the unit's picture")
            records.append(out, model, "atlas", names[unit], item=_unit_id(tag, unit), run=run,
                           target_class=target(model, unit) if layer is None else None, job=key,
                           options=job.options, seed=seed)
            summary.done += 1
            summary.files.append(names[unit])
        if progress:
            progress(summary.done, len(todo))
    done = [unit for unit in units if names[unit].is_file()]
    if done:
        labels = model.class_names() if layer is None else None
        summary.sheet = contact_sheet([(unit, load_image(names[unit])) for unit in done], sheet, labels)
    summary.seconds = time.perf_counter() - start
    return summary


def _unit_objective(layer: int | None, unit: int) -> Objective:
    return class_logit(unit) if layer is None else channel(layer, unit)


def _unit_id(tag: str, unit: int) -> str:
    """What the manifest records as a unit's input (no file: its ``input_sha256`` is None)."""
    return f"unit:{tag}:{unit}"


def contact_sheet(units: list[tuple[int, np.ndarray]], path: Path, labels: tuple[str, ...] | None = None) -> Path:
    """The units' pictures in a square-ish grid, each labelled with its index (and class name)."""
    columns = math.ceil(math.sqrt(len(units)))
    rows = math.ceil(len(units) / columns)
    label_height = 14
    sheet = Image.new("RGB", (columns * SHEET_CELL, rows * (SHEET_CELL + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (unit, picture) in enumerate(units):
        x, y = (k % columns) * SHEET_CELL, (k // columns) * (SHEET_CELL + label_height)
        sheet.paste(Image.fromarray(to_uint8(picture)).resize((SHEET_CELL, SHEET_CELL), Image.BILINEAR), (x, y))
        text = str(unit) if labels is None else f"{unit} {labels[unit].split(',')[0]}"
        draw.text((x + 2, y + SHEET_CELL + 1), text[:16], fill="black")
    return write_atomically(path, image_bytes(sheet, "PNG"), "the contact sheet")
