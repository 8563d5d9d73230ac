"""The bundled model and photo: intact, recorded, and a real classifier offline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import jaxdream as jd
from jaxdream import weights as bundled

ROOT = Path(__file__).resolve().parent.parent


def test_the_bundled_files_are_the_recorded_ones():
    sources = (ROOT / "weights" / "SOURCES.md").read_text(encoding="utf-8")
    for name, digest in bundled.BUNDLED_FILES.items():
        assert hashlib.sha256(bundled.data_path(name).read_bytes()).hexdigest() == digest, name
        assert digest in sources and name in sources


def test_the_bundled_model_sees_a_malamute_as_darknet_does():
    """Darknet's `classifier predict` on dog.jpg: malamute 14.51 % (weights/SOURCES.md)."""
    model = jd.load_model("tiny")
    probs = np.asarray(model.predict(jd.load_image(bundled.SAMPLE_IMAGE)[None]))[0]
    assert model.labels[int(probs.argmax())] == "malamute"
    assert abs(float(probs.max()) - 0.1451) < 0.005
