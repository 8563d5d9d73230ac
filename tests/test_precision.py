"""Compute modes: f32 is the default and exact; bf16 (opt-in) keeps activations within 1e-2 of f32."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.errors import OptionError
from jaxdream.model import model_from_bytes
from jaxdream.nn import PRECISION_ENV, compute_mode


def test_bf16_activations_stay_within_one_percent(darknet_cfg, shared, monkeypatch):
    cfg = darknet_cfg("vgg-conv")
    data = random_weights_bytes(cfg, 1001)
    d = np.load(shared / "golden" / "vgg-conv_fwd_67x53.npz")
    x = d["input"].transpose(1, 2, 0)[None]
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    out = model_from_bytes(cfg, data).forward(x, (4, 10, 17))  # a fresh model: programs are traced in bf16
    for layer in (4, 10, 17):
        ref = d[f"layer_{layer}"]
        got = np.asarray(out[layer])[0].transpose(2, 0, 1)
        assert got.dtype == np.float32
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert 1e-5 < rel < 1e-2, (layer, rel)  # really bf16 (not exact), and still close


def test_unknown_mode_is_refused(monkeypatch):
    assert compute_mode() == "f32"
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(OptionError, match="JAXDREAM_PRECISION='fp8': use one of f32, tf32, bf16"):
        compute_mode()
