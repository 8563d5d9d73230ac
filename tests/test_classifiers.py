"""Darknet classification cfgs end to end, and the connected layer's C,H,W flatten order against NumPy."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest

from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes


@pytest.mark.parametrize("name", ["darknet", "darknet19", "extraction", "resnet18"])
def test_reference_classifier_runs_to_softmax(shared, darknet_cfg, name, tmp_path):
    """Loaded as a user loads it (a cfg file and a .weights file), a 1000-class classifier names its classes."""
    from jaxdream.model import load_model

    cfg = darknet_cfg(name)
    weights = tmp_path / f"{name}.weights"
    weights.write_bytes(random_weights_bytes(cfg, 0))
    model = load_model(shared / "darknet" / "cfg" / f"{name}.cfg", weights)
    x = np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    probs = np.asarray(model.predict(x))
    assert probs.shape == (1, 1000)
    assert abs(probs.sum() - 1) < 1e-4 and np.isfinite(probs).all()
    names = (files("jaxdream.weights") / "imagenet1k-darknet.names").read_text().splitlines()
    assert (names[0], names[-1]) == ("kit fox", "dumbbell")  # Darknet's own order, not Keras's
    assert model.labels == tuple(names)  # a 1000-class Darknet softmax: Darknet's ImageNet-1k names


CONNECTED = """[net]
width=5
height=6
channels=3

[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=7
activation=linear

[softmax]
"""


def test_connected_flattens_in_darknet_channel_major_order():
    cfg = parse_cfg(CONNECTED, "connected.cfg")
    data = random_weights_bytes(cfg, 9)
    model = model_from_bytes(cfg, data)
    flat = np.frombuffer(data[20:], "<f4").astype(np.float64)
    bias0, kernel0 = flat[:4], flat[4 : 4 + 4 * 3 * 9].reshape(4, 3, 3, 3)
    rest = flat[4 + 4 * 3 * 9 :]
    bias2, kernel2 = rest[:7], rest[7:].reshape(7, 4 * 3 * 3)
    x = np.random.default_rng(1).uniform(0, 1, (6, 5, 3))
    chw = np.pad(x.transpose(2, 0, 1), ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((4, 6, 5))
    for o in range(4):
        for dy in range(3):
            for dx in range(3):
                conv[o] += np.einsum("chw,c->hw", chw[:, dy : dy + 6, dx : dx + 5], kernel0[o, :, dy, dx])
        conv[o] += bias0[o]
    conv = np.where(conv > 0, conv, 0.1 * conv)
    pooled = np.pad(conv, ((0, 0), (0, 0), (0, 1)), constant_values=-np.inf).reshape(4, 3, 2, 3, 2).max(axis=(2, 4))
    logits = kernel2 @ pooled.reshape(-1) + bias2  # Darknet reads the (C, H, W) buffer as is
    np.testing.assert_allclose(np.asarray(model.logits(x[None].astype(np.float32)))[0], logits, rtol=1e-4, atol=1e-4)


CROP = """[net]
width=10
height=8
channels=3

[crop]
crop_height=6
crop_width=8

[avgpool]
"""


def test_crop_is_centred_scaled_and_follows_the_input_size():
    cfg = parse_cfg(CROP, "crop.cfg")
    model = model_from_bytes(cfg, random_weights_bytes(cfg, 0))
    x = np.random.default_rng(2).uniform(0, 1, (1, 8, 10, 3)).astype(np.float32)
    out = np.asarray(model.forward(x, 0)[0])
    np.testing.assert_allclose(out, 2 * x[:, 1:7, 1:9] - 1, atol=1e-7)  # Darknet maps [0, 1] to [-1, 1]
    big = np.random.default_rng(3).uniform(0, 1, (1, 16, 20, 3)).astype(np.float32)
    out = np.asarray(model.forward(big, 0)[0])  # resize_crop_layer keeps the ratio: 12 x 16 of 16 x 20
    np.testing.assert_allclose(out, 2 * big[:, 2:14, 2:18] - 1, atol=1e-7)
