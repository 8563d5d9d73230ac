"""Compute modes: f32 is the default and exact; bf16 (opt-in: bfloat16 convolutions, as a GPU runs them)
keeps activations within 1e-2 of f32, dream steps pointing the same way and real classifiers' answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxdream as jd
from jaxdream.darknet.model import model_from_bytes
from jaxdream.darknet.weights import random_weights_bytes
from jaxdream.dream import nightmare
from jaxdream.errors import OptionError
from jaxdream.ops import PRECISION_ENV, conv, default_precision


def test_bf16_activations_stay_within_one_percent(darknet_cfg, shared):
    """Relative to the norm of Darknet's float32 activations (a single element's max-abs error reaches 1.06 % at
    layer 17: measured, benchmarks/NOTES.md)."""
    cfg = darknet_cfg("vgg-conv")
    data = random_weights_bytes(cfg, 1001)
    d = np.load(shared / "golden" / "vgg-conv_fwd_67x53.npz")
    x = d["input"].transpose(1, 2, 0)[None]
    out = model_from_bytes(cfg, data).forward(x, (4, 10, 17), precision="bf16")
    for layer in (4, 10, 17):
        ref = d[f"layer_{layer}"]
        got = np.asarray(out[layer])[0].transpose(2, 0, 1)
        assert got.dtype == np.float32
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert 1e-4 < rel < 1e-2, (layer, rel)  # really bf16 (not exact), and still close


def test_bf16_convolutions_return_bf16_results():
    """What a GPU computes: bf16 operands, float32 accumulation, the result rounded to bf16 (not a float32
    convolution in disguise, which XLA:GPU makes of bf16 operands with a float32 result)."""
    x = np.random.default_rng(0).standard_normal((1, 9, 9, 32)).astype(np.float32)
    kernel = np.random.default_rng(1).standard_normal((3, 3, 32, 16)).astype(np.float32)
    got = np.asarray(jax.jit(lambda a, b: conv(a, b, (1, 1), ((1, 1), (1, 1)), precision="bf16"))(x, kernel))
    operands = [np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64) for a in (x, kernel)]
    exact = np.zeros((1, 9, 9, 16))
    padded = np.pad(operands[0], ((0, 0), (1, 1), (1, 1), (0, 0)))
    for dy in range(3):
        for dx in range(3):
            exact += padded[:, dy : dy + 9, dx : dx + 9] @ operands[1][dy, dx]
    rounded = np.asarray(jnp.asarray(exact, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))
    assert np.mean(got == rounded) > 0.99  # a few sums sit on a rounding tie's edge in float32 accumulation
    assert np.abs(got - rounded).max() <= np.abs(rounded).max() * 2.0**-8


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert default_precision() == "f32"
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(OptionError, match="JAXDREAM_PRECISION='fp8': use one of f32, tf32, bf16"):
        default_precision()
    with pytest.raises(OptionError, match="--precision 'fp8': use one of f32, tf32, bf16"):
        jd.DreamConfig(layer=1, precision="fp8")


def test_the_environment_sets_the_default_when_a_config_is_built(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    config = jd.DreamConfig(layer=1)
    monkeypatch.setenv(PRECISION_ENV, "f32")
    assert config.precision == "bf16"  # read once, when built: never while a program is traced
    assert jd.DreamConfig(layer=1).precision == "f32"


def test_bf16_dream_steps_point_where_f32_steps_do(tiny_darknet, shared):
    """One unjittered step on a real network: the bf16 update's direction agrees with f32's (cosine > 0.9).

    Not closer: the step is chaotic in its input. Rounding only the input image to bf16 and staying in f32 already
    changes the update by ~10 % on average (cosine 0.991); bf16 measures 0.963 (benchmarks/NOTES.md).
    """
    x = jd.load_image(shared / "data" / "images" / "scream.jpg")
    f32 = nightmare(tiny_darknet, x, 10, iters=1, jitter=False, precision="f32")[0, 0] - x
    bf16 = nightmare(tiny_darknet, x, 10, iters=1, jitter=False, precision="bf16")[0, 0] - x
    cosine = (f32 * bf16).sum() / np.sqrt((f32 * f32).sum() * (bf16 * bf16).sum())
    assert 0.9 < cosine < 0.9999


def test_bf16_keeps_a_real_classifiers_answers(mobilenet, shared):
    """The real MobileNet in bf16: logits move by up to ~7 % of the largest (a narrow net, measured 1.15 of 17), the
    top-3 classes of every photo stay, and so does every clear winner; back in f32, exactly the f32 logits."""
    photos = []
    for path in sorted((shared / "data" / "images").glob("*.jpg")):
        with Image.open(path) as im:
            photos.append(np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0)
    photos = np.stack(photos)
    f32 = np.asarray(mobilenet.logits(photos, precision="f32"))
    bf16 = np.asarray(mobilenet.logits(photos, precision="bf16"))
    assert 1e-4 < np.abs(bf16 - f32).max() < 0.1 * np.abs(f32).max()
    top3 = lambda logits: [set(row) for row in np.argsort(-logits)[:, :3].tolist()]
    assert top3(bf16) == top3(f32)
    leads = np.diff(np.sort(f32)[:, -2:], axis=1)[:, 0] > 0.5  # photos whose f32 winner is clear
    assert leads.sum() >= 4
    np.testing.assert_array_equal(bf16.argmax(1)[leads], f32.argmax(1)[leads])
    np.testing.assert_array_equal(np.asarray(mobilenet.logits(photos, precision="f32")), f32)
