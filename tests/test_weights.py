"""Darknet .weights reading/writing and jaxdream's converted .h5, checked against the cfg byte count."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdream import converted
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.weights import (
    Header,
    expected_file_sizes,
    parse_weights,
    random_weights_bytes,
    read_weights,
    weights_bytes,
)
from jaxdream.errors import WeightsError
from jaxdream.model import load_model

GROUPED = """[net]
width=16
height=12
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=8
groups=8
size=3
stride=2
pad=1
activation=relu

[connected]
output=5
activation=linear
"""


def test_roundtrip_is_byte_identical_for_both_headers():
    cfg = parse_cfg(GROUPED, "grouped.cfg")
    data = random_weights_bytes(cfg, 7)
    params, header = parse_weights(data, cfg)
    assert weights_bytes(cfg, params, header) == data
    old = Header(0, 1, 0, 123456)
    short = weights_bytes(cfg, params, old)
    assert len(short) == expected_file_sizes(cfg)[0]
    again, header_again = parse_weights(short, cfg)
    assert header_again == old
    assert weights_bytes(cfg, again, old) == short


def test_layout_matches_darknet_order():
    """Independent re-reading: the first conv's biases, BN arrays, then OIHW weights, as the README states."""
    cfg = parse_cfg(GROUPED, "grouped.cfg")
    data = random_weights_bytes(cfg, 3)
    flat = np.frombuffer(data[20:], "<f4")
    params, _ = parse_weights(data, cfg)
    np.testing.assert_array_equal(params["layer_0"]["bias"], flat[0:8])
    np.testing.assert_array_equal(params["layer_0"]["var"], flat[24:32])
    oihw = flat[32 : 32 + 8 * 3 * 9].reshape(8, 3, 3, 3)
    np.testing.assert_array_equal(params["layer_0"]["kernel"], oihw.transpose(2, 3, 1, 0))
    assert params["layer_1"]["kernel"].shape == (3, 3, 1, 8)  # grouped: in/groups channels
    assert params["layer_2"]["kernel"].shape == (8 * 6 * 8, 5)


@pytest.mark.parametrize("cut", [1, 4, 100])
def test_truncated_file_names_the_layer(cut):
    cfg = parse_cfg(GROUPED, "grouped.cfg")
    data = random_weights_bytes(cfg, 1)
    with pytest.raises(WeightsError, match=r"layer 2 .*needs .* bytes"):
        parse_weights(data[:-cut], cfg, "cut.weights")


def test_oversized_file_is_refused():
    cfg = parse_cfg(GROUPED, "grouped.cfg")
    with pytest.raises(WeightsError, match="4 bytes left over"):
        parse_weights(random_weights_bytes(cfg, 1) + b"\0" * 4, cfg, "big.weights")


def test_real_tiny_darknet_has_the_documented_layout(shared):
    folder = shared / "models" / "tiny-darknet"
    cfg = parse_cfg((folder / "tiny.cfg").read_text(), "tiny.cfg")
    params, header = read_weights(folder / "tiny.weights", cfg)
    assert (header.major, header.minor, header.seen) == (0, 1, 204_800_000)
    assert sum(a.size for layer in params.values() for a in layer.values()) == 1_046_488
    assert weights_bytes(cfg, params, header) == (folder / "tiny.weights").read_bytes()


def test_converted_h5_is_bit_identical(shared, tmp_path):
    folder = shared / "models" / "yolo-fastest-1.1"
    model = load_model(folder / "yolo-fastest-1.1.cfg", folder / "yolo-fastest-1.1.weights")
    out = tmp_path / "yolo.h5"
    converted.write_converted(out, converted.Converted(
        model.name, model.cfg.text, model.params, converted.sha256_of(folder / "yolo-fastest-1.1.weights"), None))
    again = load_model(out)
    assert again.cfg.text == model.cfg.text
    for layer, arrays in model.params.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(again.params[layer][name], array)
    stored = converted.read_converted(out)
    assert stored.source_sha256 == "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890"


def test_converted_file_for_another_cfg_is_refused(shared, tmp_path):
    cfg = parse_cfg(GROUPED, "grouped.cfg")
    params, _ = parse_weights(random_weights_bytes(cfg, 1), cfg)
    out = tmp_path / "g.h5"
    converted.write_converted(out, converted.Converted("g", GROUPED, params, "0" * 64, None))
    with pytest.raises(WeightsError, match="different architecture"):
        load_model(shared / "darknet" / "cfg" / "vgg-conv.cfg", out)


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError, match="cannot read"):
        load_model(bad)
