"""``jaxdream eval``: how well pictures made for a class show it, measured as MACO (Fel et al. 2023) measures
feature visualisations.

- **Confidence and transferability**: the target's rank and probability under each model, read exactly as
  ``classify`` reads a picture (the model's own preprocessing); transferability is the share of the *other* models
  (not the one that made the picture) whose top-1 (and top-5) is the target. Classes are matched across label
  orders by WordNet id (``imagenet``).
- **Plausibility**: the mean cosine similarity, in one layer of the model that made the picture (spatially
  averaged), between the picture and real photos of its class (``references``: a folder with one subfolder per
  class, named by WordNet id or class name).
- **Diversity**: within one run's batch of the same class, the mean pairwise cosine distance of those features.
- **Accentuation distance**: for an accentuated photo, ||f(picture) - f(photo)|| / ||f(photo)|| in the
  regularised layer.

The pictures and their targets come from the manifest (``manifest.jsonl``) that render, atlas and accentuate write
beside them (``records``).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxdream.batch import IMAGE_SUFFIXES
from jaxdream.errors import OptionError
from jaxdream.image import load_image, short_side_crop
from jaxdream.imagenet import DARKNET, class_order, order_wnids, wnid_named
from jaxdream.manifests import read_records
from jaxdream.protocol import Model

TOP = 5


@dataclass(frozen=True)
class Picture:
    """A picture to evaluate and the manifest record that says what made it and for what."""

    path: Path
    record: dict[str, Any]


def find_pictures(sources: Sequence[str | Path]) -> list[Picture]:
    """A folder: every picture its manifest records (the latest record of each, whose file is still the one
    recorded); a file: its own record in the manifest beside it. One clear error for a file no record describes
    or one changed since it was written."""
    found: dict[Path, Picture] = {}
    for source in map(Path, sources):
        if source.is_dir():
            latest = _latest_records(source)
            if not latest:
                raise OptionError(f"{source}: no manifest.jsonl records pictures here; eval reads the manifest that "
                                  "jaxdream render, atlas and accentuate write beside their pictures")
            for name in sorted(latest):
                path = source / name
                if not path.is_file():
                    continue
                if hashlib.sha256(path.read_bytes()).hexdigest() != _digest(latest[name]):
                    logging.getLogger("jaxdream").warning("eval: %s changed since jaxdream wrote it; left out", path)
                    continue
                found[path.resolve()] = Picture(path, latest[name])
        elif source.is_file():
            record = _latest_records(source.parent).get(source.name)
            if record is None or source.suffix.lower() not in IMAGE_SUFFIXES:
                raise OptionError(f"{source}: no manifest record beside it says what it was made for; eval reads the "
                                  "manifest.jsonl that jaxdream render, atlas and accentuate write")
            found[source.resolve()] = _checked(source, record)
        else:
            raise OptionError(f"{source}: no such file or folder")
    return list(found.values())


def _latest_records(folder: Path) -> dict[str, dict[str, Any]]:
    latest = {}
    for record in read_records(folder):
        outputs = record.get("outputs")
        if record.get("status") == "done" and "model" in record and isinstance(outputs, list) and len(outputs) == 1:
            latest[str(outputs[0])] = record
    return latest


def _digest(record: dict[str, Any]) -> str | None:
    hashes = record.get("sha256")
    return hashes[0] if isinstance(hashes, list) and len(hashes) == 1 else None


def _checked(path: Path, record: dict[str, Any]) -> Picture:
    if hashlib.sha256(path.read_bytes()).hexdigest() != _digest(record):
        raise OptionError(f"{path}: changed since jaxdream wrote it (its sha256 is not the manifest's); render it "
                          "again, or leave it out")
    return Picture(path, record)


def default_layer(model: Model) -> int:
    """The layer whose features plausibility and diversity compare when none is given: the deepest feature map
    (more than 1x1 at the model's input size) below the logits that is not already one channel per class."""
    height, width = model.input_size
    shapes = model.layer_output_shapes(height, width, model.logits_layer)
    for index in range(model.logits_layer - 1, -1, -1):
        h, w, channels = shapes[index]
        if h * w > 1 and channels != model.num_classes:
            try:
                model.check_layer(index)
            except OptionError:
                continue
            return index
    raise OptionError(f"{model.name}: no feature map below its logits to compare; choose one with --layer")


class _Features:
    """Spatially averaged features of pictures under one model and layer, each picture computed once."""

    def __init__(self, model: Model, layer: int):
        self.model, self.layer = model, layer
        self._seen: dict[str, np.ndarray] = {}

    def of(self, key: str, image: np.ndarray) -> np.ndarray:
        if key not in self._seen:
            out = self.model.forward(image[None], (self.layer,))[self.layer]
            self._seen[key] = np.asarray(out, np.float64)[0].mean(axis=(0, 1))
        return self._seen[key]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else 0.0


def evaluate(pictures: Sequence[Picture], models: Sequence[Model], *, references: Path | None = None,
             layer: str | None = None) -> dict[str, Any]:
    """Every picture under every model (dicts ready for JSON): ``{"models", "pictures", "summary"}``. ``layer``:
    where plausibility and diversity compare features, in the model that made each picture (default
    ``default_layer``)."""
    if not models:
        raise OptionError("give at least one model to evaluate with (--models)")
    names = [m.name for m in models]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise OptionError(f"two models are named {', '.join(twice)}: give each model once (a converted copy is the "
                          "same model)")
    wnids = {id(m): order_wnids(class_order(m)) for m in models}  # every model an ImageNet-1k classifier
    refs = _reference_photos(references) if references is not None else None
    features: dict[tuple[int, int], _Features] = {}

    def features_of(model: Model, at: int | str | None) -> _Features:
        index = default_layer(model) if at is None else model.resolve_layer(at)
        model.check_layer(index)
        return features.setdefault((id(model), index), _Features(model, index))

    rows = []
    for picture in pictures:
        image = load_image(picture.path)
        record = picture.record
        maker = _maker(record, models)
        target = record.get("target") if isinstance(record.get("target"), dict) else {}
        wnid = target.get("wnid") if target.get("wnid") in order_wnids(DARKNET) else None  # hand edits: no class
        row: dict[str, Any] = {"picture": str(picture.path), "mode": record.get("mode"), "made_by": record["model"],
                               "run": record.get("run"), "target": wnid, "target_name": target.get("name"),
                               "models": {}}
        for model in models if wnid is not None else ():
            probs = np.asarray(model.predict(image[None]), np.float64)[0]
            index = wnids[id(model)].index(wnid)
            rank = 1 + int(np.sum(probs > probs[index]))
            row["models"][model.name] = {"rank": rank, "prob": float(probs[index]), "top1": rank == 1,
                                         "top5": rank <= TOP}
        if wnid is not None:
            others = [row["models"][m.name] for m in models if m is not maker]
            row["self"] = row["models"][maker.name] if maker is not None else None
            row["transfer_top1"] = _share(o["top1"] for o in others)
            row["transfer_top5"] = _share(o["top5"] for o in others)
        judge = maker or models[0]
        if refs is not None and wnid is not None and wnid in refs:
            seen = features_of(judge, layer)
            mine = seen.of(str(picture.path), image)
            row["plausibility"] = float(np.mean([_cosine(mine, seen.of(str(p), _reference_input(judge, p)))
                                                 for p in refs[wnid]]))
        if isinstance(record.get("seed_image"), str) and isinstance(record.get("reg_layer"), int) and maker:
            row["accentuation_distance"] = _distance(maker, int(record["reg_layer"]), image,
                                                     Path(record["seed_image"]))
        rows.append((row, image, judge))
    _diversity(rows, lambda judge: features_of(judge, layer))
    result_rows = [row for row, _, _ in rows]
    return {"models": [{"name": m.name, "order": class_order(m), "weights_sha256": m.weights_digest} for m in models],
            "pictures": result_rows, "summary": summarise(result_rows)}


def _maker(record: dict[str, Any], models: Sequence[Model]) -> Model | None:
    """The model that made a picture, by weights digest (a converted copy is the same model), else by name."""
    for model in models:
        if model.weights_digest == record.get("model_digest"):
            return model
    return next((model for model in models if model.name == record.get("model")), None)


def _share(hits: Any) -> float | None:
    values = list(hits)
    return sum(values) / len(values) if values else None


def _reference_photos(folder: Path) -> dict[str, list[Path]]:
    """{wnid: photos} from one subfolder per class, named by WordNet id or by a class name of either order."""
    if not folder.is_dir():
        raise OptionError(f"--references {folder}: not a folder (one subfolder of photos per class)")
    refs: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        wnid = wnid_named(sub.name)
        if wnid is None:
            raise OptionError(f"--references: {sub} names no ImageNet class; name each subfolder by a WordNet id "
                              "(n01518878) or a class name (ostrich)")
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if photos:
            refs.setdefault(wnid, []).extend(photos)
    if not refs:
        raise OptionError(f"--references {folder}: no photos in class subfolders (such as {folder}/n01518878/)")
    return refs


def _reference_input(model: Model, path: Path) -> np.ndarray:
    """A reference photo at the model's input size (short side resized, centre crop), as pictures are rendered."""
    return np.asarray(short_side_crop(load_image(path), *model.input_size), np.float32)


def _distance(model: Model, layer: int, image: np.ndarray, seed: Path) -> float | None:
    if not seed.is_file():
        return None
    photo = load_image(seed)
    if photo.shape != image.shape:
        return None
    out = model.forward(np.stack([image, photo]), (layer,))[layer]
    mine, theirs = np.asarray(out, np.float64)
    scale = float(np.linalg.norm(theirs))
    return float(np.linalg.norm(mine - theirs)) / scale if scale > 0 else None


def _diversity(rows: list[tuple[dict[str, Any], np.ndarray, Model]], features_of: Any) -> None:
    """Each picture of a run's batch with the same target gets the batch's mean pairwise cosine distance."""
    groups: dict[tuple[Any, Any], list[tuple[dict[str, Any], np.ndarray, Model]]] = {}
    for entry in rows:
        row = entry[0]
        if row["run"] is not None and row["target"] is not None:  # a channel atlas is no batch of one class
            groups.setdefault((row["run"], row["target"]), []).append(entry)
    for members in groups.values():
        if len(members) < 2:
            continue
        seen = features_of(members[0][2])
        vectors = [seen.of(row["picture"], image) for row, image, _ in members]
        value = float(np.mean([1.0 - _cosine(a, b) for a, b in itertools.combinations(vectors, 2)]))
        for row, _, _ in members:
            row["diversity"] = value


SUMMARY_KEYS = ("self_top1", "self_prob", "transfer_top1", "transfer_top5", "plausibility", "diversity",
                "accentuation_distance")


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model that made pictures: their count and the mean of each measure (None where none was measured)."""
    summary = []
    for maker in dict.fromkeys(row["made_by"] for row in rows):
        mine = [row for row in rows if row["made_by"] == maker]
        values: dict[str, list[float]] = {key: [] for key in SUMMARY_KEYS}
        for row in mine:
            if row.get("self"):
                values["self_top1"].append(float(row["self"]["top1"]))
                values["self_prob"].append(row["self"]["prob"])
            for key in SUMMARY_KEYS[2:]:
                if row.get(key) is not None:
                    values[key].append(float(row[key]))
        summary.append({"made_by": maker, "pictures": len(mine),
                        **{key: (float(np.mean(v)) if v else None) for key, v in values.items()}})
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The summary and the per-picture table as Markdown."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| made by | pictures | " + " | ".join(SUMMARY_KEYS) + " |",
             "|---|---:|" + "---:|" * len(SUMMARY_KEYS)]
    lines += [f"| {s['made_by']} | {s['pictures']} | " + " | ".join(cell(s[k]) for k in SUMMARY_KEYS) + " |"
              for s in result["summary"]]
    names = [m["name"] for m in result["models"]]
    lines += ["", "| picture | target | " + " | ".join(f"{n} rank (prob)" for n in names)
              + " | transfer top-1 | plausibility |", "|---|---|" + "---:|" * (len(names) + 2)]
    for row in result["pictures"]:
        scores = [row["models"].get(n) for n in names]
        lines.append(f"| {Path(row['picture']).name} | {cell(row['target_name'])} | "
                     + " | ".join(f"{s['rank']} ({s['prob']:.3f})" if s else "-" for s in scores)
                     + f" | {cell(row.get('transfer_top1'))} | {cell(row.get('plausibility'))} |")
    return "\n".join(lines) + "\n"
