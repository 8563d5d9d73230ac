"""Keras HDF5 loading: the real MobileNet 0.25 file, and synthetic VGG-layout files written here with h5py,
checked against an independent NumPy forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import JSON_VALUES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import jaxdream as jd
from jaxdream.dream.lucid_mode import top_classes
from jaxdream.errors import JaxdreamError, WeightsError
from jaxdream.image import to_uint8
from jaxdream.keras.model import KerasModel
from jaxdream.model import load_model

SLED_DOGS = {"malamute", "Siberian_husky", "Eskimo_dog"}
# SOURCES.md's NumPy forward of the same file on dog.jpg squashed to 224x224 with PIL bilinear.
SOURCES_TOP5 = [("malamute", 17.0), ("Siberian_husky", 14.3), ("Eskimo_dog", 6.4), ("standard_schnauzer", 4.6),
                ("keeshond", 3.0)]


def test_real_mobilenet_classifies_dog_as_a_sled_dog(mobilenet, shared):
    assert isinstance(mobilenet, KerasModel)
    assert sum(np.size(a) for a in mobilenet.params.values()) == 475_544
    dog = jd.load_image(shared / "data" / "images" / "dog.jpg")
    assert top_classes(mobilenet, dog[None], 1)[0][0]["name"] in SLED_DOGS


def test_real_mobilenet_matches_an_independent_forward(mobilenet, shared):
    with Image.open(shared / "data" / "images" / "dog.jpg") as im:
        squashed = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0
    top = top_classes(mobilenet, squashed[None], 5)[0]  # at 224 the model's own resize is the identity
    assert [(r["name"], round(100 * r["prob"], 1)) for r in top] == SOURCES_TOP5


def test_weights_only_file_fills_the_full_models_backbone(mobilenet, mobilenet_dir):
    backbone = jd.load_model(mobilenet_dir / "mobilenet_v1_0.25_224.h5",
                             weights=mobilenet_dir / "mobilenet_2_5_224_tf_no_top.h5")
    assert sum(np.size(a) for a in backbone.params.values()) == 218_544
    x = np.random.default_rng(0).uniform(0, 1, (1, 96, 96, 3)).astype(np.float32)
    last = backbone.num_layers - 1
    np.testing.assert_array_equal(np.asarray(backbone.forward(x, last)[last]),
                                  np.asarray(mobilenet.forward(x, last)[last]))


def test_lucid_with_mobilenet_reaches_ostrich(mobilenet, shared):
    dog = jd.load_image(shared / "data" / "images" / "dog.jpg")
    dreamed = jd.lucid(mobilenet, dog, "ostrich", iters=20)[0, 0]
    written = to_uint8(dreamed).astype(np.float32) / 255.0
    assert top_classes(mobilenet, written[None], 1)[0][0]["name"] == "ostrich"


# A small VGG-layout network (same layer types and names as Keras' VGG16, fewer channels, 32x32 input).
SMALL_VGG = [("block1_conv1", 3, 8), ("block1_conv2", 8, 8), "block1_pool", ("block2_conv1", 8, 16), "block2_pool"]


def _small_vgg_weights(rng) -> dict[str, list[tuple[str, np.ndarray]]]:
    weights = {}
    for item in SMALL_VGG:
        if isinstance(item, tuple):
            name, cin, cout = item
            weights[name] = [("kernel:0", rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout))),
                             ("bias:0", rng.normal(0, 0.1, cout))]
    weights["fc1"] = [("kernel:0", rng.normal(0, 0.05, (8 * 8 * 16, 10))), ("bias:0", rng.normal(0, 0.1, 10))]
    return weights


def _layer_config(item) -> dict:
    if isinstance(item, tuple):
        return {"class_name": "Conv2D", "config": {"name": item[0], "filters": item[2], "kernel_size": [3, 3],
                "strides": [1, 1], "padding": "same", "activation": "relu", "use_bias": True}}
    return {"class_name": "MaxPooling2D", "config": {"name": item, "pool_size": [2, 2], "strides": [2, 2],
            "padding": "valid"}}


def _write_full_model(path, weights, extra_layer=None) -> None:
    layers = [{"class_name": "InputLayer", "config": {"name": "input_1", "batch_input_shape": [None, 32, 32, 3]}}]
    layers += [_layer_config(item) for item in SMALL_VGG]
    layers += [{"class_name": "Flatten", "config": {"name": "flatten"}},
               {"class_name": "Dense", "config": {"name": "fc1", "units": 10, "activation": "softmax"}}]
    if extra_layer:
        layers.insert(2, extra_layer)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "vgg_small",
                                                                                   "layers": layers}})
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [layer["config"]["name"].encode() for layer in layers]
        for layer in layers:
            name = layer["config"]["name"]
            sub = group.create_group(name)
            arrays = weights.get(name, [])
            sub.attrs["weight_names"] = [f"{name}/{w}".encode() for w, _ in arrays]
            for w, array in arrays:
                sub.create_dataset(f"{name}/{w}", data=array.astype(np.float32))


def _numpy_vgg(x01: np.ndarray, weights) -> np.ndarray:
    """Independent float64 forward: Keras 'caffe' preprocessing, 'same' 3x3 convs, 2x2 pools, dense softmax."""
    x = x01[..., ::-1].astype(np.float64) * 255.0 - np.array([103.939, 116.779, 123.68])
    for item in SMALL_VGG:
        if isinstance(item, tuple):
            kernel, bias = (a for _, a in weights[item[0]])
            padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
            out = np.zeros((*x.shape[:2], kernel.shape[-1]))
            for dy in range(3):
                for dx in range(3):
                    out += padded[dy : dy + x.shape[0], dx : dx + x.shape[1]] @ kernel[dy, dx]
            x = np.maximum(out + bias, 0)
        else:
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, -1).max(axis=(1, 3))
    kernel, bias = (a for _, a in weights["fc1"])
    logits = x.reshape(-1) @ kernel + bias
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def test_synthetic_vgg_full_model_matches_numpy(tmp_path):
    rng = np.random.default_rng(1)
    weights = _small_vgg_weights(rng)
    path = tmp_path / "vgg_small.h5"
    _write_full_model(path, weights)
    model = jd.load_model(path)
    assert model.preprocessing == "caffe"
    x = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.predict(x[None]))[0], _numpy_vgg(x, weights), atol=1e-5)


def test_builtin_vgg16_takes_a_keras_weights_only_file(tmp_path):
    """Keras' VGG16 no-top layout (block names and shapes), written with random weights, loaded as `vgg-16`."""
    rng = np.random.default_rng(2)
    plan = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    expected = {}
    with h5py.File(path, "w") as f:
        names, cin = [], 3
        for block, filters, count in plan:
            for i in range(1, count + 1):
                name = f"block{block}_conv{i}"
                group = f.create_group(name)
                group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
                kernel = rng.normal(0, 0.01, (3, 3, cin, filters)).astype(np.float32)
                group.create_dataset(f"{name}/kernel:0", data=kernel)
                group.create_dataset(f"{name}/bias:0", data=np.zeros(filters, np.float32))
                expected[name], cin = kernel, filters
                names.append(name)
            names.append(f"block{block}_pool")
            f.create_group(f"block{block}_pool").attrs["weight_names"] = []
        f.attrs["layer_names"] = [n.encode() for n in names]
    model = jd.load_model("vgg-16", weights=path)
    assert [layer.name for layer in model.layers] == names
    np.testing.assert_array_equal(model.params["block3_conv2/kernel"], expected["block3_conv2"])
    assert model.describe(64, 64)[-1]["output"] == (2, 2, 512)


def test_unknown_layer_names_itself_and_the_file(tmp_path):
    path = tmp_path / "lstm.h5"
    _write_full_model(path, _small_vgg_weights(np.random.default_rng(3)),
                      extra_layer={"class_name": "LSTM", "config": {"name": "memory"}})
    with pytest.raises(WeightsError, match=r"lstm\.h5: layer 'memory' is a LSTM, which jaxdream does not support"):
        jd.load_model(path)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    weights = _small_vgg_weights(np.random.default_rng(4))
    weights["block2_conv1"][0] = ("kernel:0", np.zeros((3, 3, 8, 12)))
    path = tmp_path / "bad.h5"
    _write_full_model(path, weights)
    with pytest.raises(WeightsError, match=r"block2_conv1/kernel has shape \(3, 3, 8, 12\), the architecture needs"):
        jd.load_model(path)


def test_converted_keras_model_is_bit_identical(mobilenet, mobilenet_dir, tmp_path):
    from jaxdream import converted, files

    out = tmp_path / "mobilenet.h5"
    converted.write_converted(out, mobilenet.to_converted(files.sha256_of(mobilenet_dir /
                                                                             "mobilenet_v1_0.25_224.h5")))
    again = jd.load_model(out)
    assert isinstance(again, KerasModel) and again.layers == mobilenet.layers and again.labels == mobilenet.labels
    for name, array in mobilenet.params.items():
        np.testing.assert_array_equal(again.params[name], array)
    assert converted.read_converted(out).source_sha256 == \
        "dc1ff623e6cd99c3cc0dd2821ca0807ba013606af5a4e2afd4488fbf26a8b589"


def test_nightmare_runs_on_a_keras_layer(mobilenet):
    x = np.random.default_rng(5).uniform(0, 1, (64, 80, 3)).astype(np.float32)
    frames = jd.nightmare(mobilenet, x, 20, iters=2, octaves=2, seed=0)
    assert frames.shape == (1, 1, 64, 80, 3) and np.abs(frames[0, 0] - x).mean() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lucid_mix_with_mobilenet_puts_both_in_the_top_two(mobilenet, shared, seed):
    dog = jd.load_image(shared / "data" / "images" / "dog.jpg")
    dreamed = jd.lucid(mobilenet, dog, "ostrich:0.5,pelican:0.5", iters=20, seed=seed)[0, 0]
    written = to_uint8(dreamed).astype(np.float32) / 255.0
    assert {r["name"] for r in top_classes(mobilenet, written[None], 2)[0]} == {"ostrich", "pelican"}


@pytest.mark.parametrize(("filters", "message"), [
    (10**9, r"huge\.h5: the weights declare 72,000,011,074 values, more than"),
    (10**7, r"huge\.h5: .*block2_conv1/kernel has shape \(3, 3, 8, 10000000\), the architecture needs")])
def test_a_huge_declared_shape_is_refused_before_it_is_allocated(tmp_path, filters, message):
    path = tmp_path / "huge.h5"
    _write_full_model(path, _small_vgg_weights(np.random.default_rng(5)))
    with h5py.File(path, "a") as f:
        name = "model_weights/block2_conv1/block2_conv1/kernel:0"
        del f[name]  # declared values in chunks never written: a small file, gigabytes if read whole
        f.create_dataset(name, shape=(3, 3, 8, filters), dtype="f4", chunks=(1, 1, 1, 1 << 16))
    with pytest.raises(WeightsError, match=message):
        jd.load_model(path)


def test_a_keras_file_that_is_a_pipe_is_refused(tmp_path):
    import os

    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)  # HDF5 would block opening it
    with pytest.raises(WeightsError, match=r"pipe\.h5: the model file must be a regular file, not a pipe"):
        jd.load_model(fifo)


# Hand-edited files


def _keras_file(path: Path, mutate=None) -> Path:
    _write_full_model(path, _small_vgg_weights(np.random.default_rng(0)))
    if mutate:
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            mutate(config)
            f.attrs["model_config"] = json.dumps(config)
    return path


def _set(layer: int, key: str, value):
    def mutate(config):
        config["config"]["layers"][layer]["config"][key] = value

    return mutate


@pytest.mark.parametrize("mutate", [
    lambda c: c["config"].update(layers=["x", "y"]),
    lambda c: c["config"]["layers"][1].update(config=None),
    _set(1, "kernel_size", None),
    _set(0, "batch_input_shape", [None, -5, 0, 3]),
    _set(1, "strides", [0, 0]),
    _set(1, "data_format", "channels_first"),
    lambda c: c["config"].update(layers=[]),
])
def test_a_hand_edited_keras_file_gets_one_error(tmp_path, mutate):
    with pytest.raises(WeightsError, match=str(tmp_path)):
        load_model(_keras_file(tmp_path / "k.h5", mutate))


@pytest.mark.parametrize(("attr", "value"), [
    ("architecture", "not json"), ("architecture", json.dumps({"layers": [{"kind": "Conv2D", "bogus": 1}],
                                                                "input_hw": [32, 32], "preprocessing": "tf"})),
    ("architecture", json.dumps({"layers": [], "input_hw": [32, 32], "preprocessing": "tf"})),
    ("version", "abc"), ("version", -1),
])
def test_a_hand_edited_converted_file_gets_one_error(tmp_path, attr, value):
    from jaxdream import converted

    model = load_model(_keras_file(tmp_path / "k.h5"))
    converted.write_converted(tmp_path / "c.h5", model.to_converted("0" * 64))
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f.attrs[attr] = value
    with pytest.raises(WeightsError, match=r"c\.h5"):
        load_model(tmp_path / "c.h5")


KEYS = ["class_name", "config", "kernel_size", "strides", "filters", "padding", "pool_size", "units", "activation",
        "name", "batch_input_shape", "use_bias", "inbound_nodes", "data_format", "target_shape"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer=st.integers(0, 7), key=st.sampled_from(KEYS), value=JSON_VALUES)
def test_no_keras_config_edit_escapes_as_anything_but_our_error(tmp_path_factory, layer, key, value):
    path = tmp_path_factory.mktemp("fuzz") / "k.h5"

    def mutate(config):
        entry = config["config"]["layers"][layer]
        (entry if key in ("class_name", "config", "inbound_nodes") else entry["config"])[key] = value

    try:
        model = load_model(_keras_file(path, mutate))
        model.describe()
    except JaxdreamError:
        pass
