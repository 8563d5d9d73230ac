"""Each value preset resizes photos the way its ecosystem does, checked against Pillow (an independent resizer)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxdream.image import ecosystem_resize, load_image, short_side_crop, smooth_resize


def _pillow(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's antialiased bilinear resize, channel by channel in float (no 8-bit rounding)."""
    return np.stack([np.asarray(Image.fromarray(x[..., c], "F").resize((width, height), Image.BILINEAR))
                     for c in range(3)], -1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from jaxdream.weights import SAMPLE_IMAGE

    return load_image(SAMPLE_IMAGE)  # 768x576


def test_smooth_resize_is_pillows_bilinear(photo):
    ours = np.asarray(smooth_resize(photo[None], 224, 224))[0]
    reference = _pillow(photo, 224, 224)
    assert np.abs(ours - reference).mean() < 2e-3
    assert np.abs(ours - reference).max() < 0.05  # borders: the two treat the edge taps slightly differently


def test_the_torch_preset_is_resize_256_then_centre_crop_224(photo):
    ours = np.asarray(short_side_crop(photo[None], 224, 224))[0]
    resized = _pillow(photo, 341, 256)  # torchvision Resize(256): the short side 576 -> 256, 768 -> int(341.33)
    top, left = round((256 - 224) / 2), round((341 - 224) / 2)
    reference = resized[top:top + 224, left:left + 224]
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - reference).mean() < 2e-3


def test_presets_choose_their_ecosystems_resize(photo):
    x = photo[None]
    for preset in ("caffe", "tf", "raw"):
        np.testing.assert_array_equal(np.asarray(ecosystem_resize(x, 224, 224, preset)),
                                      np.asarray(smooth_resize(x, 224, 224)))
    np.testing.assert_array_equal(np.asarray(ecosystem_resize(x, 224, 224, "torch")),
                                  np.asarray(short_side_crop(x, 224, 224)))


@pytest.mark.parametrize(("size", "to"), [((236, 236), (224, 224)), ((224, 300), (256, 224)), ((7, 5), (30, 41)),
                                          ((1, 9), (3, 1)), ((577, 333), (224, 224)), ((40, 40), (40, 17))])
def test_banded_resize_equals_jax_image_resize_and_its_gradient(size, to):
    """The banded products compute jax.image.resize's antialiased bilinear map, values and gradient (against it in
    float64; float32 sample positions alone move a weight by up to ~2e-5 at 577 px, jax's own float32 resize too)."""
    import jax

    rng = np.random.default_rng(sum(size) + sum(to))
    x = rng.random((2, *size, 3), np.float32)
    dy = rng.standard_normal((2, *to, 3)).astype(np.float32)
    ours, ours_vjp = jax.vjp(lambda z: smooth_resize(z, *to), x)
    with jax.enable_x64(True):
        theirs, theirs_vjp = jax.vjp(lambda z: jax.image.resize(z, (2, *to, 3), "linear", antialias=True),
                                     x.astype(np.float64))
        theirs, their_dx = np.asarray(theirs), np.asarray(theirs_vjp(dy.astype(np.float64))[0])
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=5e-5)
    np.testing.assert_allclose(np.asarray(ours_vjp(dy)[0]), their_dx, rtol=1e-4, atol=1e-4)
