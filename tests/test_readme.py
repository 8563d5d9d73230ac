"""The README runs as written: every command in its bash blocks parses, and names files that exist (or that an
earlier command writes); the cheap ones run; the library example runs (slow)."""

from __future__ import annotations

import glob
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jaxdream.cli import _darknet_argv, app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = "`" * 3
OUTPUT_OPTIONS = {"--out", "-o", "--output", "--stats", "--animate", "--prefix"}
NOT_PATHS = {"--shard"}  # I/N holds a slash and names no file
FILE_SUFFIXES = (".jpg", ".png", ".cfg", ".weights", ".onnx", ".h5", ".txt", ".mp4", ".gif", ".webp", ".json")
CHEAP = {("models",), ("info",), ("weights", "info"), ("classify",)}  # run in the test; the rest only parse


def blocks(language: str) -> list[str]:
    return re.findall(FENCE + language + r"\n(.*?)" + FENCE, README, re.S)


def commands() -> list[list[str]]:
    """Every `jaxdream ...` command of the bash blocks, as argv without the program name."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0].removeprefix(".venv/bin/") == "jaxdream":
                    found.append(words[1:])
    return found


def _parse(argv: list[str]) -> tuple[str, ...]:
    """Parse ``argv`` as the command line would (Darknet's single dashes too); the subcommand path. A bad command
    line raises Typer's usage error."""
    command = typer.main.get_command(app)
    args, path = _darknet_argv(argv), []
    ctx = command.make_context("jaxdream", list(args))
    while hasattr(command, "resolve_command") and ctx._protected_args + ctx.args:
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return tuple(path)


def test_the_readme_has_the_quick_start_pictures_and_commands():
    assert len(re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.jpg)\)", README)) >= 3
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / picture).is_file() and (ROOT / picture).stat().st_size <= 100_000, picture
    quick = blocks("bash")[0]
    assert "weights/dog.jpg" in quick and "../shared" not in quick  # a bare clone has no ../shared
    assert len(commands()) >= 20


def test_every_command_parses_and_names_files_that_exist(shared):
    written: set[str] = set()
    for argv in commands():
        try:
            _parse(argv)
        except Exception as err:  # Typer's (vendored click's) usage errors
            pytest.fail(f"jaxdream {shlex.join(argv)}: {getattr(err, 'format_message', err.__str__)()}")
        for option, value in itertools.pairwise(argv):
            if option in OUTPUT_OPTIONS:
                written.add(value)
        for i, word in enumerate(argv):
            if word.startswith("-") or (i and argv[i - 1] in OUTPUT_OPTIONS | NOT_PATHS):
                continue
            if "/" not in word and not word.lower().endswith(FILE_SUFFIXES):
                continue
            path = shared / word.removeprefix("../shared/") if word.startswith("../shared/") else ROOT / word
            exists = glob.glob(str(path)) if "*" in word else path.exists()
            assert exists or word in written, f"jaxdream {shlex.join(argv)}: {word} does not exist"


def test_the_cheap_commands_run(shared, tmp_path):
    runner = CliRunner()
    ran = 0
    for argv in commands():
        path = _parse(argv)
        if path not in CHEAP:
            continue
        argv = [str(shared / a.removeprefix("../shared/")) if a.startswith("../shared/") else a for a in argv]
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            result = runner.invoke(app, argv)
        finally:
            os.chdir(cwd)
        assert result.exit_code == 0, f"jaxdream {shlex.join(argv)}: {result.output}"
        ran += 1
    assert ran >= 5


@pytest.mark.slow
@pytest.mark.process
def test_the_library_example_runs(tmp_path):
    (tmp_path / "dreams").mkdir()
    (tmp_path / "weights").symlink_to(ROOT / "weights")
    code = blocks("python")[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dreams" / "out.jpg").is_file()
