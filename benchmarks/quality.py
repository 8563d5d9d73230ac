"""The quality comparison of issue 26: 20 ImageNet classes rendered with each parameterisation on each of the three
real classifiers (the same steps), each set evaluated by ``jaxdream eval``'s measures under all three models:
self-confidence (the model that made it) and transferability (the other two), with the seconds each took.

Pictures go to ``<out folder>/quality/<model>/<method>/`` through ``run_atlas`` with ``resume``, so an interrupted
run (it takes about an hour on 2 cores) goes on where it stopped; a folder's render seconds are kept in its
``timing.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxdream.atlas import run_atlas
from jaxdream.evaluation import evaluate, find_pictures
from jaxdream.imagenet import WORDNET, class_index, order_wnids
from jaxdream.model import load_model
from jaxdream.protocol import Model
from jaxdream.weights import BUNDLED_MODEL

# Sorted-WordNet indices (Keras/PyTorch numbering): animals, objects, food and a scene, none a near-duplicate.
CLASSES = (1, 9, 22, 96, 130, 145, 207, 291, 323, 340, 388, 409, 417, 483, 511, 948, 950, 954, 963, 980)
STEPS, SIZE = 128, 224
METHODS: dict[str, dict[str, Any]] = {
    "pixel": {"param": "pixel", "decorrelate": False},
    "fft": {"param": "fft", "decorrelate": False},
    "fft+decorrelated": {"param": "fft"},
    # MACO renders a larger canvas and looks at zoomed crops of it (two per step), as its paper does.
    "maco": {"param": "maco", "transforms": "maco", "crops": 2, "size": (320, 320)},
}


def classifiers(shared: Path) -> dict[str, Model]:
    """The three real ImageNet classifiers: Tiny Darknet (Darknet's order), MobileNet v1 0.25 and SqueezeNet 1.1
    (sorted WordNet order)."""
    models = shared / "models"
    squeezenet = models / "squeezenet-1.1-onnx"
    return {"tiny": load_model(BUNDLED_MODEL),
            "mobilenet": load_model(models / "mobilenet-v1-0.25" / "mobilenet_v1_0.25_224.h5"),
            "squeezenet": load_model(squeezenet / "squeezenet1.1_fp16.onnx", preprocess="caffe",
                                     labels=squeezenet / "labels.txt")}


def quality_cases(shared: Path, out: Path, precision: str, log: Callable[[str], None],
                  classes: tuple[int, ...] = CLASSES, steps: int = STEPS) -> list[dict[str, Any]]:
    """One row per (model, method): render ``classes`` (or take those already rendered), then evaluate them under
    every model."""
    models = classifiers(shared)
    wnids = [order_wnids(WORDNET)[i] for i in classes]
    rows = []
    for name, model in models.items():
        units = [class_index(model, wnid) for wnid in wnids]
        for method, options in METHODS.items():
            folder = out / "quality" / name / method
            settings = {"size": (SIZE, SIZE), "steps": steps, "precision": precision, **options}
            began = time.perf_counter()
            summary = run_atlas(model, None, units, folder, resume=True, **settings)
            seconds = _timing(folder, summary.done, time.perf_counter() - began)
            result = evaluate(find_pictures([folder]), list(models.values()))
            (folder / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
            row = {"case": f"quality: {name}, {method}", "model": name, "method": method, "steps": steps,
                   "classes": len(units), **{k: v for k, v in result["summary"][0].items() if v is not None},
                   "seconds_per_image": seconds, "median_s": seconds}
            log(f"  {name} {method}: self top-1 {row.get('self_top1', 0):.2f}, transfer top-1 "
                f"{row.get('transfer_top1', 0):.2f}, top-5 {row.get('transfer_top5', 0):.2f}, {seconds:.1f} s/image")
            rows.append(row)
    return rows


def _timing(folder: Path, done: int, seconds: float) -> float:
    """Seconds per picture of the folder's renders, kept across resumed runs (render time, not evaluation)."""
    path = folder / "timing.json"
    kept = json.loads(path.read_text()) if path.is_file() else {"pictures": 0, "seconds": 0.0}
    if done:
        kept = {"pictures": kept["pictures"] + done, "seconds": kept["seconds"] + seconds}
        path.write_text(json.dumps(kept) + "\n")
    return kept["seconds"] / kept["pictures"] if kept["pictures"] else float("nan")
