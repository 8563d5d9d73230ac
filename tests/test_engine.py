"""The dream engine and its seams: a new transform or parameterisation is one class and one registry entry, and the
step assembled from them computes what the named parts say."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pytest

from jaxdream.compiled.placement import as_batch
from jaxdream.dream import core, engine, seams


@dataclass(frozen=True)
class _Still:
    """A transform that changes nothing (whatever the schedule row draws)."""

    def before(self, image, row):
        return image

    def inside(self, view, row):
        return view

    def undo_before(self, grad, row):
        return grad


@dataclass(frozen=True)
class _Pixels:
    """Pixels viewed at their own size only."""

    def sizes(self, height, width, count):
        return [(height, width)] * count

    def view(self, image, size):
        return image

    def back(self, grad, full):
        return grad


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(seams.TRANSFORMS, "still", _Still())
    monkeypatch.setitem(seams.PARAMETERISATIONS, "pixels", _Pixels())


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, (40, 48, 3)).astype(np.float32)


def test_a_registered_transform_and_parameterisation_run_through_the_engine(small_vgg, registered):
    """With a transform that moves nothing and pixels at their own size, a drawn round (random shifts, flips and
    octaves in the schedule) must equal the unjittered round at one octave."""
    x = as_batch(_image(1), images=True)
    still = core.DreamConfig(layer=4, iters=3, octaves=3, transform="still", param="pixels")
    plain = core.DreamConfig(layer=4, iters=3, octaves=1, jitter=False)
    run = engine.Run(rate=0.05, aux=np.float32(1.0), seed=7)
    np.testing.assert_allclose(engine.dream(small_vgg, x, still, run), engine.dream(small_vgg, x, plain, run),
                               atol=1e-6)


def test_the_darknet_parts_are_darknets_shift_resize_and_flip():
    x = jax.numpy.asarray(_image(2))
    row = jax.numpy.asarray([0, 1, 3, -2, 1], jax.numpy.int32)
    jitter, octaves = seams.TRANSFORMS["darknet-jitter"], seams.PARAMETERISATIONS["darknet-octaves"]
    shifted = np.asarray(jitter.before(x, row))
    h, w = x.shape[:2]
    ys, xs = np.clip(np.arange(h) - 2, 0, h - 1), np.clip(np.arange(w) + 3, 0, w - 1)  # out[j, i] = x[j+dy, i+dx]
    np.testing.assert_array_equal(shifted, np.asarray(x)[ys][:, xs])
    assert octaves.sizes(h, w, 2) == [(40, 48), (30, 36)]
    view = np.asarray(jitter.inside(octaves.view(shifted, (30, 36)), row))
    np.testing.assert_array_equal(view, np.asarray(octaves.view(shifted, (30, 36)))[:, ::-1])


def test_an_unknown_part_is_refused_in_one_line():
    from jaxdream.errors import OptionError

    with pytest.raises(OptionError, match="transform 'twirl': use one of darknet-jitter"):
        core.DreamConfig(layer=1, transform="twirl")
    with pytest.raises(OptionError, match="param 'fft'"):
        core.DreamConfig(layer=1, param="fft")


def test_a_config_settles_its_precision_once(monkeypatch):
    monkeypatch.setenv("JAXDREAM_PRECISION", "bf16")
    assert core.DreamConfig(layer=1).precision == "bf16"
    assert core.DreamConfig(layer=1, precision="tf32").precision == "tf32"
