"""Darknet .weights reading/writing and jaxdream's converted .h5, checked against the cfg byte count."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdream import converted, files
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
        model.name, model.cfg.text, model.params, files.sha256_of(folder / "yolo-fastest-1.1.weights"), None))
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


def test_weights_larger_than_the_cfg_implies_a_device_or_a_pipe_are_refused_unread(tmp_path):
    import os

    cfg = parse_cfg(GROUPED, "grouped.cfg")
    big = tmp_path / "big.weights"
    with open(big, "wb") as handle:
        handle.truncate(1 << 40)  # a sparse terabyte: reading it whole would be a MemoryError
    with pytest.raises(WeightsError, match=r"more than the .* it may; the cfg grouped.cfg needs at most"):
        read_weights(big, cfg)
    with pytest.raises(WeightsError, match="regular file, not a character device"):
        read_weights("/dev/zero", cfg)
    fifo = tmp_path / "pipe.weights"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="not a pipe \\(FIFO\\)"):
        read_weights(fifo, cfg)


def _classifier_h5(path, labels):
    from jaxdream.darknet.model import model_from_bytes

    cfg = parse_cfg(GROUPED + "\n[softmax]\n", "grouped.cfg")
    model = model_from_bytes(cfg, random_weights_bytes(cfg, 3))
    converted.write_converted(path, converted.Converted("g", cfg.text, model.params, "0" * 64, labels))


def test_a_converted_label_list_of_the_wrong_length_is_refused(tmp_path):
    _classifier_h5(tmp_path / "ok.h5", tuple("abcde"))
    assert load_model(tmp_path / "ok.h5").labels == tuple("abcde")
    _classifier_h5(tmp_path / "short.h5", ("a", "b"))
    with pytest.raises(WeightsError, match=r"short\.h5: the entry 'labels' lists 2 names for a model with 5 classes"):
        load_model(tmp_path / "short.h5")


@pytest.mark.parametrize("how", ["virtual", "external"])
def test_a_converted_parameter_stored_outside_the_file_is_refused(tmp_path, how):
    import h5py

    path = tmp_path / "model.h5"
    _classifier_h5(path, None)
    outside = tmp_path / "secret.bin"
    with h5py.File(path, "a") as f:
        entry = "params/layer_2/bias"
        shape = f[entry].shape
        del f[entry]
        if how == "external":
            outside.write_bytes(b"\0" * 4 * int(np.prod(shape)))
            f.create_dataset(entry, shape=shape, dtype="f4", external=[(str(outside), 0, 4 * int(np.prod(shape)))])
        else:
            with h5py.File(tmp_path / "other.h5", "w") as other:
                other.create_dataset("x", data=np.zeros(shape, np.float32))
            layout = h5py.VirtualLayout(shape=shape, dtype="f4")
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=shape)
            f.create_virtual_dataset(entry, layout)
    message = "a virtual dataset" if how == "virtual" else "stored in an external file"
    with pytest.raises(WeightsError, match=rf"model\.h5: the entry 'params/layer_2/bias' is {message}"):
        load_model(path)
