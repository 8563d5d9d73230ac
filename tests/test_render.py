"""Feature visualisation (jaxdream.visual, the objective algebra): the Fourier parameterisation against NumPy's
irfft2, each transform against a NumPy version, objective values against float64 NumPy and their gradients against
finite differences, independent inits per item, and a real classifier rendered from noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream import objectives as O
from jaxdream.errors import OptionError
from jaxdream.visual import transforms as T
from jaxdream.visual.params import FFT_OUTPUT_SCALE, ImageParam


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize(("height", "width", "decay"), [(32, 32, 1.0), (24, 37, 1.5), (9, 8, 0.0)])
def test_the_fourier_parameterisation_is_numpys_irfft2_of_the_scaled_spectrum(height, width, decay):
    param = ImageParam("fft", height, width, decay, decorrelate=True)
    theta = np.random.default_rng(0).standard_normal(param.shape).astype(np.float32)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    scale = np.sqrt(height * width) / np.maximum(np.hypot(fx, fy), 1.0 / max(height, width)) ** decay
    spectrum = (theta[..., 0].astype(np.float64) + 1j * theta[..., 1]) * scale
    values = np.fft.irfft2(spectrum, s=(height, width)).transpose(1, 2, 0) / FFT_OUTPUT_SCALE
    colour = np.asarray(param.colour, np.float64)
    values = values @ (colour / np.linalg.norm(colour, axis=0).max()).T
    np.testing.assert_allclose(param.to_image(jnp.asarray(theta)), _sigmoid(values), atol=2e-5)


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_starting_from_a_photo_gives_the_photo_back(kind):
    param = ImageParam(kind, 20, 27)
    photo = np.random.default_rng(1).uniform(0.05, 0.95, (20, 27, 3)).astype(np.float32)
    np.testing.assert_allclose(param.to_image(jnp.asarray(param.from_image(photo))), photo, atol=2e-5)


def test_each_item_starts_from_its_own_noise():
    """captum#552: one init copied to every item made 'diverse' images identical."""
    from jaxdream.visual.render import item_keys

    theta = np.asarray(ImageParam("fft", 16, 16).init(item_keys(0, np.arange(3))))
    assert not np.array_equal(theta[0], theta[1]) and not np.array_equal(theta[1], theta[2])


def _bilinear_clamped(image, y, x):
    """NumPy float64 bilinear sampling at (y, x), coordinates clamped to the image."""
    h, w = image.shape[:2]
    y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    return ((1 - fy) * (1 - fx) * image[y0, x0] + (1 - fy) * fx * image[y0, x1] + fy * (1 - fx) * image[y1, x0]
            + fy * fx * image[y1, x1])


def test_transforms_match_numpy():
    rng = np.random.default_rng(2)
    image = rng.random((23, 31, 3)).astype(np.float32)
    np.testing.assert_array_equal(T.pad(image, 5, 0.5), np.pad(image, ((5, 5), (5, 5), (0, 0)), constant_values=0.5))
    np.testing.assert_array_equal(T.crop(image, 3, 7, 10, 12), image[3:13, 7:19])
    key = jax.random.key(3)
    dy, dx = np.asarray(jax.random.randint(key, (2,), 0, 9))
    np.testing.assert_array_equal(T.Jitter(8)(key, image), image[dy : dy + 15, dx : dx + 23])
    for scale, angle in ((1.07, 0.0), (1.0, 0.17), (0.93, -0.3)):
        h, w = image.shape[:2]
        yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
        sy = (np.cos(angle) * yy - np.sin(angle) * xx) / scale + (h - 1) / 2
        sx = (np.sin(angle) * yy + np.cos(angle) * xx) / scale + (w - 1) / 2
        np.testing.assert_allclose(T.affine(image, scale, angle), _bilinear_clamped(image.astype(np.float64), sy, sx),
                                   atol=1e-5)
    np.testing.assert_allclose(T.affine(image, 1.0, 0.0), image, atol=1e-6)
    noisy = np.asarray(T.Noise(0.1)(key, np.zeros((64, 64, 3), np.float32)))
    assert abs(noisy.std() - 0.1) < 0.01 and abs(noisy.mean()) < 0.01
    standard = T.preset("standard")
    assert T.apply(standard, key, image).shape[:2] == T.output_size(standard, 23, 31) == (35, 43)
    scale, rotate = T.Scale(0.9, 1.1), T.Rotate(10.0)  # in a chain, resampled once by the composed map
    s, a = (float(t.draw(jax.random.fold_in(key, i))) for i, t in enumerate((scale, rotate)))
    np.testing.assert_array_equal(T.apply((scale, rotate), key, image), T.affine(image, s, a))
    assert 0.9 <= s <= 1.1 and abs(a) <= np.radians(10.0) and a != 0.0
    with pytest.raises(OptionError, match="crop the image away"):
        T.output_size((T.Jitter(40),), 23, 31)


def test_layer_terms_match_float64_numpy_and_their_gradients_finite_differences():
    rng = np.random.default_rng(4)
    act = rng.standard_normal((5, 6, 4)).astype(np.float32)
    vector = rng.standard_normal(4).astype(np.float32)
    a64, v64 = act.astype(np.float64), vector.astype(np.float64)
    numbers = {"index": np.int32(2), "vector": vector, "x": np.int32(1), "y": np.int32(4)}
    expected = {
        "channel": a64[..., 2].mean(), "layer": (a64**2).mean(), "direction": (a64 @ v64).mean(),
        "direction_cos": ((a64 @ v64) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(v64))).mean(),
        "neuron": a64[4, 1, 2],
    }
    for kind, value in expected.items():
        assert float(O.term_value(kind, jnp.asarray(act), numbers)) == pytest.approx(value, rel=1e-5, abs=1e-6)
        grad = np.asarray(jax.grad(lambda a, k=kind: O.term_value(k, a, numbers))(jnp.asarray(act)))
        eps, probe = 1e-2, [(0, 0, 2), (4, 1, 2), (2, 3, 1)]
        for index in probe:
            up, down = a64.copy(), a64.copy()
            up[index] += eps
            down[index] -= eps
            numeric = (float(O.term_value(kind, jnp.asarray(up, jnp.float32), numbers))
                       - float(O.term_value(kind, jnp.asarray(down, jnp.float32), numbers))) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=2e-2, abs=2e-3), (kind, index)
    batch = rng.standard_normal((3, 4, 4, 5))
    grams = np.einsum("nhwc,nhwd->ncd", batch, batch).reshape(3, -1)
    unit = grams / np.linalg.norm(grams, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert float(O.diversity_value(jnp.asarray(batch, jnp.float32))) == pytest.approx(
        -(similarity.sum() - np.trace(similarity)) / 3, rel=1e-5)


def test_objective_algebra_and_its_text():
    combined = O.channel(9, 3) + 2 * O.neuron(9, 4) - O.layer("conv5")
    assert [(t.kind, t.layer, t.weight) for t in combined.terms] == [
        ("channel", 9, 1.0), ("neuron", 9, 2.0), ("layer", "conv5", -1.0)]
    assert [t.batch for t in O.channel(1, 0).for_item(2).terms] == [t.batch for t in O.channel(1, 0, batch=2).terms]
    assert [t.batch for t in (O.layer(1, batch=0) + O.neuron(1, 0)).terms] == [0, None]
    parsed = O.parse_objective("class:ostrich - 0.5*class:great white shark + fire5/concat_1:12 + neuron:9:1:2:3")
    assert [(t.kind, t.layer, t.index, t.weight, t.at) for t in parsed.terms] == [
        ("class_logit", None, "ostrich", 1.0, None), ("class_logit", None, "great white shark", -0.5, None),
        ("channel", "fire5/concat_1", 12, 1.0, None), ("neuron", 9, 1, 1.0, (2, 3))]
    assert [t.kind for t in O.parse_objective("-layer:9 + diversity:4 + bce:9 + channel:-1:3").terms] == [
        "layer", "diversity", "class_bce", "channel"]
    named = O.parse_objective("neuron:conv/BiasAdd:0:3:1:2 - neuron:conv/BiasAdd:0:3").terms
    assert [(t.layer, t.index, t.at, t.weight) for t in named] == [("conv/BiasAdd:0", 3, (1, 2), 1.0),
                                                                   ("conv/BiasAdd:0", 3, None, -1.0)]
    for bad, message in (("", "empty"), ("neuron:9", "neuron:LAYER"), ("9:x", "not a whole number"),
                         ("ostrich", "not a term"), ("layer:9 + + layer:3", "not a term"),
                         ("layer:9+layer:3", "spaces around"), ("layer:9 -", "a term is missing"),
                         ("1e400*layer:9", "not a finite number"), ("layer:", "needs a layer"),
                         ("class:ostrich,emu", "takes one class"), ("5*3*layer:9", "not a term")):
        with pytest.raises(OptionError, match=message):
            O.parse_objective(bad)
    with pytest.raises(OptionError, match="both x and y"):
        O.neuron(3, 1, x=2)


@pytest.fixture(scope="module")
def small_net():
    from conftest import random_darknet

    return random_darknet("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=6\nsize=3\nstride=1\n"
                          "pad=1\nactivation=leaky\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=5\nsize=3\n"
                          "stride=1\npad=1\nactivation=leaky\n", "render-net", 7)


def test_other_channels_and_weights_compile_nothing_and_items_get_their_own_objective(small_net, program_events):
    from jaxdream import render

    first = render(small_net, O.channel(2, 1).for_item(0) + O.channel(2, 2).for_item(1), size=24, steps=3, batch=2,
                   param="pixel")
    with program_events() as seen:
        again = render(small_net, 3 * O.channel(2, 4).for_item(0) + O.channel(2, 0).for_item(1), size=24, steps=3,
                       batch=2, param="pixel")
    assert "jit(run)" not in seen.compiles  # the render program: compiled by the first call only
    assert not np.allclose(first, again)
    with pytest.raises(OptionError, match=r"channels 0 \.\. 4"):
        render(small_net, O.channel(2, 5), size=24, steps=1)
    with pytest.raises(OptionError, match="batch 2 or more"):
        render(small_net, O.channel(2, 1), size=24, steps=1, diversity=1.0)
    with pytest.raises(OptionError, match="batch of 2 or more"):
        render(small_net, O.channel(2, 1) + O.diversity(2), size=24, steps=1)
    with pytest.raises(OptionError, match="outside layer 2's 12x12 output"):
        render(small_net, O.neuron(2, 1, x=12, y=0), size=24, steps=1, transforms="none")


def test_diversity_separates_items_only_when_their_inits_differ(small_net):
    """From each item's own noise, the diversity term makes the items' Gram matrices less alike than without it;
    from a shared init (every item the same photo) and no random transforms it cannot separate them at all (its
    gradient between equal items is zero), which is why each item draws its own noise."""
    from jaxdream import render

    def gram_similarity(images):
        return -float(O.diversity_value(small_net.apply(small_net.params, jnp.asarray(images), (2,))[2]))

    options = {"size": 24, "steps": 8, "batch": 2, "transforms": "none", "param": "pixel", "lr": 0.2}
    plain = render(small_net, O.layer(2), **options)
    diverse = render(small_net, O.layer(2), diversity=20.0, **options)
    assert gram_similarity(diverse) < gram_similarity(plain) - 1e-3
    photo = np.random.default_rng(5).uniform(0.2, 0.8, (24, 24, 3)).astype(np.float32)
    shared = render(small_net, O.layer(2), diversity=20.0, init=photo, **options)
    np.testing.assert_array_equal(shared[0], shared[1])


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_tiny_darknet_rendered_from_noise_shows_an_ostrich(tiny_darknet, param):
    """The published recipe's check at a short length (64 steps; the 256-step runs are the slow tests')."""
    from jaxdream import render, top_classes

    images = render(tiny_darknet, "class:ostrich", param=param, steps=64)
    assert top_classes(tiny_darknet, images, 1)[0][0]["name"] == "ostrich"


def test_a_keras_classifier_rendered_from_noise_shows_an_ostrich_with_redirected_relus(mobilenet):
    from jaxdream import render, top_classes

    images = render(mobilenet, "class:ostrich", steps=64, redirect=True)
    assert top_classes(mobilenet, images, 1)[0][0]["name"] == "ostrich"


@pytest.mark.slow
@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_256_steps_from_noise_rank_ostrich_first_on_tiny_darknet_and_squeezenet(tiny_darknet, squeezenet, param):
    from jaxdream import render, top_classes

    for model in (tiny_darknet, squeezenet):
        images = render(model, "class:ostrich", param=param, steps=256)
        assert top_classes(model, images, 1)[0][0]["name"].startswith("ostrich"), model.name


def test_the_render_command_writes_one_picture_per_item_and_names_a_bad_objective(monkeypatch, capsys, tmp_path):
    from conftest import cli

    code, out, _ = cli(monkeypatch, capsys, "render", "tiny", "class:ostrich", "--steps", "2", "--size", "48x40",
                       "--batch", "2", "--out", tmp_path, "--quiet")
    assert code == 0, out
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["manifest.jsonl", "tiny_class_ostrich_00.png", "tiny_class_ostrich_01.png"]
    from jaxdream import load_image

    assert load_image(tmp_path / written[1]).shape == (40, 48, 3)
    code, _, err = cli(monkeypatch, capsys, "render", "tiny", "neuron:9", "--out", tmp_path)
    assert code == 1 and any("neuron:LAYER:CHANNEL[:X:Y]" in line for line in err), err
    code, _, err = cli(monkeypatch, capsys, "render", "tiny", "class:ostrichh", "--steps", "1", "--out", tmp_path)
    assert code != 0 and any("unknown class 'ostrichh'" in line for line in err), err
    from jaxdream import save_image

    save_image(tmp_path / "start.png", np.full((30, 40, 3), 0.5, np.float32))
    code, out, _ = cli(monkeypatch, capsys, "render", "tiny", "layer:5", "--steps", "1", "--from",
                       tmp_path / "start.png", "--out", tmp_path / "from", "--quiet")
    assert code == 0, out
    assert load_image(tmp_path / "from" / "tiny_layer_5_00.png").shape == (30, 40, 3)  # the start image's size


def test_an_atlas_compiles_one_program_and_a_resumed_run_writes_the_same_bytes(small_net, tmp_path, program_events):
    from jaxdream.atlas import run_atlas

    options = {"size": 24, "steps": 3, "batch_size": 2}
    with program_events() as seen:
        whole = run_atlas(small_net, 2, list(range(5)), tmp_path / "whole", **options)
    assert seen.compiles.count("jit(run)") == 1  # the render program, once for the three batches
    assert whole.done == 5 and whole.sheet is not None and whole.sheet.is_file()
    part = run_atlas(small_net, 2, [1, 3], tmp_path / "part", **options)  # other batches, other positions
    resumed = run_atlas(small_net, 2, list(range(5)), tmp_path / "part", resume=True, **options)
    assert (part.done, resumed.done, resumed.skipped) == (2, 3, 2)
    for path in whole.files:
        assert (tmp_path / "part" / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_atlas_command_renders_classes_with_a_labelled_sheet(monkeypatch, capsys, tmp_path):
    from conftest import cli

    code, out, _ = cli(monkeypatch, capsys, "atlas", "tiny", "--classes", "9,10", "--steps", "1", "--size", "32",
                       "--batch-size", "2", "--out", tmp_path, "--quiet")
    assert code == 0, out
    assert {p.name for p in tmp_path.iterdir()} == {"tiny_class_0009.png", "tiny_class_0010.png",
                                                     "tiny_class_atlas.png", "manifest.jsonl"}
    code, _, err = cli(monkeypatch, capsys, "atlas", "tiny", "--out", tmp_path)
    assert code == 1 and any("give a LAYER" in line for line in err), err
    code, _, err = cli(monkeypatch, capsys, "atlas", "tiny", "0", "--classes", "0:1", "--out", tmp_path)
    assert code == 1 and any("give no LAYER" in line for line in err), err


@pytest.mark.slow
def test_an_atlas_of_a_128_channel_layer_shows_each_channel_what_excites_it_most(tiny_darknet, tmp_path,
                                                                                program_events):
    from jaxdream import load_image
    from jaxdream.atlas import run_atlas

    channels = tiny_darknet.layer_output_shapes(*tiny_darknet.input_size, 5)[-1][2]
    assert 64 <= channels <= 128
    with program_events() as seen:
        summary = run_atlas(tiny_darknet, 5, list(range(channels)), tmp_path, size=64, steps=64, batch_size=32)
    assert len([name for name in seen.compiles if name == "jit(run)"]) == 1
    images = np.stack([load_image(path) for path in summary.files])
    response = np.asarray(tiny_darknet.forward(images, 5)[5]).mean(axis=(1, 2))  # (image, channel)
    assert np.mean(np.argmax(response, axis=0) == np.arange(channels)) >= 0.9


def test_a_redirected_relu_lets_a_dead_unit_be_rendered(tmp_path):
    """A ReLU network whose channel 2 is dead (a bias of -100): its plain gradient is zero, so Adam leaves the
    image as it started; with redirect the unit's input rises."""
    from conftest import random_darknet

    from jaxdream import render
    from jaxdream.darknet.model import DarknetModel

    alive = random_darknet("[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                           "pad=1\nactivation=relu\n", "dead-net", 9)
    cfg = alive.cfg
    params = {"layer_0": {**alive.params["layer_0"], "bias": np.asarray(alive.params["layer_0"]["bias"]).copy()}}
    params["layer_0"]["bias"][2] = -100.0
    dead = DarknetModel("dead-net", cfg, params)
    options = {"size": 16, "steps": 5, "transforms": "none", "param": "pixel", "lr": 0.5}
    start = render(dead, O.channel(0, 2), steps=0, **{k: v for k, v in options.items() if k != "steps"})
    plain = render(dead, O.channel(0, 2), **options)
    redirected = render(dead, O.channel(0, 2), redirect=True, **options)
    np.testing.assert_array_equal(plain, start)
    before = lambda x: np.asarray(dead.apply(params, jnp.asarray(x), (0,))[0])
    assert not np.array_equal(redirected, start)
    kernel, bias = params["layer_0"]["kernel"], params["layer_0"]["bias"]
    pre = lambda x: float(jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(kernel), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[..., 2].mean()
        + bias[2])
    assert pre(redirected) > pre(start)
    assert not before(redirected)[..., 2].any()  # still dead in value: the ReLU's values are unchanged


def test_colours_from_photos_ranges_and_own_transform_chains():
    from jaxdream import render
    from jaxdream.visual.params import colour_from_photos

    rng = np.random.default_rng(6)
    photos = [rng.random((8, 9, 3)) @ np.array([[1.0, 0.3, 0.1], [0.0, 0.8, 0.2], [0.0, 0.0, 0.5]])
              for _ in range(3)]
    root = colour_from_photos(photos)
    np.testing.assert_allclose(root @ root, np.cov(np.concatenate([p.reshape(-1, 3) for p in photos]), rowvar=False),
                               atol=1e-10)
    model = _tiny_relu_free()
    chain = (T.Jitter(2), T.Noise(0.01))
    image = render(model, O.layer(0), size=12, steps=2, colour=root, value_range="clip", transforms=chain)
    assert image.shape == (1, 12, 12, 3) and image.min() >= 0.0 and image.max() <= 1.0
    for changed in ({"value_range": "sigmoid"}, {"colour": None}):  # each option is used
        other = render(model, O.layer(0), size=12, steps=2, transforms=chain,
                       **{"colour": root, "value_range": "clip", **changed})
        assert np.abs(other - image).max() > 1e-3, changed
    with pytest.raises(OptionError, match="well-conditioned 3x3"):
        render(model, O.layer(0), size=12, steps=1, colour=np.zeros((3, 3)))
    with pytest.raises(OptionError, match="too little colour variation"):
        colour_from_photos([np.full((4, 4, 3), 0.5)])


def _tiny_relu_free():
    from conftest import random_darknet

    return random_darknet("[net]\nwidth=12\nheight=12\nchannels=3\n[convolutional]\nfilters=2\nsize=3\nstride=1\n"
                          "pad=1\nactivation=leaky\n", "leaky-net", 1)


def test_a_render_split_over_two_devices_gives_what_one_device_gives(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import process_env

    script = (
        "import numpy as np, jax, jaxdream as jd\n"
        "from jaxdream.darknet.cfg import parse_cfg\n"
        "from jaxdream.darknet.model import model_from_bytes\n"
        "from jaxdream.darknet.weights import random_weights_bytes\n"
        "from jaxdream.objectives import channel\n"
        "from jaxdream.visual.render import batch_sharding\n"
        "cfg = parse_cfg('[net]\\nwidth=16\\nheight=16\\nchannels=3\\n[convolutional]\\nfilters=4\\nsize=3\\n"
        "stride=1\\npad=1\\nactivation=leaky\\n', 'c')\n"
        "m = model_from_bytes(cfg, random_weights_bytes(cfg, 1))\n"
        "objective = channel(0, 1, batch=0) + channel(0, 3, batch=1)\n"
        "images = jd.render(m, objective, size=16, steps=3, batch=2)\n"
        "assert batch_sharding(2) is not None, 'not split'\n"
        "np.save(__import__('sys').argv[1], images)\n"
        "print(len(jax.devices()))\n"
    )
    env = process_env(XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
                      JAX_PLATFORMS="cpu")
    out = tmp_path / "two.npy"
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1] == "2", done.stderr[-2000:]
    from conftest import random_darknet

    from jaxdream import render

    model = random_darknet("[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                           "pad=1\nactivation=leaky\n", "model", 1)
    one = render(model, O.channel(0, 1, batch=0) + O.channel(0, 3, batch=1), size=16, steps=3, batch=2)
    # Split programs sum in another order (float rounding, ~1e-5 after Adam's normalised steps), not another image.
    np.testing.assert_allclose(np.load(out), one, atol=1e-4)


def test_maco_optimises_only_the_phase_the_magnitude_stays_the_template(small_net):
    """Undo the sigmoid and the colours of a MACO render after some steps: its spectrum's magnitudes are the
    template's (up to the standardisation's one scale) at every frequency whose phase is free."""
    from jaxdream import render
    from jaxdream.visual.params import ImageParam

    size = 24
    template = np.random.default_rng(7).uniform(0.5, 2.0, (3, size, size // 2 + 1)).astype(np.float32)
    image = render(small_net, O.layer(2), param="maco", spectrum=template, size=size, steps=6, transforms="none",
                   lr=0.3)[0].astype(np.float64)
    colour = ImageParam("maco", size, size).colour_matrix().astype(np.float64)
    values = np.log(image / (1 - image)) @ np.linalg.inv(colour).T
    magnitude = np.abs(np.fft.rfft2(values.transpose(2, 0, 1)))[:, :, 1 : size // 2]  # self-conjugate bins left out
    ratio = magnitude / template[:, :, 1 : size // 2]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=2e-3)
    with pytest.raises(OptionError, match="another size"):
        render(small_net, O.layer(2), param="maco", spectrum=template, size=size + 2, steps=1)


def test_zoom_crops_and_spectra_match_numpy():
    from jaxdream.visual.params import spectrum_from_photos

    rng = np.random.default_rng(8)
    image = rng.random((30, 40, 3)).astype(np.float32)
    top, left, side, size = 3.5, 7.25, 18.0, 12
    steps = (np.arange(size) + 0.5) * (side / size) - 0.5
    yy, xx = np.meshgrid(top + steps, left + steps, indexing="ij")
    np.testing.assert_allclose(T.window(image, top, left, side, size),
                               _bilinear_clamped(image.astype(np.float64), yy, xx), atol=1e-5)
    crop = T.ZoomCrop(0.45, 0.5, 16)(jax.random.key(1), image)
    assert crop.shape == (16, 16, 3) and T.output_size(T.preset("maco"), 512, 512) == (224, 224)
    photo = rng.random((16, 20, 3)).astype(np.float32)
    colour = np.eye(3)
    expected = np.abs(np.fft.rfft2((photo - photo.mean(axis=(0, 1))).transpose(2, 0, 1)))
    # the same size: the resize is Pillow's identity up to 8-bit rounding
    np.testing.assert_allclose(spectrum_from_photos([photo], 16, 20, colour), expected, atol=0.05 * expected.max())


@pytest.mark.slow
def test_a_maco_class_render_is_ranked_first_by_the_model_that_made_it(tiny_darknet, squeezenet):
    from jaxdream import render, top_classes

    for model in (tiny_darknet, squeezenet):
        images = render(model, "class:ostrich", param="maco", size=320, transforms="maco", crops=2, steps=128)
        assert top_classes(model, images, 1)[0][0]["name"].startswith("ostrich"), model.name


def test_the_attribution_map_lies_inside_the_units_receptive_field(small_net, monkeypatch, capsys, tmp_path):
    """Layer 2 of small_net is conv 3x3, max-pool 2/2, conv 3x3: the neuron at (x, y) = (5, 4) sees input rows
    2*4 - 3 .. 2*4 + 4 and columns 2*5 - 3 .. 2*5 + 4; outside them the gradient, and so the map, is zero."""
    from jaxdream import render

    _, maps = render(small_net, O.neuron(2, 1, x=5, y=4), size=24, steps=3, transforms="none", param="pixel",
                          attribution=True)
    assert maps.shape == (1, 24, 24) and maps.max() == pytest.approx(1.0) and maps.min() >= 0.0
    inside = np.zeros((24, 24), bool)
    inside[5:13, 7:15] = True
    assert maps[0][~inside].max() == 0.0 and maps[0][inside].sum() > 0
    from conftest import cli

    code, out, _ = cli(monkeypatch, capsys, "render", "tiny", "neuron:5:3", "--steps", "1", "--size", "32",
                       "--mask", "--out", tmp_path, "--quiet")
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.jsonl", "tiny_neuron_5_3_00.png", "tiny_neuron_5_3_00_mask.png", "tiny_neuron_5_3_00_rgba.png"]


def test_accentuation_raises_the_feature_and_stays_closer_to_the_photo_than_an_unregularised_render(tiny_darknet):
    """A real model and photo: channel 15 of layer 9 rises at least 5x from the photo's value, while layer 5's
    features stay nearer the photo's than those of the same render without the closeness term."""
    from PIL import Image

    from jaxdream import accentuate
    from jaxdream.weights import SAMPLE_IMAGE

    photo = np.asarray(Image.open(SAMPLE_IMAGE).resize((128, 96)), np.float32) / 255

    def response(image):
        return float(np.asarray(tiny_darknet.forward(image, 9)[9])[0, ..., 15].mean())

    def distance(image):
        seed, now = (np.asarray(tiny_darknet.forward(x, 5)[5][0]) for x in (photo[None], image))
        return float(np.mean((now - seed) ** 2))

    kept = accentuate(tiny_darknet, photo, O.channel(9, 15), reg_layer=5, reg="auto", steps=64)
    free = accentuate(tiny_darknet, photo, O.channel(9, 15), reg_layer=5, reg=0.0, steps=64)
    assert response(photo) > 0 and response(kept) >= 5 * response(photo)
    assert distance(kept) < distance(free)
    with pytest.raises(OptionError, match="'auto' or a weight"):
        accentuate(tiny_darknet, photo, O.channel(9, 15), reg_layer=5, reg="lots", steps=1)


def test_class_objectives_read_the_view_as_it_is_where_the_network_takes_its_size(tiny_darknet):
    """lucid's convention: a fully convolutional classifier sees a 236 px view whole; a head built for its own size
    (Darknet's [connected]) sees the view squashed to it, as a photo would be."""
    from conftest import random_darknet

    from jaxdream.image import letterbox
    from jaxdream.visual.render import network_logits

    views = jnp.asarray(np.random.default_rng(3).random((2, 236, 236, 3), np.float32))
    layer = tiny_darknet.logits_layer
    whole = tiny_darknet.apply(tiny_darknet.params, views, (layer,))[layer].reshape(2, -1)
    np.testing.assert_allclose(np.asarray(network_logits(tiny_darknet, tiny_darknet.params, views, "f32")),
                               np.asarray(whole), rtol=1e-5, atol=1e-5)
    fixed = random_darknet("[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nstride=1\n"
                           "pad=1\nactivation=relu\n[connected]\noutput=5\nactivation=linear\n[softmax]\n", "fixed", 2)
    small = views[:, :20, :20]
    squashed = fixed.apply(fixed.params, letterbox(small, 16, 16), (1,))[1].reshape(2, -1)
    np.testing.assert_allclose(np.asarray(network_logits(fixed, fixed.params, small, "f32")), np.asarray(squashed),
                               rtol=1e-5, atol=1e-5)
