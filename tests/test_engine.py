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


def _steps(seen) -> int:
    return sum(name == "jit(dream_step)" for name in seen.compiles)


def _rows(*pairs: tuple[int, int]) -> np.ndarray:
    return np.array([[layer, octave, 3 - k, k - 2, k % 2] for k, (layer, octave) in enumerate(pairs)], np.int32)


def test_a_round_compiles_one_program_per_branch_it_meets(small_vgg, program_events):
    """Eight iterations over three (layer, octave) pairs: three step programs, each compiled once, whatever the
    number of iterations; a replayed schedule draws nothing, so nothing else compiles."""
    x = _image(11)[:36, :44]  # a size no other test compiles
    schedule = _rows((3, 0), (4, 1), (3, 0), (5, 0), (4, 1), (4, 1), (3, 0), (5, 0))
    with program_events() as seen:
        engine.dream(small_vgg, as_batch(x, images=True), core.DreamConfig(layer=4, layer_range=3, iters=8,
                                                                            octaves=2),
                     engine.Run(rate=0.05, aux=np.float32(1.0), schedule=schedule))
    assert len(seen.compiles) == 3 and _steps(seen) == 3, seen.compiles


def test_another_range_and_octave_count_reuse_the_shared_branches(small_vgg, program_events):
    """A branch is a (layer, view size) of an image size: a later run with another range, octave count and number
    of iterations compiles only the branches it has not met."""
    x = as_batch(_image(12)[:34, :46], images=True)
    run = lambda schedule: engine.Run(rate=0.05, aux=np.float32(1.0), schedule=schedule)
    engine.dream(small_vgg, x, core.DreamConfig(layer=4, layer_range=3, iters=3, octaves=2),
                 run(_rows((3, 0), (4, 1), (5, 0))))
    with program_events() as seen:
        out = engine.dream(small_vgg, x, core.DreamConfig(layer=4, iters=4, octaves=3),
                           run(_rows((4, 1), (4, 2), (4, 1), (4, 0))))
    assert _steps(seen) == 2 and len(seen.compiles) == 2, seen.compiles  # (4, 2) and (4, 0) are new
    assert np.isfinite(out).all()


def test_annealed_rates_are_the_float32_rates_the_compiled_loop_computed():
    """The host computes each iteration's annealed rate; it must be the very number XLA computed inside the old
    fused loop (rate * (1 - i / iters)), or lucid mixes drift by an ulp."""
    from jax import lax

    for iters, rate in ((6, 0.02), (7, 0.013), (40, 0.04), (13, 0.05)):
        rate32 = np.float32(rate)

        def in_loop(r, iters=iters):
            return lax.fori_loop(0, iters, lambda i, acc: acc.at[i].set(r * (1.0 - i / iters)),
                                 jax.numpy.zeros(iters))

        expected = np.asarray(jax.jit(in_loop)(rate32))
        config = core.DreamConfig(layer=1, iters=iters, anneal=True)
        np.testing.assert_array_equal(config.step_rates(rate), expected)
    assert (core.DreamConfig(layer=1, iters=5).step_rates(0.04) == np.float32(0.04)).all()


def test_a_long_run_compiles_the_fused_round_and_it_gives_the_bytes_of_the_branches(small_vgg, monkeypatch,
                                                                                     program_events):
    """Past the break-even the fused round (one lax.switch over the branches) compiles in the background and the
    later runs use it; every round must be byte for byte what the branches alone give."""
    import time

    x = as_batch(_image(13)[:38, :42], images=True)
    config = core.DreamConfig(layer=3, layer_range=2, iters=4, octaves=2)
    run = engine.Run(rate=0.05, aux=np.float32(1.0), rounds=3, zoom=1.1, seed=5)
    fused = lambda: [p for p in engine.program_cache().info() if p.name == "dream_round" and "38" in p.args]
    monkeypatch.setattr(engine, "FUSED_PAYS_AFTER", float("inf"))  # never worth it: the branches alone
    branches_only = engine.dream(small_vgg, x, config, run)
    assert not fused()
    monkeypatch.setattr(engine, "FUSED_PAYS_AFTER", 0.0)  # always worth it
    np.testing.assert_array_equal(engine.dream(small_vgg, x, config, run), branches_only)
    deadline = time.monotonic() + 300
    while not fused() and time.monotonic() < deadline:  # it compiles in the background
        time.sleep(0.1)
    calls = fused()[0].calls
    with program_events() as seen:
        again = engine.dream(small_vgg, x, config, run)  # the fused round from the first round on
    assert seen.compiles == [] and fused()[0].calls > calls
    np.testing.assert_array_equal(again, branches_only)


def test_the_schedule_program_is_shared_by_configs_that_draw_alike(small_vgg, program_events):
    """The schedule depends on the layers, iterations, octaves, jitter and settling only: another objective, norm
    or precision draws with the same program (it is compiled before any branch, so it is on every cold start)."""
    config = core.DreamConfig(layer=4, layer_range=3, iters=7, octaves=3)
    first = engine.drawn_schedule(config, 1, 0)
    other = core.DreamConfig(layer=4, layer_range=3, iters=7, octaves=3, objective="l2", norm="mean_abs")
    with program_events() as seen:
        again = engine.drawn_schedule(other, 1, 0)
    assert seen.compiles == []
    np.testing.assert_array_equal(again, first)
