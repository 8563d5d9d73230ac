"""Writes that fail part-way (a full disk; here a real file-size limit makes the OS refuse the write) raise one
clear error naming the file, keep what the file held before, and leave no temp file behind."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

import jaxdream as jd
from jaxdream import converted
from jaxdream.darknet.cfg import parse_cfg
from jaxdream.darknet.weights import parse_weights, random_weights_bytes
from jaxdream.errors import ImageError, JaxdreamError, WeightsError
from jaxdream.image import save_image
from jaxdream.manifests import Manifest, read_records
from jaxdream.weights import ARCHITECTURES

LIMIT = 4096


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Writes past ``nbytes`` fail with EFBIG, as writes on a full disk fail with ENOSPC."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _noise(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_a_failed_image_write_keeps_the_finished_image(tmp_path):
    out = tmp_path / "dream.png"
    save_image(out, _noise(8, 8))
    before = out.read_bytes()
    with file_size_limit(LIMIT), pytest.raises(ImageError, match=r"dream\.png: cannot write the image \(File too"):
        save_image(out, _noise(200, 200))  # ~120 kB of incompressible PNG
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["dream.png"]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ImageError, match=r"out\.png: cannot write the image: the folder .*nowhere does not exist"):
        save_image(tmp_path / "nowhere" / "out.png", _noise(4, 4))


def test_a_failed_converted_write_leaves_no_temp_file(tmp_path):
    """HDF5 writing to disk itself crashed the process (SIGSEGV) at this limit; in-memory HDF5 must not."""
    cfg = parse_cfg(ARCHITECTURES["vgg-conv"], "vgg-conv")
    params, _ = parse_weights(random_weights_bytes(cfg, 1), cfg)
    out = tmp_path / "vgg.h5"
    with file_size_limit(LIMIT), pytest.raises(WeightsError, match=r"vgg\.h5: cannot write the converted model"):
        converted.write_converted(out, converted.Converted("vgg-conv", cfg.text, params, "0" * 64, None))
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_line_cut_by_a_kill_does_not_swallow_the_next_record(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"input": "a.jpg", "status": "done"})
    with open(manifest.path, "a") as handle:
        handle.write('{"input": "b.jpg", "sta')  # the process died mid-line
    manifest.append({"input": "c.jpg", "status": "done"})
    assert [r["input"] for r in read_records(tmp_path)] == ["a.jpg", "c.jpg"]


def test_a_full_manifest_names_itself_and_the_way_out(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"input": "a.jpg", "status": "done"})
    with file_size_limit(manifest.path.stat().st_size + 10), \
            pytest.raises(JaxdreamError, match=r"manifest\.jsonl: cannot append .*--resume"):
        manifest.append({"input": "b.jpg", "status": "done", "outputs": ["x" * 100]})
    assert [r["input"] for r in read_records(tmp_path)] == ["a.jpg"]


# Links planted in a shared output folder


def test_a_link_planted_at_the_old_temp_name_or_the_output_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "shared"
    out.mkdir()
    (out / f".dream.png.tmp{os.getpid()}").symlink_to(victim)  # the name the writer used to pick
    (out / "dream.png").symlink_to(victim)
    jd.save_image(out / "dream.png", np.full((4, 4, 3), 0.5, np.float32))
    assert victim.read_text() == "precious"
    assert not (out / "dream.png").is_symlink()
    with Image.open(out / "dream.png") as im:
        assert im.size == (4, 4)
