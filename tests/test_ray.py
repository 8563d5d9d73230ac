"""Batch dreaming on Ray Data (`batch --ray`, jaxdream.ray) on a local 2-CPU Ray instance: the same bytes as one
process, a stop halfway finished by --resume, and the command line joining a running cluster by its address."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import photos, process_env

from jaxdream import commands, interrupts
from jaxdream.cli import _ray_argv
from jaxdream.errors import Interrupted, OptionError

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the test extra has it)")

OPTIONS = {"layer": 2, "iters": 200, "octaves": 2}  # each batch lasts long enough to stop between


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs for this module; yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def dream(small_files, inputs: Path, out: Path, **extra):
    cfg, weights = small_files
    return commands.batch("nightmare", str(cfg), [str(inputs)], out, weights=str(weights), batch_size=2, fmt="png",
                          **OPTIONS, **extra)


def pictures(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def merged_inputs(out: Path) -> list[str]:
    return [json.loads(line)["input"] for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, small_files):
    """Twelve pictures of two sizes and a broken one, dreamed by one plain process."""
    folder = tmp_path_factory.mktemp("ray")
    photos(folder / "in", 8)
    photos(folder / "in" / "wide", 4, 20, 40)
    (folder / "in" / "broken.png").write_text("not an image")
    dream(small_files, folder / "in", folder / "one")
    return folder


def test_ray_actors_write_the_bytes_of_one_process(local_ray, one_process, small_files, tmp_path):
    summary = dream(small_files, one_process / "in", tmp_path / "ray", ray=True, ray_actors=2)
    assert summary.done == 12 and [Path(s).name for s, _ in summary.errors] == ["broken.png"]
    assert pictures(tmp_path / "ray") == pictures(one_process / "one")
    assert len(list((tmp_path / "ray").glob("manifest.ray-*.jsonl"))) == 2  # both actors dreamed
    assert sorted(merged_inputs(tmp_path / "ray")) == sorted(merged_inputs(one_process / "one"))  # each once


def test_a_ray_run_stopped_halfway_is_finished_by_the_command_line_with_resume(local_ray, one_process, small_files,
                                                                               tmp_path):
    out = tmp_path / "ray"

    def stop_after_one_batch(done: int, total: int) -> None:
        interrupts.request_stop()  # what Ctrl-C does

    try:
        with pytest.raises(Interrupted):
            dream(small_files, one_process / "in", out, ray=True, ray_actors=1, progress=stop_after_one_batch)
    finally:
        interrupts.STOP.clear()
    written = pictures(out)
    assert 0 < len(written) < 12
    cfg, weights = small_files
    result = subprocess.run(  # joins the running cluster by its address: `--ray ADDRESS`
        [sys.executable, "-c", "from jaxdream.cli import main; main()", "batch", "nightmare", str(cfg),
         str(one_process / "in"), "--weights", str(weights), "--out", str(out), "--batch-size", "2", "--format",
         "png", "--layer", "2", "--iters", "200", "--octaves", "2", "--ray", local_ray, "--resume"],
        capture_output=True, text=True, env=process_env(), timeout=300)
    assert result.returncode == 1, result.stderr  # the broken picture failed again; the rest are done
    # An actor stopped mid-batch may still finish a picture (atomically) after the driver returns: Ray stops the
    # actors of a finished job asynchronously, so 'already done' may exceed the count taken above.
    counts = re.search(r"(\d+) dreamed, (\d+) already done, 1 failed", result.stdout + result.stderr)
    assert counts, result.stdout + result.stderr
    dreamed, done = map(int, counts.groups())
    assert dreamed + done == 12 and done >= len(written)
    assert pictures(out) == pictures(one_process / "one")
    assert sorted(merged_inputs(out)) == sorted(merged_inputs(one_process / "one"))


def test_ray_options_are_checked_before_any_work(small_files, tmp_path, monkeypatch):
    photos(tmp_path / "in", 1)
    with pytest.raises(OptionError, match="leave out --shard"):
        dream(small_files, tmp_path / "in", tmp_path / "out", ray=True, shard="0/2")
    with pytest.raises(OptionError, match="no use without --ray"):
        dream(small_files, tmp_path / "in", tmp_path / "out", ray_actors=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(OptionError, match=r'pip install "jaxdream\[ray\]"'):
        dream(small_files, tmp_path / "in", tmp_path / "out", ray=True)


def test_an_address_after_ray_is_read_as_the_address_and_anything_else_as_an_input(tmp_path, monkeypatch):
    assert _ray_argv(["batch", "--ray", "auto", "in"]) == ["batch", "--ray", "--ray-address", "auto", "in"]
    assert _ray_argv(["--ray", "ray://head:10001"])[1:] == ["--ray-address", "ray://head:10001"]
    assert _ray_argv(["--ray", "10.0.0.1:6379"])[1:] == ["--ray-address", "10.0.0.1:6379"]
    assert _ray_argv(["--ray", "photos/", "--out", "o"]) == ["--ray", "photos/", "--out", "o"]
    assert _ray_argv(["in", "--ray"]) == ["in", "--ray"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "auto").mkdir()  # a folder named like an address is an input
    assert _ray_argv(["--ray", "auto"]) == ["--ray", "auto"]


def test_an_address_where_nothing_answers_is_refused_at_once():
    import socket

    from jaxdream.ray import _check_listening

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(OptionError, match="nothing answers there"):
            _check_listening(address)
    _check_listening("auto")  # Ray's own search for the local instance
