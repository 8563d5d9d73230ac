"""The nightmare engine: batches, determinism, rounds, reconstruction, bad options."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdream as jd
from jaxdream import dream
from jaxdream import image as I
from jaxdream.darknet.weights import write_weights
from jaxdream.dream import core
from jaxdream.errors import NumericError, OptionError, WeightsError
from jaxdream.model import load_model


def _image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_batch_equals_images_one_by_one(small_vgg):
    a, b = _image(1), _image(2)
    batch = dream.nightmare(small_vgg, np.stack([a, b]), 4, iters=3, layer_range=3, octaves=2, seed=11)
    alone = dream.nightmare(small_vgg, b, 4, iters=3, layer_range=3, octaves=2, seed=11)
    np.testing.assert_allclose(batch[0, 1], alone[0, 0], atol=2e-5)


def test_same_seed_same_image_other_seed_other_image(small_vgg):
    x = _image(3)
    one = dream.nightmare(small_vgg, x, 4, iters=4, seed=1)
    again = dream.nightmare(small_vgg, x, 4, iters=4, seed=1)
    other = dream.nightmare(small_vgg, x, 4, iters=4, seed=2)
    np.testing.assert_array_equal(one, again)
    assert np.abs(one - other).max() > 1e-3


def test_rounds_zoom_and_rotate_change_every_round(small_vgg):
    frames = dream.nightmare(small_vgg, _image(4), 4, rounds=3, iters=2, zoom=1.1, rotate=0.1, seed=0)
    assert frames.shape == (3, 1, 40, 48, 3)
    assert np.abs(frames[1] - frames[0]).mean() > 1e-3 and np.abs(frames[2] - frames[1]).mean() > 1e-3
    assert frames.min() >= 0 and frames.max() <= 1


def test_zero_iterations_leave_the_image_to_zoom_alone(small_vgg):
    """Darknet's ``-iters 0`` runs no step: each round only zooms/rotates the saved image for the next one."""
    x = _image(8)
    frames = dream.nightmare(small_vgg, x, 4, rounds=2, iters=0, zoom=2.0)
    np.testing.assert_array_equal(frames[0, 0], x)
    np.testing.assert_array_equal(frames[1, 0], np.asarray(I.zoom(jnp.asarray(x), 2.0)))
    np.testing.assert_array_equal(dream.deepdream(small_vgg, x, 4, iters=0)[0, 0], x)


def test_zoom_matches_darknet_crop_then_resize():
    x = jnp.asarray(_image(5, 20, 30))
    zoomed = np.asarray(I.zoom(x, 2.0))  # crop(im, -15, -10, 60, 40) edge-clamped, then resize 60x40 -> 30x20
    rows = np.clip(np.arange(40) - 10, 0, 19)
    cols = np.clip(np.arange(60) - 15, 0, 29)
    crop = np.asarray(x)[rows][:, cols]
    np.testing.assert_array_equal(zoomed, np.asarray(I.darknet_resize(jnp.asarray(crop), 20, 30)))


def _total_variation(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=-2)).sum() + np.abs(np.diff(x, axis=-3)).sum())


def test_reconstruction_starts_at_its_own_target_and_smooths(small_vgg):
    """Darknet's -reconstruct (this commit) targets the image's own features from the image itself: the feature
    gradient is zero, so with lambda 0 nothing moves; the smoothing term lowers the total variation."""
    x = _image(6, 224, 224)
    still = dream.reconstruct(small_vgg, x, 5, iters=3, rate=0.04, lam=0.0)
    np.testing.assert_allclose(still[0, 0], x, atol=1e-5)
    smoothed = dream.reconstruct(small_vgg, x, 5, iters=3, rate=0.04, lam=0.05)
    assert _total_variation(smoothed[0, 0]) < 0.98 * _total_variation(x)


def _darknet_smooth(recon: np.ndarray, update: np.ndarray, lam: float, num: int) -> np.ndarray:
    """Darknet's ``smooth`` (nightmare.c), its loops transcribed, in float64, on (H, W, C)."""
    out = update.astype(np.float64).copy()
    h, w, _ = recon.shape
    for j in range(h):
        for i in range(w):
            for jj in range(max(j - num, 0), min(j + num, h - 1) + 1):
                for ii in range(max(i - num, 0), min(i + num, w - 1) + 1):
                    out[j, i] += lam * (recon[jj, ii].astype(np.float64) - recon[j, i])
    return out


@pytest.mark.parametrize("num", [1, 2])
def test_smoothing_matches_darknets_loops(num):
    recon, update = _image(9, 7, 9), _image(10, 7, 9) - 0.5
    ours = core.smooth(jnp.asarray(update), jnp.asarray(recon), 0.05, num)
    np.testing.assert_allclose(ours, _darknet_smooth(recon, update, 0.05, num), atol=2e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": 40}, "layer 40 is out of range"),
        ({"layer": 4, "rate": float("nan")}, "--rate nan is not a finite number"),
        ({"layer": 4, "rate": -0.1}, "--rate -0.1 must be at least 0"),
        ({"layer": 4, "zoom": 0.0}, "--zoom 0.0 must be greater than 0"),
        ({"layer": 17, "octaves": 20}, "too small"),
        ({"layer": 1, "layer_range": 5}, "out of range"),
    ],
)
def test_bad_options_are_refused(small_vgg, kwargs, message):
    with pytest.raises(OptionError, match=message):
        dream.nightmare(small_vgg, _image(7), iters=1, **kwargs)


def test_schedule_draws_darknet_ranges_and_a_still_tail():
    config = dream.DreamConfig(layer=10, layer_range=3, iters=40, octaves=4, settle=0.25)
    rows = np.asarray(dream.draw_schedule(dream.round_key(0, 0), config))
    assert rows.shape == (40, 5)
    assert set(rows[:, 0]) == {9, 10, 11}  # layer + rand() % range - range / 2
    moving, still = rows[:30], rows[30:]
    assert set(moving[:, 1]) == {0, 1, 2, 3} and set(moving[:, 4]) == {0, 1}
    assert moving[:, 2:4].min() == -8 and moving[:, 2:4].max() == 7  # rand() % 16 - 8
    np.testing.assert_array_equal(still[:, 1:], 0)  # no octave, shift or flip in the settling tail


def test_a_round_in_chunks_gives_the_bytes_of_one_call(small_vgg, monkeypatch):
    """Long rounds run as several compiled calls (so Ctrl-C is seen between them); how they are cut must not
    change a bit: one iteration per call against one iteration and then the rest of the round in one call."""
    from jaxdream.dream import engine

    x = np.stack([_image(11), _image(12)])
    options = {"iters": 5, "layer_range": 3, "octaves": 2, "seed": 3, "rounds": 2, "zoom": 1.1}
    monkeypatch.setattr(engine, "CHUNK_SECONDS", 1e-9)
    one_by_one = dream.nightmare(small_vgg, x, 4, **options)
    recon_one_by_one = dream.reconstruct(small_vgg, x, 5, iters=4, lam=0.05)
    monkeypatch.setattr(engine, "CHUNK_SECONDS", 1e9)
    np.testing.assert_array_equal(one_by_one, dream.nightmare(small_vgg, x, 4, **options))
    np.testing.assert_array_equal(recon_one_by_one, dream.reconstruct(small_vgg, x, 5, iters=4, lam=0.05))


@pytest.mark.parametrize(("make", "message"), [
    (lambda x: x * 255, r"values in \[0, 1\], these range over \[0\.0\d*, 25\d\.\d*\]"),
    (lambda x: x - 0.5, r"values in \[0, 1\], these range over \[-0\.4"),
    (lambda x: jnp.asarray(x) * 255, r"values in \[0, 1\]"),
    (lambda x: jnp.asarray(x) - 0.5, r"values in \[0, 1\]"),
    (lambda x: jnp.asarray(x).at[3, 4, 1].set(jnp.nan), "NaN or infinite"),
])
def test_images_outside_0_1_or_not_finite_are_refused_numpy_or_jax(small_vgg, make, message):
    with pytest.raises(OptionError, match=message):
        dream.nightmare(small_vgg, make(_image(8)), 4, iters=1)


@pytest.mark.process
def test_an_image_on_another_device_is_moved_to_the_programs_device(tmp_path):
    """Two (forced) CPU devices: an input committed to the second dreams as one on the first."""
    import os
    import subprocess
    import sys

    from conftest import process_env

    script = (
        "import numpy as np, jax, jaxdream as jd\n"
        "from jaxdream.darknet.cfg import parse_cfg\n"
        "from jaxdream.darknet.model import model_from_bytes\n"
        "from jaxdream.darknet.weights import random_weights_bytes\n"
        "cfg = parse_cfg('[net]\\nwidth=16\\nheight=16\\nchannels=3\\n[convolutional]\\nfilters=4\\nsize=3\\n"
        "stride=1\\npad=1\\nactivation=leaky\\n', 'c')\n"
        "m = model_from_bytes(cfg, random_weights_bytes(cfg, 1))\n"
        "x = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)\n"
        "other = jax.device_put(x, jax.devices()[1])\n"
        "a, b = jd.nightmare(m, x, 0, iters=1, octaves=1), jd.nightmare(m, other, 0, iters=1, octaves=1)\n"
        "assert np.array_equal(a, b)\n"
        "assert np.array_equal(np.asarray(m.forward(other, 0)[0]), np.asarray(m.forward(x, 0)[0]))\n"
        "print(len(jax.devices()))\n"
    )
    env = process_env(XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
                      JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1] == "2", done.stderr[-2000:]


# NaN, absurd numbers and the wrong kind of image: one clear error or a correct result


def test_nan_never_becomes_a_black_image(tmp_path, small, small_files):
    with pytest.raises(NumericError, match="NaN or infinite"):
        jd.save_image(tmp_path / "x.png", np.full((4, 4, 3), np.nan, np.float32))
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(OptionError, match="NaN or infinite"):
        jd.nightmare(small, np.full((20, 24, 3), np.nan, np.float32), 2, iters=1)
    broken = {k: {n: a.copy() for n, a in v.items()} for k, v in small.params.items()}
    broken["layer_2"]["kernel"][0, 0, 0, 0] = np.inf
    write_weights(tmp_path / "broken.weights", small.cfg, broken)
    with pytest.raises(WeightsError, match="layer_2/kernel has NaN or infinite"):
        load_model(small_files[0], tmp_path / "broken.weights")


def test_a_huge_threshold_on_a_flat_image_leaves_it_alone(small):
    flat = np.full((20, 24, 3), 0.5, np.float32)
    out = jd.nightmare(small, flat, 2, iters=2, thresh=1000.0)
    np.testing.assert_array_equal(out[0, 0], flat)


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((20, 24, 4), np.float32, r"\(H, W, 3\) or \(N, H, W, 3\) RGB"),
    ((20, 24, 1), np.float32, "RGB arrays"),
    ((20, 24, 3), np.uint8, "float arrays with values in"),
])
def test_library_images_of_the_wrong_kind_are_refused(small, shape, dtype, message):
    with pytest.raises(OptionError, match=message):
        jd.nightmare(small, np.zeros(shape, dtype), 2, iters=1)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x: jd.deepdream(m, x, 2, octaves=0), "--octaves 0 must be"),
    (lambda m, x: jd.deepdream(m, x, 2, octaves=-2), "--octaves -2 must be"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, zoom=0.001, rounds=2), "--zoom 0.001 on a 24x20 image"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, zoom=1e6, rounds=2), "--zoom 1000000.0"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, seed=9223372036854775808), "--seed .* from 0 to 4294967295"),
    (lambda m, x: jd.nightmare(m, x, 2, iters=1, rate=float("inf")), "--rate inf is not a finite number"),
])
def test_absurd_numbers_get_one_clear_error(small, call, message):
    with pytest.raises(OptionError, match=message):
        call(small, np.full((20, 24, 3), 0.5, np.float32))
