"""Canvases (dream/canvas.py): images of several sizes through one set of programs, each getting the values of
its own size's programs. References: the static per-size operations (themselves pinned by the golden vectors),
float64 NumPy sums, and the per-size dream."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream import image as I
from jaxdream.errors import OptionError


def _canvas(x: np.ndarray, shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    out = np.full(shape, fill, np.float32)
    out[: x.shape[0], : x.shape[1]] = x
    return out


@pytest.mark.parametrize(("size", "out", "canvas", "out_canvas"), [
    ((20, 28), (15, 21), (30, 32), (22, 24)), ((17, 9), (40, 33), (20, 12), (41, 40)), ((1, 7), (5, 1), (3, 9), (6, 4)),
    ((6, 6), (6, 6), (8, 7), (8, 7)),
])
def test_resize_shift_and_flip_with_runtime_bounds_are_the_static_ones_bit_for_bit(size, out, canvas, out_canvas):
    rng = np.random.default_rng(0)
    x = rng.random((*size, 3), dtype=np.float32)
    on = _canvas(x, (*canvas, 3), fill=7.0)  # whatever lies beyond the image is never read
    valid_in, valid_out = jnp.array(size), jnp.array(out)
    resized = jax.jit(lambda a, i, o: I.darknet_resize(a, *out_canvas, (i, o)))(on, valid_in, valid_out)
    assert np.array_equal(np.asarray(resized)[: out[0], : out[1]], np.asarray(I.darknet_resize(x, *out)))
    assert not np.asarray(resized)[out[0]:].any() and not np.asarray(resized)[:, out[1]:].any()
    for dx, dy in ((3, -2), (-8, 7), (0, 0)):
        shifted = jax.jit(lambda a, v, dx=dx, dy=dy: I.shift(a, dx, dy, v))(on, valid_in)
        assert np.array_equal(np.asarray(shifted)[: size[0], : size[1]], np.asarray(I.shift(x, dx, dy)))
    for flip in (True, False):
        flipped = np.asarray(I.flip_if(jnp.asarray(on), flip, jnp.int32(size[1])))
        assert np.array_equal(flipped[: size[0], : size[1]], np.asarray(I.flip_if(x, flip)))
        assert not flipped[:, size[1]:].any()


def test_region_means_alone_and_on_a_canvas_match_float64():
    from jaxdream.objectives import region_mean
    from jaxdream.ops import region_mask

    rng = np.random.default_rng(1)
    alone = jax.jit(lambda a: region_mean(a, None))
    on_canvas = jax.jit(lambda a, v: region_mean(a, region_mask(v[None], *a.shape[:2])[0]))
    for size, canvas, channels in (((61, 81), (80, 100), 32), ((120, 160), (160, 200), 3), ((7, 9), (10, 13), 256)):
        for _ in range(5):
            x = rng.standard_normal((*size, channels)).astype(np.float32)
            exact = x.astype(np.float64).mean()
            for mean in (alone(x), on_canvas(_canvas(x, (*canvas, channels), fill=3.0), jnp.array(size))):
                assert abs(float(mean) - exact) <= 1e-6 * np.abs(x).mean()


CFG = """[net]
width=32
height=32
channels=3
[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky
[maxpool]
size=2
stride=1
[convolutional]
filters=8
size=3
stride=1
pad=1
activation=leaky
[shortcut]
from=-2
activation=linear
[route]
layers=-1,-2
[maxpool]
size=3
stride=2
[upsample]
stride=2
[convolutional]
filters=4
size=1
stride=1
pad=0
activation=linear
"""


@pytest.fixture(scope="module")
def every_kind():
    """A network with each layer kind a canvas takes: strided conv, Darknet's odd max-pools, shortcut, upsample,
    route (random weights)."""
    from conftest import random_darknet

    return random_darknet(CFG, "every-kind", 3)


def test_the_network_on_a_canvas_gives_each_image_its_own_sizes_activations_and_gradient(every_kind):
    model, layer = every_kind, 7
    rng = np.random.default_rng(2)
    sizes, canvas = [(21, 30), (30, 17), (32, 32)], (32, 34)
    images = [rng.random((*s, 3), dtype=np.float32) for s in sizes]
    valid = np.array([[s, *((h, w) for h, w, _ in model.layer_output_shapes(*s, layer))] for s in sizes], np.int32)
    batch = np.stack([_canvas(x, (*canvas, 3), fill=0.0) for x in images])

    def on_canvas(x):
        return model.apply_on_canvas(model.params, x, (layer,), valid)[layer]

    out, pull = jax.vjp(on_canvas, batch)
    grads = pull(jnp.sign(out))[0]
    for i, x in enumerate(images):
        alone, pull_alone = jax.vjp(lambda v: model.apply(model.params, v, (layer,))[layer], x[None])
        h, w = alone.shape[1:3]
        np.testing.assert_allclose(out[i, :h, :w], alone[0], rtol=1e-5, atol=1e-5)
        assert not np.asarray(out[i, h:]).any() and not np.asarray(out[i, :, w:]).any()
        np.testing.assert_allclose(grads[i, : x.shape[0], : x.shape[1]], pull_alone(jnp.sign(alone))[0][0],
                                   rtol=1e-5, atol=1e-5)


def test_a_canvas_dream_gives_each_size_its_own_dream(tiny_darknet):
    """To the last bits of the convolution library (XLA:CPU's kernels round the end of odd-sized outputs their own
    way; every resize, shift, flip, mask and sum is exact): without normalisation that is all; with Darknet's
    normalisation a dream amplifies such a bit in a few pixels."""
    from jaxdream import nightmare
    from jaxdream.dream.canvas import on_canvas

    rng = np.random.default_rng(3)
    sizes = [(64, 80), (76, 100), (80, 60)]
    images = [rng.random((*s, 3), dtype=np.float32) for s in sizes]
    batch = on_canvas(images, (80, 100))
    for options, exact in (({"norm": False, "octaves": 2}, True), ({"layer_range": 3}, False)):
        dreamed = nightmare(tiny_darknet, batch, 9, iters=4, sizes=np.array(sizes), **options)[-1]
        for i, ((h, w), x) in enumerate(zip(sizes, images, strict=True)):
            alone = nightmare(tiny_darknet, x, 9, iters=4, **options)[-1, 0]
            assert not dreamed[i, h:].any() and not dreamed[i, :, w:].any()
            if exact:  # bit for bit here; a bound all the same, as convolution kernels vary between CPUs
                assert np.abs(dreamed[i, :h, :w] - alone).max() <= 1e-5
            else:
                assert np.abs(dreamed[i, :h, :w] - alone).mean() < 1e-3
                assert (I.to_uint8(dreamed[i, :h, :w]) != I.to_uint8(alone)).mean() < 0.05


def test_canvas_plans_group_sizes_within_the_waste_bound_whatever_their_order():
    from jaxdream.dream.canvas import CANVAS_WASTE, plan_canvases

    folder = [(120, 160), (120, 160), (150, 200), (160, 120), (132, 176), (144, 192)]
    assert set(plan_canvases(folder).values()) == {(160, 200)}  # the first-image benchmark's five sizes: one
    rng = np.random.default_rng(4)
    sizes = [tuple(int(v) for v in rng.integers(16, 400, 2)) for _ in range(60)]
    plan = plan_canvases(sizes)
    assert plan == plan_canvases(list(reversed(sizes)) * 2)
    for (h, w), (ch, cw) in plan.items():
        assert ch >= h and cw >= w and ch * cw <= CANVAS_WASTE * h * w
    assert len(set(plan.values())) < len(set(sizes))


def test_what_a_canvas_cannot_take_is_refused_with_the_reason(tiny_darknet, every_kind):
    from jaxdream import nightmare
    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.darknet.model import DarknetModel
    from jaxdream.dream import DreamConfig
    from jaxdream.dream.canvas import canvas_problem

    batch, sizes = np.zeros((2, 40, 40, 3), np.float32), np.array([[40, 40], [30, 36]])
    with pytest.raises(OptionError, match="zoom or rotate"):
        nightmare(tiny_darknet, batch, 5, rounds=2, zoom=0.9, sizes=sizes)
    with pytest.raises(OptionError, match="sizes must be between"):
        nightmare(tiny_darknet, batch, 5, sizes=np.array([[40, 40], [41, 36]]))
    assert "guide" in canvas_problem(every_kind, DreamConfig(layer=2, objective="guide"))
    pooled = parse_cfg(CFG + "[avgpool]\n", "pooled")
    assert "layers up to 8" in canvas_problem(DarknetModel("pooled", pooled, {}), DreamConfig(layer=8))
    assert canvas_problem(every_kind, DreamConfig(layer=7)) is None


def test_exact_sizes_is_a_nightmare_option_only():
    from jaxdream.batch import make_job

    assert make_job("nightmare", "m", {"layer": 3, "exact_sizes": True}, 0).options["exact_sizes"]
    with pytest.raises(OptionError, match="exact-sizes"):
        make_job("lucid", "m", {"classes": "1", "exact_sizes": True}, 0)
