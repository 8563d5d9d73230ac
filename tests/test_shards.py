"""Past one machine without a coordinator: shards, claims through leases, one merge; and the multi-process merge
that waits for this launch, not an earlier one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import batch_job, photos, process_env

from jaxdream import batch as batching
from jaxdream import shards
from jaxdream.errors import JaxdreamError, OptionError

CLI = [sys.executable, "-c", "from jaxdream.cli import main; main()"]


def pictures(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_shard_text_and_job_array_environments(monkeypatch):
    assert shards.parse_shard("2/4") == shards.Shard(2, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(OptionError, match="write I/N"):
            shards.parse_shard(bad)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP",
                 "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(OptionError, match="none is set here"):
        shards.shard_from_environment(None)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")  # sbatch --array=5-8
    assert shards.shard_from_environment(None) == shards.Shard(2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "14")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")  # sbatch --array=10-16:2
    assert shards.shard_from_environment(None) == shards.Shard(2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "13")
    with pytest.raises(OptionError, match="not task k of an array"):
        shards.shard_from_environment(None)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert shards.shard_from_environment(5) == shards.Shard(3, 5)
    with pytest.raises(OptionError, match="--shards N"):
        shards.shard_from_environment(None)


def test_shards_of_the_whole_plan_give_one_process_bytes_and_merge_finds_gaps_and_repeats(small, tmp_path):
    files = photos(tmp_path / "in", 7)
    (tmp_path / "in" / "broken.png").write_text("not an image")
    files = sorted((tmp_path / "in").glob("*.png"))
    batching.run_batch(small, batch_job(small), files, tmp_path / "one", batch_size=2)
    out = tmp_path / "sharded"
    for index in (0, 2):  # shard 1 of 3 has not run yet
        batching.run_batch(small, batch_job(small), files, out, batch_size=2, shard=shards.Shard(index, 3))
    partial = shards.merge(out)
    assert partial.missing and not partial.complete and partial.duplicated == 0
    summary = batching.run_batch(small, batch_job(small), files, out, batch_size=2, shard=shards.Shard(1, 3))
    assert summary.done + len(summary.errors) == len(partial.missing)  # broken.png: the plan's last "batch"
    again = batching.run_batch(small, batch_job(small), files, out, batch_size=2, shard=shards.Shard(1, 3))
    assert again.done == 0 and again.skipped == summary.done  # a rerun shard redoes nothing
    merged = shards.merge(out)
    assert merged.complete and merged.done == 7 and [Path(s).name for s in merged.failed] == ["broken.png"]
    assert pictures(out) == pictures(tmp_path / "one")
    records = [json.loads(line) for line in merged.manifest.read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == sorted(p.name for p in files)  # every input once
    assert shards.merge(out).duplicated == 0  # merged again: its own manifest is no second worker
    # a hand-made copy of a part (a worker that dreamed a batch twice): one record kept, the repeat counted
    part = next(out.glob("manifest.shard-0-of-3.jsonl"))
    (out / "manifest.shard-0-of-3-copy.jsonl").write_bytes(part.read_bytes())
    assert shards.merge(out).duplicated == sum(1 for line in part.read_text().splitlines() if '"done"' in line)
    assert len(shards.merge(out).manifest.read_text().splitlines()) == 8  # one line per input, still
    with pytest.raises(OptionError, match="plans another run"):
        batching.run_batch(small, batch_job(small, seed=1), files, out, batch_size=2, shard=shards.Shard(0, 3))


def test_a_dead_workers_lease_expires_and_another_worker_takes_its_batch(small, tmp_path):
    files = photos(tmp_path / "in", 6)
    batching.run_batch(small, batch_job(small), files, tmp_path / "one", batch_size=2)
    out = tmp_path / "claimed"
    out.mkdir()
    run = shards.write_plan(out, batching.run_key(batch_job(small), small), files, 2)
    dead = shards.Claims(out, run, lease_seconds=0.5)
    assert dead.try_claim(1)  # the batch a worker took before it died
    dead._stop.set()  # its heartbeat stops with it
    summary = batching.run_batch(small, batch_job(small), files, out, batch_size=2, claim=True, lease_seconds=0.5)
    assert summary.claimed == 3 and summary.taken_over == 1 and summary.done == 6
    assert pictures(out) == pictures(tmp_path / "one")
    assert shards.merge(out).complete


def test_a_claimed_batch_that_fails_whole_is_still_marked_done_and_resume_retries_it(small, tmp_path):
    from PIL import Image

    files = photos(tmp_path / "in", 4)
    Image.new("RGB", (1, 1)).save(tmp_path / "in" / "tiny.png")  # too small for the dream: its batch fails whole
    files = sorted((tmp_path / "in").glob("*.png"))
    out = tmp_path / "claimed"
    summary = batching.run_batch(small, batch_job(small), files, out, batch_size=2, claim=True, lease_seconds=30)
    assert summary.done == 4 and [Path(p).name for p, _ in summary.errors] == ["tiny.png"]  # and no hang
    again = batching.run_batch(small, batch_job(small), files, out, batch_size=2, claim=True, resume=True)
    assert again.done == 0 and len(again.errors) == 1 and again.claimed == 1  # only the failed batch, again
    assert [Path(s).name for s in shards.merge(out).failed] == ["tiny.png"]


def test_a_live_lease_is_not_taken_and_a_done_batch_is_not_claimed(tmp_path):
    first = shards.Claims(tmp_path, "run", lease_seconds=30)
    second = shards.Claims(tmp_path, "run", lease_seconds=30)
    assert first.try_claim(0) and not second.try_claim(0)
    first.finish(0)
    assert not second.try_claim(0) and second.try_claim(1)
    first.release(1)  # not its lease: the holder keeps it
    assert (tmp_path / shards.LEASES / "run" / "batch-000001.lease").exists()
    first.close()
    second.close()
    with pytest.raises(OptionError, match="lease"):
        shards.Claims(tmp_path, "run", lease_seconds=0)


def test_a_multi_process_merge_waits_for_this_launchs_end_lines_not_an_earlier_runs(tmp_path):
    for i in range(2):  # parts left by an earlier run: records and end lines of another launch
        (tmp_path / f"manifest.part{i}.jsonl").write_text(
            json.dumps({"input": f"/x/{i}.jpg", "status": "done"}) + "\n"
            + json.dumps({"status": "end", "process": i, "launch": "earlier"}) + "\n")
    with pytest.raises(JaxdreamError, match="not every process finished"):
        batching.merge_manifests(tmp_path, 2, "now", timeout=0.3)
    assert not (tmp_path / "manifest.jsonl").exists()
    for i in range(2):
        with (tmp_path / f"manifest.part{i}.jsonl").open("a") as part:
            part.write(json.dumps({"status": "end", "process": i, "launch": "now"}) + "\n")
    merged = batching.merge_manifests(tmp_path, 2, "now", timeout=5)
    assert len(merged.read_text().splitlines()) == 2


def _batch(small_files, inputs: Path, out: Path, *extra: str, wait: bool = True):
    cfg, weights = small_files
    args = [*CLI, "batch", "nightmare", str(cfg), str(inputs), "--weights", str(weights), "--out", str(out),
            "--layer", "2", "--iters", "40", "--octaves", "2", "--batch-size", "2", "--format", "png", "--quiet",
            *extra]
    if not wait:
        return subprocess.Popen(args, env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=process_env(), capture_output=True, text=True, timeout=600)


def _kill_after_first_record(process: subprocess.Popen, manifests: str, folder: Path, holding: bool = False) -> None:
    """SIGKILL once the process has recorded an image (and, with ``holding``, while it holds a lease)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        recorded = any('"done"' in p.read_text() for p in folder.glob(manifests))
        if recorded and (not holding or any(f"-{process.pid}-" in _text(lease)
                                            for lease in folder.glob(f"{shards.LEASES}/*/*.lease"))):
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # let go of between the glob and the read
        return ""


def _reference(small_files, tmp_path: Path) -> Path:
    """16 photos and one process's pictures of them (in tmp_path/one)."""
    photos(tmp_path / "in", 16)
    assert _batch(small_files, tmp_path / "in", tmp_path / "one").returncode == 0
    return tmp_path / "in"


def _merges_to_one_process_bytes(out: Path, one: Path) -> None:
    final = subprocess.run([*CLI, "batch", "merge", str(out)], env=process_env(), capture_output=True, text=True)
    assert final.returncode == 0 and "16 done, 0 failed, 0 missing" in final.stderr, final.stderr
    assert pictures(out) == pictures(one)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 16 and len({r["input"] for r in records}) == 16  # every image once


@pytest.mark.slow  # whole processes (~60 s on 2 cores); run with -m slow
@pytest.mark.process
def test_four_shard_processes_one_killed_and_rerun_merge_to_one_process_bytes(small_files, tmp_path):
    inputs = _reference(small_files, tmp_path)
    out = tmp_path / "sharded"
    procs = [_batch(small_files, inputs, out, "--shard", f"{i}/4", wait=False) for i in range(4)]
    _kill_after_first_record(procs[1], "manifest.shard-1-of-4.jsonl", out)
    assert [p.wait(timeout=600) for i, p in enumerate(procs) if i != 1] == [0, 0, 0]
    first = subprocess.run([*CLI, "batch", "merge", str(out)], env=process_env(), capture_output=True, text=True)
    assert first.returncode == 1 and "missing" in first.stderr
    rerun = _batch(small_files, inputs, out, "--shard", "1/4", "--resume")
    assert rerun.returncode == 0, rerun.stderr
    _merges_to_one_process_bytes(out, tmp_path / "one")


@pytest.mark.slow  # whole processes (~60 s on 2 cores); run with -m slow
@pytest.mark.process
def test_three_claim_workers_one_killed_every_image_once_and_its_batch_taken_over(small_files, tmp_path):
    inputs = _reference(small_files, tmp_path)
    out = tmp_path / "claimed"
    procs = [_batch(small_files, inputs, out, "--claim", "--lease-seconds", "2", wait=False) for _ in range(3)]
    _kill_after_first_record(procs[0], f"manifest.claim-*-{procs[0].pid}-*.jsonl", out, holding=True)
    results = [p.communicate(timeout=600) for p in procs[1:]]
    assert [p.returncode for p in procs[1:]] == [0, 0], results
    taken = sum(int(err.split("of them after an expired lease")[0].split(",")[-1].split()[0])
                for _, err in results)
    assert taken >= 1  # the dead worker's batch, after its lease expired
    _merges_to_one_process_bytes(out, tmp_path / "one")


def test_the_merge_command_names_what_is_missing_and_refuses_what_it_cannot_merge(small, tmp_path, monkeypatch,
                                                                                    capsys):
    from conftest import cli

    files = photos(tmp_path / "in", 4)
    out = tmp_path / "sharded"
    batching.run_batch(small, batch_job(small), files, out, batch_size=2, shard=shards.Shard(0, 2))
    code, _, err = cli(monkeypatch, capsys, "batch", "merge", out)
    assert code == 1 and "2 done, 0 failed, 2 missing" in err[0] and sum("missing:" in line for line in err) == 2
    code, _, err = cli(monkeypatch, capsys, "batch", "merge", tmp_path / "in")
    assert code != 0 and "no batch-plan.json here" in " ".join(err)
    code, _, err = cli(monkeypatch, capsys, "batch", "merge", out, "extra")
    assert code != 0 and "takes one folder" in " ".join(err)
    code, _, err = cli(monkeypatch, capsys, "batch", "nightmare", "tiny", "--layer", "3")
    assert code != 0 and "INPUT... and --out" in " ".join(err)
    code, _, err = cli(monkeypatch, capsys, "batch", "nightmare", "tiny", str(tmp_path / "in"), "--out", out,
                       "--shard", "1/2", "--claim", "--layer", "3")
    assert code != 0 and "not both" in " ".join(err)
