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
