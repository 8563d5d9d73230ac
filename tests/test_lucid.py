"""Classifiers and class-targeted dreaming on the real Tiny Darknet (bundled; ../shared/models/tiny-darknet)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cli

import jaxdream as jd
from jaxdream.dream.lucid_mode import parse_classes, target_vector, top_classes
from jaxdream.errors import OptionError
from jaxdream.image import to_uint8

# Darknet's published `classifier predict ... tiny.weights data/dog.jpg` output (shared/models/SOURCES.md).
DARKNET_DOG_TOP5 = [("malamute", 14.51), ("Newfoundland", 6.09), ("dogsled", 5.59), ("standard schnauzer", 4.55),
                    ("Eskimo dog", 4.05)]


@pytest.fixture(scope="module")
def tiny(tiny_darknet):
    return tiny_darknet


@pytest.fixture(scope="module")
def dog():
    from jaxdream.weights import SAMPLE_IMAGE

    return jd.load_image(SAMPLE_IMAGE)


def _as_written(x: np.ndarray) -> np.ndarray:
    return to_uint8(x).astype(np.float32) / 255.0  # what classify sees after the file is written and read back


def test_tiny_darknet_classifies_dog_as_darknet_does(tiny, dog):
    top = top_classes(tiny, dog[None], 5)[0]
    assert [row["name"] for row in top] == [name for name, _ in DARKNET_DOG_TOP5]
    for row, (_, percent) in zip(top, DARKNET_DOG_TOP5, strict=True):
        assert abs(100 * row["prob"] - percent) < 0.5  # JPEG decoders differ (stb_image vs libjpeg)


def test_logits_feed_the_softmax(tiny, dog):
    logits = np.asarray(tiny.logits(dog[None]), np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(np.asarray(tiny.predict(dog[None])), probs, atol=1e-6)


def test_lucid_makes_ostrich_the_top_class(tiny, dog):
    dreamed = jd.lucid(tiny, dog, "ostrich", iters=20, seed=0)[0, 0]
    assert top_classes(tiny, _as_written(dreamed)[None], 1)[0][0]["name"] == "ostrich"
    assert np.abs(dreamed - dog).mean() < 0.1  # still the dog photo, not noise


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fifty_fifty_mix_puts_both_classes_in_the_top_two(tiny, dog, seed):
    dreamed = jd.lucid(tiny, dog, "ostrich:0.5,pelican:0.5", iters=20, seed=seed)[0, 0]
    names = {row["name"] for row in top_classes(tiny, _as_written(dreamed)[None], 2)[0]}
    assert names == {"ostrich", "pelican"}


def test_class_specs(tiny):
    labels = tiny.labels
    assert parse_classes("ostrich", labels) == {384: 1.0}
    assert parse_classes(9, labels) == {9: 1.0}
    assert parse_classes("ostrich:0.7, 438:0.3", labels) == {384: 0.7, 438: 0.3}
    assert parse_classes({"Eskimo_dog": 2.0}, labels) == {labels.index("Eskimo dog"): 2.0}
    np.testing.assert_allclose(target_vector({1: 3.0, 2: 1.0}, 4, 100.0), [0, 75, 25, 0])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ostrch", r"unknown class 'ostrch'; closest: 384 \(ostrich\)"),
        ("crane", r"ambiguous: 428 \(crane\), 544 \(crane\)"),
        ("1000", "class index 1000 is out of range"),
        ("", "no class given"),
        ("ostrich:0", "must be a positive number"),
    ],
)
def test_bad_class_specs(tiny, spec, message):
    with pytest.raises(OptionError, match=message):
        parse_classes(spec, tiny.labels)


# Inputs of one name, class weights that overflow


def test_lucid_with_two_inputs_of_one_name_writes_two_files(tmp_path, shared, monkeypatch, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        jd.save_image(tmp_path / folder / "dog.png", np.random.default_rng(len(folder)).random((40, 40, 3)))
    folder = shared / "models" / "tiny-darknet"
    code, _, err = cli(monkeypatch, capsys, "lucid", folder / "tiny.cfg", tmp_path / "a" / "dog.png",
                       tmp_path / "b" / "dog.png", "--weights", folder / "tiny.weights", "--class", "ostrich",
                       "--iters", "1", "--out", tmp_path / "out", "--quiet")
    assert code == 0, err
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_class_weights_that_overflow_are_refused(tiny_darknet):
    with pytest.raises(OptionError, match="class weights are too large"):
        jd.lucid(tiny_darknet, np.full((32, 32, 3), 0.5, np.float32), "ostrich:1e308,pelican:1e308", iters=1)
