"""What render, atlas and accentuate record of each picture in their folder's manifest (``manifest.jsonl``, the
batch manifest's format), for ``jaxdream eval``: the model that made it (name and weights digest), the class it
was made for, the run it came from (its batch, for diversity) and, for an accentuation, the photo and layer."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

from jaxdream.dream.lucid_mode import parse_classes
from jaxdream.imagenet import target
from jaxdream.manifests import Manifest
from jaxdream.objectives import LOGIT_KINDS, Objective
from jaxdream.protocol import Model

MANIFEST = "manifest.jsonl"


def class_target(model: Model, objective: Objective, item: int) -> dict[str, Any] | None:
    """The one class that ``objective`` raises for batch item ``item`` (a positive class logit or BCE target), as
    ``imagenet.target`` records it; None when it raises none or several."""
    labels = model.class_names()
    raised: set[int] = set()
    for term in objective.terms:
        if term.kind not in LOGIT_KINDS or term.weight <= 0 or term.batch not in (None, item):
            continue
        spec = term.index if term.kind == "class_logit" else term.vector
        weights = parse_classes(spec if isinstance(spec, int | dict) else str(spec), labels)
        raised |= {index for index, weight in weights.items() if weight > 0}
    return target(model, raised.pop()) if len(raised) == 1 else None


def new_run() -> str:
    """An id shared by the pictures of one run (one render's batch)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def append(folder: Path, model: Model, mode: str, path: Path, *, item: str, run: str,
           target_class: dict[str, Any] | None, **extra: Any) -> None:
    """The record of the picture just written to ``path``: ``item`` names it within the run (a batch index, a
    unit)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Manifest(folder / MANIFEST).append({
        "input": item, "input_sha256": None, "outputs": [path.name], "sha256": [digest],
        "status": "done", "mode": mode, "model": model.name, "model_digest": model.weights_digest, "run": run,
        "target": target_class, **extra})
