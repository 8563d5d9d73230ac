"""The other objectives (L2, channel, neuron, guide) and Google-style DeepDream: each raises what it targets."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxdream as jd
from jaxdream.errors import OptionError

LAYER = 10


@pytest.fixture(scope="module")
def tiny(tiny_darknet):
    return tiny_darknet


@pytest.fixture(scope="module")
def photo(shared):
    return jd.load_image(shared / "data" / "images" / "kite.jpg")[::4, ::4].copy()


def _act(model, x):
    return np.asarray(model.forward(x[None], LAYER)[LAYER])[0].astype(np.float64)


@pytest.mark.parametrize("objective", ["channel", "neuron"])
def test_channel_and_neuron_objectives_raise_their_unit(tiny, photo, objective):
    before = _act(tiny, photo)
    after = _act(tiny, jd.nightmare(tiny, photo, LAYER, iters=4, octaves=1, objective=objective, channel=7)[0, 0])
    if objective == "channel":
        gain = after[..., 7].mean() - before[..., 7].mean()
        others = np.delete(after, 7, axis=-1).mean() - np.delete(before, 7, axis=-1).mean()
        assert gain > 0 and gain > 3 * abs(others)
    else:
        h, w = before.shape[:2]
        assert after[h // 2, w // 2, 7] > before[h // 2, w // 2, 7] + 0.5


def test_l2_and_guide_objectives_raise_their_score(tiny, photo, shared):
    l2 = jd.nightmare(tiny, photo, LAYER, iters=4, octaves=1, objective="l2")[0, 0]
    assert np.sum(_act(tiny, l2) ** 2) > 1.2 * np.sum(_act(tiny, photo) ** 2)
    guide = jd.load_image(shared / "data" / "images" / "eagle.jpg")[::4, ::4].copy()
    g = _act(tiny, guide).reshape(-1, 256)

    def score(x):
        features = _act(tiny, x).reshape(-1, 256)
        return (features @ g.T).max(axis=1).sum()  # independent re-computation of the guide score

    guided = jd.nightmare(tiny, photo, LAYER, iters=4, octaves=1, objective="guide", guide=guide)[0, 0]
    assert score(guided) > 1.2 * score(photo)


def test_deepdream_single_step_is_the_mean_abs_normalised_gradient(tiny, photo):
    # Saturated sky gives exactly equal activations, and a max-pool tie may then route the gradient either way
    # depending on the compiled program's rounding (seen: 0.2 % of pixels off by 6e-4 on one CPU): a little noise
    # keeps the comparison about the arithmetic.
    noise = np.random.default_rng(0).uniform(-0.005, 0.005, photo.shape).astype(np.float32)
    photo = photo * np.float32(0.98) + np.float32(0.01) + noise
    rate = 0.01
    out = jd.deepdream(tiny, photo, LAYER, octaves=1, iters=1, rate=rate, jitter=False)[0, 0]

    def l2(img):
        return 0.5 * (tiny.apply(tiny.params, img[None], (LAYER,))[LAYER] ** 2).sum()

    grad = np.asarray(jax.jit(jax.grad(l2))(photo), np.float64)
    expected = np.clip(photo + rate * grad / np.abs(grad).mean(), 0, 1)
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_deepdream_pyramid_carries_detail_to_full_size(tiny, photo):
    out = jd.deepdream(tiny, photo, LAYER, octaves=3, iters=3)
    assert out.shape == (1, 1, *photo.shape)
    assert np.sum(_act(tiny, out[0, 0]) ** 2) > 1.2 * np.sum(_act(tiny, photo) ** 2)


def test_objective_errors(tiny, photo):
    with pytest.raises(OptionError, match=r"--channel 999 is out of range: layer 10 has channels 0 \.\. 255"):
        jd.nightmare(tiny, photo, LAYER, iters=1, objective="channel", channel=999)
    with pytest.raises(OptionError, match="needs a guide image"):
        jd.nightmare(tiny, photo, LAYER, iters=1, objective="guide")
    with pytest.raises(OptionError, match="--objective 'dots': use one of darknet"):
        jd.nightmare(tiny, photo, LAYER, iters=1, objective="dots")
