"""Darknet's image arithmetic inside compiled programs, bit for bit against a NumPy float32 transcription."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxdream as jd
from jaxdream import image as I
from jaxdream.errors import ImageError

f32 = np.float32


def reference_resize(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """golden README Q11 on (H, W, C), one float32 operation at a time, each product rounded before the add."""
    in_h, in_w = im.shape[:2]
    part = np.zeros((in_h, w, im.shape[2]), f32)
    w_scale = f32(in_w - 1) / f32(w - 1)
    for c in range(w):
        if c == w - 1 or in_w == 1:
            part[:, c] = im[:, in_w - 1]
        else:
            sx = f32(c) * w_scale
            ix = int(sx)
            dx = sx - f32(ix)
            part[:, c] = (f32(1) - dx) * im[:, ix] + dx * im[:, ix + 1]
    out = np.zeros((h, w, im.shape[2]), f32)
    h_scale = f32(in_h - 1) / f32(h - 1)
    for r in range(h):
        sy = f32(r) * h_scale
        iy = int(sy)
        dy = sy - f32(iy)
        out[r] = (f32(1) - dy) * part[iy]
        if r != h - 1 and in_h != 1:
            out[r] += dy * part[iy + 1]
    return out


@pytest.mark.parametrize(("src", "dst"), [((53, 67), (22, 28)), ((53, 67), (29, 37)), ((22, 28), (53, 67)),
                                          ((65, 67), (48, 50)), ((448, 352), (336, 264))])
def test_compiled_resize_is_bit_exact(src, dst):
    x = np.random.default_rng(0).random((*src, 3), dtype=np.float32)
    got = np.asarray(jax.jit(lambda a: I.darknet_resize(a, *dst))(jnp.asarray(x)))
    np.testing.assert_array_equal(got, reference_resize(x, *dst))


def test_rounded_is_an_identity_that_keeps_nan():
    x = jnp.asarray([0.5, -0.0, jnp.inf, jnp.nan])
    np.testing.assert_array_equal(np.asarray(jax.jit(I.rounded)(x)), np.asarray(x))


# Loading and saving images of unusual kinds


def test_a_float_tiff_loads_with_its_values(tmp_path):
    values = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    loaded = jd.load_image(tmp_path / "f.tif")
    assert loaded.shape == (12, 10, 3)
    np.testing.assert_allclose(loaded[..., 0], np.round(values * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8)])
def test_saving_the_wrong_shape_is_refused(tmp_path, shape):
    with pytest.raises(ImageError, match=r"float \(H, W, 3\) RGB"):
        jd.save_image(tmp_path / "x.png", np.zeros(shape, np.float32))


def test_a_fifo_named_like_an_image_is_refused_without_waiting(tmp_path):
    import os

    from jaxdream.errors import ImageError
    from jaxdream.image import image_size, load_image

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    for read in (load_image, image_size):
        with pytest.raises(ImageError, match="must be a regular file, not a"):
            read(fifo)
