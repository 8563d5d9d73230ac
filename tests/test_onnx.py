"""ONNX models against an independent implementation, onnxruntime: the real SqueezeNet 1.1, and a small graph for
every supported operator (random weights, odd sizes)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import jaxdream as jd  # noqa: E402
from jaxdream.errors import OptionError  # noqa: E402
from jaxdream.onnx.model import from_proto  # noqa: E402


def test_squeezenet_matches_onnxruntime_on_the_photos(squeezenet, squeezenet_dir, shared):
    from PIL import Image

    session = ort.InferenceSession(str(squeezenet_dir / "squeezenet1.1_fp16.onnx"))
    for path in sorted((shared / "data" / "images").glob("*.jpg")):
        with Image.open(path) as im:
            x = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        tensor = np.asarray(squeezenet.normalize(x[None]))[0].transpose(2, 0, 1)[None]
        reference = session.run(None, {"data_0": tensor.astype(np.float16)})[0].reshape(-1)
        ours = np.asarray(squeezenet.predict(x[None]))[0]
        np.testing.assert_allclose(ours, reference.astype(np.float32), atol=1e-3)
    assert squeezenet.labels[int(ours.argmax())] == squeezenet.labels[int(reference.argmax())]


def test_without_labels_a_1000_class_model_names_imagenet_classes_and_agrees_with_onnxruntime_on_photos(
        squeezenet_dir, shared, caplog):
    """The whole photo through our preprocessing (the caffe preset's antialiased resize) gives onnxruntime's top-1
    on the photo resized by Pillow, the usual way to feed it."""
    from PIL import Image

    with caplog.at_level("WARNING", logger="jaxdream"):
        model = jd.load_model(squeezenet_dir / "squeezenet1.1_fp16.onnx", preprocess="caffe")
    assert "standard ImageNet class names" in caplog.text
    listed = (squeezenet_dir / "labels.txt").read_text().splitlines()
    assert len(model.labels) == 1000 and model.labels[9] == "ostrich" and "ostrich" in listed[9]
    session = ort.InferenceSession(str(squeezenet_dir / "squeezenet1.1_fp16.onnx"))
    for path in sorted((shared / "data" / "images").glob("*.jpg")):
        with Image.open(path) as im:
            small = np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        tensor = np.asarray(model.normalize(small[None]))[0].transpose(2, 0, 1)[None]
        reference = session.run(None, {"data_0": tensor.astype(np.float16)})[0].reshape(-1)
        ours = np.asarray(model.predict(jd.load_image(path)[None]))[0]
        assert int(ours.argmax()) == int(reference.argmax()), path.name


def test_squeezenet_layers_by_name_dream(squeezenet, shared):
    x = jd.load_image(shared / "data" / "images" / "dog.jpg")[::3, ::3]
    out = jd.nightmare(squeezenet, x, "fire5/concat_1", iters=2)
    assert out.shape == (1, 1, *x.shape) and np.abs(out[0, 0] - x).mean() > 1e-3
    assert squeezenet.describe()[squeezenet.resolve_layer("fire5/concat_1")]["type"] == "Concat"
    with pytest.raises(OptionError, match="has no layer 'fire55'"):
        squeezenet.resolve_layer("fire55")


def _model(nodes, initializers, shape=(1, 3, 11, 13), opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a.astype(np.float32) if a.dtype.kind == "f" else a, name)
                               for name, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _compare(proto, shape=(1, 3, 11, 13), atol=1e-5):
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    reference = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    model = from_proto(proto, "g", "test", "raw")
    ours = np.asarray(model.run(model.params, x.transpose(0, 2, 3, 1), (model.num_layers - 1,))[
        model.num_layers - 1])
    ours = ours.transpose(0, 3, 1, 2) if reference.ndim == 4 else ours.reshape(reference.shape)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=atol)


RNG = np.random.default_rng(1)
W = {"w": RNG.normal(0, 0.3, (6, 3, 3, 3)), "b": RNG.normal(0, 0.1, 6), "wg": RNG.normal(0, 0.3, (6, 1, 3, 3))}
CASES = {
    "conv pads strides": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 2, 1], strides=[2, 1])], W),
    "conv dilated": ([helper.make_node("Conv", ["x", "w"], ["y"], dilations=[2, 2], pads=[2, 1, 2, 3])], W),
    "conv same upper": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")], W),
    "conv grouped": ([helper.make_node("Conv", ["x", "wg"], ["y"], group=3, pads=[1, 1, 1, 1])], W),
    "maxpool ceil": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                     {}),
    "avgpool ceil pad": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[1, 1, 1, 1], ceil_mode=1)], {}),
    "avgpool count pad": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2],
                                            pads=[1, 1, 1, 1], count_include_pad=1)], {}),
    "lrn": ([helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.1, beta=0.75, bias=2.0)], {}),
    "batchnorm": ([helper.make_node("BatchNormalization", ["x", "s", "o", "m", "v"], ["y"], epsilon=1e-3)],
                  {"s": RNG.normal(1, 0.1, 3), "o": RNG.normal(0, 0.1, 3), "m": RNG.normal(0, 0.1, 3),
                   "v": RNG.uniform(0.5, 1.5, 3)}),
    "activations": ([helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.2), helper.make_node("Sigmoid", ["a"], ["b"]),
                     helper.make_node("Tanh", ["b"], ["c"]), helper.make_node("Relu", ["c"], ["d"]),
                     helper.make_node("Clip", ["d", "lo", "hi"], ["y"])],
                    {"lo": np.array(0.1, np.float32), "hi": np.array(0.5, np.float32)}),
    "arithmetic concat": ([helper.make_node("Add", ["x", "k"], ["a"]), helper.make_node("Mul", ["a", "x"], ["b"]),
                           helper.make_node("Sub", ["b", "k"], ["c"]), helper.make_node("Div", ["c", "two"], ["d"]),
                           helper.make_node("Concat", ["d", "x"], ["y"], axis=1)],
                          {"k": RNG.normal(0, 1, (1, 3, 1, 1)), "two": np.array(2.0, np.float32)}),
    "gemm after flatten": ([helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                            helper.make_node("Flatten", ["g"], ["f"]),
                            helper.make_node("Gemm", ["f", "gw", "gb"], ["l"], transB=1, alpha=0.5),
                            helper.make_node("Dropout", ["l"], ["d"]),
                            helper.make_node("Softmax", ["d"], ["y"])],
                           {"gw": RNG.normal(0, 1, (5, 3)), "gb": RNG.normal(0, 1, 5)}),
    "shape folding": ([helper.make_node("Shape", ["x"], ["s"]),
                       helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array(0, np.int64))),
                       helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
                       helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
                       helper.make_node("Concat", ["n1", "minus"], ["target"], axis=0),
                       helper.make_node("Reshape", ["x", "target"], ["r"]),
                       helper.make_node("MatMul", ["r", "mw"], ["y"])],
                      {"ax": np.array([0], np.int64), "minus": np.array([-1], np.int64),
                       "mw": RNG.normal(0, 0.1, (3 * 11 * 13, 4))}),
    "transpose squeeze pad identity": ([helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
                                        helper.make_node("Transpose", ["p"], ["t"], perm=[0, 1, 3, 2]),
                                        helper.make_node("Unsqueeze", ["t", "ax"], ["u"]),
                                        helper.make_node("Squeeze", ["u", "ax"], ["s"]),
                                        helper.make_node("Identity", ["s"], ["y"])],
                                       {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
                                        "ax": np.array([4], np.int64)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_operator_matches_onnxruntime(case):
    nodes, weights = CASES[case]
    _compare(_model(nodes, {k: np.asarray(v) for k, v in weights.items()}))


def test_opset7_softmax_and_old_style_attributes():
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]), helper.make_node("Squeeze", ["u"], ["s"], axes=[0]),
             helper.make_node("Softmax", ["s"], ["y"], axis=1)]
    _compare(_model(nodes, {}, opset=11))


def test_the_input_gradient_matches_a_central_difference():
    """Along random directions (a float32 function: single coordinates drown in rounding)."""
    import jax

    proto = _model([*CASES["conv grouped"][0][:1], helper.make_node("Tanh", ["y"], ["z"])],
                   {k: np.asarray(v) for k, v in W.items()}, shape=(1, 3, 7, 6))
    model = from_proto(proto, "g", "test", "raw")
    last = model.num_layers - 1
    f = lambda image: (model.run(model.params, image[None], (last,))[last] ** 2).sum()
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (7, 6, 3)).astype(np.float32)
    grad = np.asarray(jax.jit(jax.grad(f))(x), np.float64)
    for _ in range(3):
        v = rng.normal(0, 1, x.shape).astype(np.float32)
        numeric = (float(f(x + 1e-2 * v)) - float(f(x - 1e-2 * v))) / 2e-2
        assert float(np.sum(grad * v)) == pytest.approx(numeric, rel=1e-2)


def test_an_unsupported_operator_is_named_with_its_opset():
    proto = _model([helper.make_node("Einsum", ["x", "x"], ["y"], name="mix", equation="ij,jk->ik")], {})
    with pytest.raises(OptionError, match=r"node 'mix' is a Einsum \(opset 13\)"):
        from_proto(proto, "g", "test", "raw")


def test_a_converted_onnx_model_is_the_same_model(squeezenet, tmp_path, shared):
    from jaxdream import converted

    converted.write_converted(tmp_path / "s.h5", squeezenet.to_converted("0" * 64))
    again = jd.load_model(tmp_path / "s.h5")
    x = jd.load_image(shared / "data" / "images" / "kite.jpg")[None]
    np.testing.assert_array_equal(np.asarray(again.logits(x)), np.asarray(squeezenet.logits(x)))
    assert again.labels == squeezenet.labels and again.preprocessing == "caffe"


def test_lucid_makes_squeezenet_rank_the_chosen_class_first(squeezenet_dir, shared, tmp_path, monkeypatch, capsys):
    import json

    from conftest import cli

    model = [str(squeezenet_dir / "squeezenet1.1_fp16.onnx"), "--preprocess", "caffe"]  # no --labels: ImageNet's
    code, _, err = cli(monkeypatch, capsys, "lucid", model[0], shared / "data" / "images" / "dog.jpg", *model[1:],
                       "--class", "ostrich", "--out", tmp_path, "--quiet")
    assert code == 0, err
    _, result, _ = cli(monkeypatch, capsys, "classify", model[0], tmp_path / "dog_squeezenet1_class-ostrich_000000.jpg",
                       *model[1:], "--json", "--top", "1")
    assert json.loads(result)[0]["top"][0]["name"].startswith("ostrich")


def _conv(name="c", **attrs):
    return helper.make_node("Conv", ["x", "w"], ["y"], name=name, **attrs)


MALFORMED = {
    "zero stride": ([_conv(strides=[0, 1])], W, r"node 'c' \(Conv\): strides=\[0, 1\] must be at least 1"),
    "zero group": ([_conv(group=0)], W, r"node 'c' \(Conv\): group=\[0\] must be at least 1"),
    "negative dilation": ([_conv(dilations=[-1, 1])], W, r"node 'c' \(Conv\): dilations=\[-1, 1\] must be at least 1"),
    "zero kernel": ([helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[0, 2])], {},
                    r"node 'p' \(MaxPool\): kernel_shape=\[0, 2\] must be at least 1"),
    "negative pads": ([_conv(pads=[-1, 0, 0, 0])], W, r"node 'c' \(Conv\): pads=\[-1, 0, 0, 0\] must be .* 0 or more"),
    "huge pooling window": ([helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[50, 50])], {},
                            r"node 'p' \(AveragePool\): the window .* is larger than the padded input"),
    "kernel mismatch": ([_conv()], {"w": RNG.normal(0, 1, (6, 2, 3, 3))},
                        r"node 'c' \(Conv\): the weight of shape \(6, 2, 3, 3\) \(group 1\) does not fit"),
    "transpose perm": ([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[0, 1, 2, 5])], {},
                       r"node 't' \(Transpose\): perm=\[0, 1, 2, 5\] is not a permutation"),
    "transpose rank": ([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[0, 2, 1])], {},
                       r"node 't' \(Transpose\): perm=\[0, 2, 1\] does not fit a 4-D input"),
    "concat axis": ([helper.make_node("Concat", ["x", "x"], ["y"], name="k", axis=7)], {},
                    r"node 'k' \(Concat\): axis=7 is out of range for a 4-D input"),
    "gather index": ([helper.make_node("Shape", ["x"], ["s"]),
                      helper.make_node("Gather", ["s", "i"], ["y"], name="g", axis=0)],
                     {"i": np.array([9], np.int64)}, r"node 'g' \(Gather\): indices \[9\] are out of range"),
    "reshape 10^12": ([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
                      {"s": np.array([10**6, 10**6], np.int64)},
                      r"node 'r' \(Reshape\): cannot reshape \(1, 3, 11, 13\) \(429 values\) to \[1000000, 1000000\]"),
    "huge pad": ([helper.make_node("Pad", ["x", "pads"], ["y"], name="q")],
                 {"pads": np.array([0, 0, 10**5, 10**5, 0, 0, 10**5, 10**5], np.int64)},
                 r"node 'q' \(Pad\): its output of shape \(1, 3, 200011, 200013\) has more than"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_graph_is_refused_at_load_naming_the_node(case):
    from jaxdream.errors import WeightsError

    nodes, weights, message = MALFORMED[case]
    with pytest.raises(WeightsError, match=rf"^test: {message}"):
        from_proto(_model(nodes, {k: np.asarray(v) for k, v in weights.items()}), "g", "test", "raw")


def test_an_int_input_and_bad_initializers_are_refused_before_allocating():
    from jaxdream.errors import WeightsError

    relu = [helper.make_node("Relu", ["x"], ["y"])]
    proto = _model(relu, {})
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(WeightsError, match=r"test: the input 'x' is declared of ONNX type 7 \(not a floating"):
        from_proto(proto, "g", "test", "raw")
    for dims, data, message in [([2**31], b"", r"declares shape \[2147483648\]; at most 2,147,483,647 values"),
                                ([2**20, 8], b"\0" * 12, r"declares shape \[1048576, 8\] \(8,388,608 values\) but "
                                                         r"holds 3"),
                                ([-3], b"", r"declares shape \[-3\]; at most .* none negative")]:
        proto = _model([helper.make_node("Add", ["x", "w"], ["y"])], {})
        tensor = proto.graph.initializer.add()
        tensor.name, tensor.data_type, tensor.raw_data = "w", TensorProto.FLOAT, data
        tensor.dims.extend(dims)
        with pytest.raises(WeightsError, match=rf"test: initializer: the tensor 'w' {message}"):
            from_proto(proto, "g", "test", "raw")


def test_an_onnx_file_that_is_a_device_is_refused():
    from jaxdream.errors import WeightsError
    from jaxdream.onnx.model import load_onnx

    with pytest.raises(WeightsError, match=r"^/dev/zero: the ONNX file must be a regular file, not a character dev"):
        load_onnx("/dev/zero")
