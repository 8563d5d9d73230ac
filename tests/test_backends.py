"""The three backends (Darknet, Keras, ONNX) behind one model protocol: each real model describes itself,
preprocesses, classifies, survives jaxdream's one-file .h5, and has its parameters checked against the
network's own expected tree (missing, unexpected and mis-shaped entries named)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import h5py
import numpy as np
import pytest

import jaxdream as jd
from jaxdream import converted
from jaxdream.errors import OptionError, WeightsError
from jaxdream.sweep import parse_layers

BACKENDS = ["tiny_darknet", "mobilenet", "squeezenet"]


@pytest.fixture(params=BACKENDS)
def model(request):
    return request.getfixturevalue(request.param)


def test_every_backend_meets_the_protocol(model, shared, tmp_path):
    assert isinstance(model, jd.Model)
    table = model.describe()
    assert len(table) == model.num_layers and all({"index", "type", "output", "params"} <= set(row) for row in table)
    assert sum(row["params"] for row in table) == sum(int(np.prod(s)) for s in model.param_shapes().values())
    x = jd.load_image(shared / "data" / "images" / "eagle.jpg")[None, ::4, ::4]
    assert model.preprocess(x).shape == (1, *model.input_size, 3)
    assert len(model.labels) == model.num_classes == model.describe()[model.logits_layer]["output"][-1]
    converted.write_converted(tmp_path / "m.h5", model.to_converted("0" * 64))
    again = jd.load_model(tmp_path / "m.h5")
    assert type(again) is type(model) and again.fingerprint == model.fingerprint
    assert again.weights_digest == model.weights_digest and again.labels == model.labels
    np.testing.assert_array_equal(np.asarray(again.logits(x)), np.asarray(model.logits(x)))


def _damage(path, drop: str, add: str, reshape: str | None = None) -> None:
    with h5py.File(path, "r+") as f:
        params = f["params"]
        del params[drop]
        params.create_dataset(add, data=np.zeros(3, np.float32))
        if reshape is not None:
            data = params[reshape][()]
            del params[reshape]
            params.create_dataset(reshape, data=np.zeros((*data.shape, 2), np.float32))


def _flat_names(path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f["params"].visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


@pytest.mark.parametrize("backend", ["tiny_darknet", "mobilenet"])
def test_missing_unexpected_and_misshaped_parameters_are_named(backend, request, tmp_path):
    model = request.getfixturevalue(backend)
    path = tmp_path / "m.h5"
    converted.write_converted(path, model.to_converted("0" * 64))
    names = _flat_names(path)
    _damage(path, drop=names[0], add="nonsense/extra", reshape=names[-1])
    with pytest.raises(WeightsError) as caught:
        jd.load_model(path)
    message = str(caught.value)
    assert str(path) in message and f"missing {names[0]}" in message and "unexpected nonsense/extra" in message
    assert f"{names[-1]} has shape" in message


def test_a_damaged_converted_onnx_model_names_the_parameter(squeezenet, tmp_path):
    path = tmp_path / "s.h5"
    converted.write_converted(path, squeezenet.to_converted("0" * 64))
    with h5py.File(path, "r+") as f:
        data = f["params/p00001"][()]
        del f["params/p00001"]
        f["params"].create_dataset("p00001", data=np.zeros((*data.shape, 2), np.float32))
    name = sorted(squeezenet.params)[1]
    with pytest.raises(WeightsError, match=f"{name} has shape"):
        jd.load_model(path)
    with h5py.File(path, "r+") as f:
        del f["params/p00001"]
    with pytest.raises(WeightsError, match="parameters do not fit"):
        jd.load_model(path)


def test_an_unknown_converted_kind_is_refused(tiny_darknet, tmp_path):
    path = tmp_path / "m.h5"
    converted.write_converted(path, tiny_darknet.to_converted("0" * 64))
    with h5py.File(path, "r+") as f:
        f.attrs["kind"] = "caffe"
    with pytest.raises(WeightsError, match="of kind 'caffe'"):
        jd.load_model(path)


def test_layers_by_index_and_by_name(tiny_darknet, mobilenet, squeezenet):
    assert parse_layers("4:7", tiny_darknet) == [4, 5, 6] and parse_layers("4,9", tiny_darknet) == [4, 9]
    with pytest.raises(OptionError, match="not a range of layers"):
        parse_layers("a:b", tiny_darknet)
    names = squeezenet.layer_names
    first, last = names.index("fire2/concat_1"), names.index("fire3/concat_1")
    assert parse_layers("fire2/concat_1:fire3/concat_1,fire5/concat_1", squeezenet) == [
        *range(first, last), names.index("fire5/concat_1")]
    assert parse_layers("3", squeezenet) == [3]  # digits are an index, whatever the names
    assert parse_layers(f"3,{names[3]},4", squeezenet) == [3, 4]  # named and numbered: one layer
    assert mobilenet.resolve_layer(mobilenet.layer_names[5]) == 5
    with pytest.raises(OptionError, match="has no layer 'conv99'"):
        mobilenet.resolve_layer("conv99")


def test_a_new_darknet_layer_type_is_one_class(monkeypatch):
    """Registered in LAYER_TYPES alone, a layer type parses, has its shape, reads its arrays from a .weights file
    and runs: nothing else needs to know it."""
    import flax.linen as nn

    from jaxdream.darknet import layers
    from jaxdream.darknet.cfg import parse_cfg
    from jaxdream.darknet.model import model_from_bytes
    from jaxdream.darknet.reading import read_float
    from jaxdream.darknet.weights import random_weights_bytes

    class GainModule(nn.Module):
        offset: float

        @nn.compact
        def __call__(self, x):
            return x * self.param("gain", nn.initializers.ones, (x.shape[-1],)) + self.offset

    @dataclass(frozen=True)
    class Gain(layers.Layer):
        offset: float
        KIND: ClassVar[str] = "gain"
        KEYS: ClassVar[dict] = {"offset": read_float}

        @classmethod
        def parse(cls, reading, index):
            return cls(index, reading.section.line, offset=reading.get("offset", 0.0))

        def arrays(self, incoming):
            return [("gain", (incoming[2],))]

        def forward(self, x, outputs, context):
            return GainModule(self.offset, name=f"layer_{self.index}")(x)

    monkeypatch.setitem(layers.LAYER_TYPES, "gain", Gain)
    cfg = parse_cfg("[net]\nwidth=6\nheight=5\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
                    "activation=linear\n[gain]\noffset=0.5\n", "gain.cfg")
    model = model_from_bytes(cfg, random_weights_bytes(cfg, 3), "gain")
    assert model.describe()[1] == {"index": 1, "type": "gain", "output": (5, 6, 4), "params": 4, "line": 10}
    x = np.random.default_rng(0).uniform(0, 1, (1, 5, 6, 3)).astype(np.float32)
    out = model.forward(x, layers=(0, 1))
    expected = np.asarray(out[0], np.float64) * model.params["layer_1"]["gain"] + 0.5
    np.testing.assert_allclose(np.asarray(out[1]), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(jd.JaxdreamError, match="unknown key 'scale' in \\[gain\\]"):
        parse_cfg("[net]\nwidth=6\nheight=5\nchannels=3\n[gain]\nscale=2\n", "gain.cfg")


def test_a_new_keras_layer_kind_is_one_function(monkeypatch):
    """Registered in FORWARD alone, a Keras layer kind parses and runs inside a chain."""
    from jaxdream.keras import layers
    from jaxdream.keras.model import KerasModel

    monkeypatch.setitem(layers.FORWARD, "Negate", lambda layer, x, *_: -x)
    chain = (layers.parse_layer({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3,
                                                                     "padding": "same"}}, "m.h5"),
             layers.parse_layer({"class_name": "Negate", "config": {"name": "n"}}, "m.h5"))
    rng = np.random.default_rng(1)
    params = {"c/kernel": rng.normal(size=(3, 3, 3, 2)).astype(np.float32), "c/bias": np.ones(2, np.float32)}
    model = KerasModel("m", chain, params, (6, 5), "tf").checked("m.h5")
    x = rng.uniform(0, 1, (1, 6, 5, 3)).astype(np.float32)
    out = model.forward(x, layers=(0, 1))
    np.testing.assert_allclose(np.asarray(out[1]), -np.asarray(out[0]), rtol=0, atol=0)
    with pytest.raises(WeightsError, match="is a Shuffle, which jaxdream does not support"):
        layers.parse_layer({"class_name": "Shuffle", "config": {"name": "s"}}, "m.h5")


def test_a_model_name_never_makes_or_leaves_a_folder(tmp_path):
    from jaxdream.outputs import output_names

    names = output_names([tmp_path / "a.jpg"], tmp_path, "x/../../escaped", " fire2/concat_1 ", ["000000"], "jpg")
    assert [p.parent for p in names[tmp_path / "a.jpg"]] == [tmp_path]
    assert names[tmp_path / "a.jpg"][0].name == "a_x_.._.._escaped_fire2_concat_1_000000.jpg"
