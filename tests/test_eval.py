"""`jaxdream eval` and the class orders behind it: the numbers are each model's own `classify`, recomputed; classes
match across Darknet's order and the sorted WordNet order by id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from jaxdream import commands, imagenet
from jaxdream.errors import OptionError
from jaxdream.evaluation import default_layer, find_pictures
from jaxdream.image import load_image, short_side_crop

BALD_EAGLE = "n01614925"


def test_both_orders_hold_the_same_ids_and_the_sorted_one_is_keras_class_index(mobilenet_dir: Path):
    keras = json.loads((mobilenet_dir / "imagenet_class_index.json").read_text())
    assert imagenet.order_wnids(imagenet.WORDNET) == tuple(keras[str(i)][0] for i in range(1000))
    assert sorted(imagenet.order_wnids(imagenet.DARKNET)) == list(imagenet.order_wnids(imagenet.WORDNET))


def test_models_are_told_apart_by_their_names_and_a_class_maps_across_orders(tiny_darknet, mobilenet, squeezenet,
                                                                           shared: Path):
    assert imagenet.class_order(tiny_darknet) == imagenet.DARKNET
    assert imagenet.class_order(mobilenet) == imagenet.WORDNET == imagenet.class_order(squeezenet)
    darknet_wnids = (shared / "darknet" / "imagenet.labels.list").read_text().split()
    tiny_index = imagenet.class_index(tiny_darknet, BALD_EAGLE)
    assert darknet_wnids[tiny_index] == BALD_EAGLE and tiny_darknet.class_names()[tiny_index] == "bald eagle"
    assert mobilenet.class_names()[imagenet.class_index(mobilenet, BALD_EAGLE)] == "bald_eagle"
    assert imagenet.wnid_named("bald_eagle") == imagenet.wnid_named("bald eagle") == BALD_EAGLE
    assert imagenet.wnid_named("no such class") is None
    with pytest.raises(OptionError, match="names 2 ImageNet classes"):
        imagenet.wnid_named("crane")  # the bird and the machine


def test_a_model_without_labels_follows_its_backends_convention(tiny_darknet, mobilenet):
    import dataclasses

    for model, order in ((tiny_darknet, imagenet.DARKNET), (mobilenet, imagenet.WORDNET)):
        unlabelled = dataclasses.replace(model, labels=None) if dataclasses.is_dataclass(model) else None
        if unlabelled is None:
            pytest.skip(f"{type(model).__name__} is not a dataclass")
        assert unlabelled.class_names()[0] == "0" and imagenet.class_order(unlabelled) == order


def test_a_model_that_is_not_an_imagenet_classifier_is_refused_by_name(small):
    with pytest.raises(OptionError, match=small.name):
        imagenet.class_order(small)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Two Tiny Darknet class renders (an atlas of 2 classes, a few steps) and a render batch of two."""
    folder = tmp_path_factory.mktemp("eval")
    commands.atlas("tiny", None, None, folder, classes="397,9", size="64", steps=6)
    commands.render("tiny", None, "class:bald eagle", out=folder, size="64", steps=4, batch=2, diversity=0.1)
    return folder


def test_eval_gives_each_models_classify_numbers(rendered: Path, tmp_path: Path, mobilenet_dir: Path):
    mobilenet = str(mobilenet_dir / "mobilenet_v1_0.25_224.h5")
    result, written = commands.evaluate([rendered], f"tiny,{mobilenet}", output=tmp_path / "e.json")
    assert [p.name for p in written] == ["e.json", "e.md"] and json.loads(written[0].read_text()) == result
    assert len(result["pictures"]) == 4
    for row in result["pictures"]:
        picture = Path(row["picture"])
        for spec, name in (("tiny", "tiny"), (mobilenet, "mobilenet_0.25_224")):
            seen = commands.classify(spec, [picture], top=1000)[0]["top"]
            loaded = commands.load(spec)
            index = imagenet.class_index(loaded, row["target"])
            rank = next(k for k, entry in enumerate(seen, 1) if entry["index"] == index)
            assert row["models"][name]["rank"] == rank
            assert row["models"][name]["prob"] == pytest.approx(seen[rank - 1]["prob"], rel=1e-6)
        assert row["made_by"] == "tiny" and row["self"] == row["models"]["tiny"]
        assert row["transfer_top1"] == float(row["models"]["mobilenet_0.25_224"]["rank"] == 1)
        assert row["transfer_top5"] == float(row["models"]["mobilenet_0.25_224"]["rank"] <= 5)
    targets = sorted(row["target_name"] for row in result["pictures"])
    assert targets == ["Persian cat", "bald eagle", "bald eagle", "bald eagle"]
    summary = result["summary"][0]
    assert summary["pictures"] == 4
    assert summary["self_prob"] == pytest.approx(np.mean([r["self"]["prob"] for r in result["pictures"]]))
    assert "| tiny | 4 |" in written[1].read_text()


def test_plausibility_and_diversity_against_a_numpy_recomputation(rendered: Path, tmp_path: Path, shared: Path,
                                                                  tiny_darknet):
    refs = tmp_path / "refs" / BALD_EAGLE
    refs.mkdir(parents=True)
    (refs / "eagle.jpg").write_bytes((shared / "data" / "images" / "eagle.jpg").read_bytes())
    result, _ = commands.evaluate([rendered], "tiny", output=tmp_path / "e.json", references=tmp_path / "refs")
    layer = default_layer(tiny_darknet)

    def pooled(image: np.ndarray) -> np.ndarray:
        return np.asarray(tiny_darknet.forward(image[None], (layer,))[layer], np.float64)[0].mean(axis=(0, 1))

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    photo = pooled(np.asarray(short_side_crop(load_image(refs / "eagle.jpg"), 224, 224)))
    eagles = [row for row in result["pictures"] if row["target"] == BALD_EAGLE]
    for row in eagles:
        assert row["plausibility"] == pytest.approx(cosine(pooled(load_image(row["picture"])), photo), abs=1e-5)
    cat = next(row for row in result["pictures"] if row["target_name"] == "Persian cat")
    assert "plausibility" not in cat and "diversity" not in cat  # no reference photos; alone in its run
    pair = [row for row in eagles if row["mode"] == "render"]
    assert len(pair) == 2 and pair[0]["run"] == pair[1]["run"]
    expected = 1.0 - cosine(*(pooled(load_image(row["picture"])) for row in pair))
    assert pair[0]["diversity"] == pair[1]["diversity"] == pytest.approx(expected, abs=1e-5)


def test_an_accentuation_records_its_photo_and_eval_measures_the_distance(tmp_path: Path, tiny_darknet):
    photo = tmp_path / "dog.png"
    from jaxdream.image import save_image
    from jaxdream.weights import SAMPLE_IMAGE

    save_image(photo, np.asarray(short_side_crop(load_image(SAMPLE_IMAGE), 64, 64)))
    out = commands.accentuate("tiny", None, photo, "class:malamute", reg_layer="8", out=tmp_path / "acc", steps=4)
    result, _ = commands.evaluate([out], "tiny", output=tmp_path / "e.json")
    row = result["pictures"][0]
    mine, seed = (np.asarray(tiny_darknet.forward(load_image(p)[None], (8,))[8], np.float64) for p in (out, photo))
    assert row["mode"] == "accentuate" and row["target_name"] == "malamute"
    assert row["accentuation_distance"] == pytest.approx(np.linalg.norm(mine - seed) / np.linalg.norm(seed),
                                                         rel=1e-4)


def test_a_channel_render_records_no_class_and_gets_no_class_measures(tmp_path: Path):
    files, _ = commands.render("tiny", None, "channel:5:3", out=tmp_path, size="48", steps=2, batch=2)
    pictures = find_pictures([files[0]])
    assert pictures[0].record["target"] is None and pictures[0].record["model"] == "tiny"
    result, _ = commands.evaluate([tmp_path], "tiny", output=tmp_path / "e.json")
    assert all(row["models"] == {} and "diversity" not in row for row in result["pictures"])
    with pytest.raises(OptionError, match="two models are named tiny"):
        commands.evaluate([tmp_path], "tiny,tiny", output=tmp_path / "e.json")


def test_pictures_eval_cannot_vouch_for_get_one_clear_error(rendered: Path, tmp_path: Path):
    stray = tmp_path / "stray.png"
    stray.write_bytes(next(rendered.glob("tiny_class_0009.png")).read_bytes())
    with pytest.raises(OptionError, match="no manifest record"):
        find_pictures([stray])
    with pytest.raises(OptionError, match=r"no manifest\.jsonl records"):
        find_pictures([tmp_path])
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in rendered.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "tiny_class_0009.png").write_bytes(b"changed")
    with pytest.raises(OptionError, match="changed since jaxdream wrote it"):
        find_pictures([copy / "tiny_class_0009.png"])
    left = [p.path.name for p in find_pictures([copy])]  # a folder's changed picture is left out (with a note)
    assert len(left) == 3 and "tiny_class_0009.png" not in left


def test_the_eval_command_prints_the_summary_and_refuses_an_output_that_is_a_picture(rendered: Path, tmp_path: Path,
                                                                                    monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "eval", str(rendered), "--models", "tiny", "-o",
                         str(tmp_path / "r.json"))
    assert code == 0 and "| tiny | 4 |" in out and (tmp_path / "r.md").is_file()
    picture = next(rendered.glob("tiny_class_0009.png"))
    before = picture.read_bytes()
    code, _, err = cli(monkeypatch, capsys, "eval", str(picture), "--models", "tiny", "-o", str(picture))
    assert code != 0 and "PICTURE" in " ".join(err) and picture.read_bytes() == before
