"""The cfg parser: every reference cfg parses; bad text gets one clear JaxdreamError naming file and line."""

from __future__ import annotations

import contextlib

import pytest
from conftest import SMALL_CFG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxdream.darknet import cfg as C
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.model import DarknetModel
from jaxdream.darknet.shapes import layer_shapes
from jaxdream.darknet.weights import parse_weights, random_weights_bytes
from jaxdream.errors import CfgError, JaxdreamError, OptionError
from jaxdream.weights import ARCHITECTURES

SMALL = (
    "[net]\nwidth=8\nheight=8\nchannels=3\n\n"
    "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
)


def test_every_reference_cfg_parses(shared):
    paths = sorted((shared / "darknet" / "cfg").glob("*.cfg")) + sorted((shared / "models").glob("*/*.cfg"))
    assert len(paths) >= 12
    for path in paths:
        cfg = C.load_cfg(path)
        assert layer_shapes(cfg)[-1][2] >= 1, path


def test_builtin_architectures_match_darknet_reference_networks(darknet_cfg):
    for name in ARCHITECTURES:
        ours = C.parse_cfg(ARCHITECTURES[name], name)
        ref = darknet_cfg(name)
        strip = lambda layers: [tuple(v for k, v in vars(x).items() if k not in ("line",)) for x in layers]
        assert strip(ours.layers) == strip(ref.layers), name


def test_tolerates_comments_spaces_and_crlf():
    text = "# comment\r\n[net]\r\nwidth = 8\r\n height=8 \r\n; other\r\n\r\n[maxpool]\r\nsize = 2\r\nstride=2\r\n"
    cfg = C.parse_cfg(text, "crlf.cfg")
    assert cfg.net.width == 8
    assert cfg.layers[0] == C.MaxPool(0, 7, size=2, stride=2, padding=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SMALL + "\n[frobnicate]\n", r"bad\.cfg:13: unknown section \[frobnicate\]; valid sections: .*convolutional"),
        (SMALL.replace("filters=4", "filterz=4"), r"bad\.cfg:7: unknown key 'filterz'.*valid keys: .*filters"),
        (SMALL.replace("filters=4", "filters=four"), r"bad\.cfg:7: .*filters='four' is not an integer"),
        (SMALL.replace("leaky", "sparkly"), r"bad\.cfg:11: .*activation='sparkly' is unknown; valid: linear"),
        (SMALL + "\n[route]\nlayers=-3\n", r"bad\.cfg:14: .*layers=-3 points at layer -2"),
        (SMALL + "\n[shortcut]\nfrom=5\n", r"bad\.cfg:14: .*from=5 points at layer 5"),
        ("width=3\n", r"bad\.cfg:1: option"),
        (SMALL.replace("size=3", "size=0"), r"bad\.cfg:8: .*size=0 must be at least 1"),
    ],
)
def test_errors_name_file_line_and_fix(text, message):
    with pytest.raises(CfgError, match=message):
        C.parse_cfg(text, "bad.cfg")


SECTIONS = st.sampled_from(["[net]", "[convolutional]", "[maxpool]", "[route]", "[shortcut]", "[connected]",
                            "[softmax]", "[avgpool]", "[upsample]", "[dropout]", "[crop]", "[yolo]", "[bogus]"])
KEYS = st.sampled_from(["filters", "size", "stride", "pad", "groups", "layers", "from", "output", "activation",
                        "padding", "batch_normalize", "width", "height", "channels", "group_id", "probability"])
VALUES = st.one_of(st.integers(-5, 70).map(str), st.sampled_from(["leaky", "linear", "-1,-2", "x", "", "1e9", "nan"]))
LINES = st.one_of(SECTIONS, st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=12))


def _exercise(text: str, blob: bytes) -> None:
    cfg = C.parse_cfg(text, "fuzz.cfg")
    layer_shapes(cfg)
    data = random_weights_bytes(cfg, 0) if sum(1 for _ in cfg.layers) < 12 else b""
    parse_weights(data[: len(blob) % (len(data) + 1)] + blob[:3], cfg, "fuzz.weights")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, max_size=25), st.binary(max_size=64))
def test_random_cfg_text_only_raises_jaxdream_errors(lines, blob):
    with contextlib.suppress(JaxdreamError):
        _exercise("[net]\nwidth=16\nheight=16\n" + "\n".join(lines), blob)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_reference_cfg_only_raises_jaxdream_errors(data):
    text = ARCHITECTURES["jnet-conv"].replace("width=224\nheight=224", "width=32\nheight=32")
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = data.draw(LINES)
    with contextlib.suppress(JaxdreamError):
        cfg = C.parse_cfg("\n".join(lines), "mutated.cfg")
        layer_shapes(cfg)
        parse_weights(data.draw(st.binary(max_size=200)), cfg, "mutated.weights")


def test_a_device_a_pipe_or_a_huge_file_is_refused_before_it_is_read(tmp_path):
    import os

    with pytest.raises(CfgError, match="regular file, not a character device"):
        C.load_cfg("/dev/zero")
    fifo = tmp_path / "pipe.cfg"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang here
    with pytest.raises(CfgError, match="not a pipe \\(FIFO\\)"):
        C.load_cfg(fifo)
    big = tmp_path / "big.cfg"
    with open(big, "wb") as handle:
        handle.truncate(C.MAX_CFG_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CfgError, match="more than the 1,048,576"):
        C.load_cfg(big)
    with pytest.raises(CfgError, match="not a folder"):
        C.load_cfg(tmp_path)


# Settings that must not be silently ignored or changed


def test_settings_that_would_be_ignored_are_refused(tmp_path):
    from jaxdream.sweep import parse_ints

    with pytest.raises(OptionError, match="whole numbers"):
        parse_ints("1.7", "octaves")
    crop = SMALL_CFG.replace("[convolutional]", "[crop]\ncrop_width=64\ncrop_height=64\n[convolutional]", 1)
    with pytest.raises(CfgError, match="a crop must fit inside its input"):
        DarknetModel("c", parse_cfg(crop, "crop.cfg"), {}).describe()
    with pytest.raises(CfgError, match="at most 2147483647"):
        parse_cfg(SMALL_CFG.replace("stride=1", "stride=99999999999999999999999", 1), "stride.cfg")
