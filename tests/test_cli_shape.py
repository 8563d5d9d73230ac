"""The command line is thin and speaks one vocabulary: every command's body parses, calls one library function and
prints (at most 25 lines), and every parameter of a mode's library function has an option on its command."""

from __future__ import annotations

import ast
import inspect
import textwrap

import typer

from jaxdream.cli import app

MAX_BODY = 25


def commands() -> dict[str, typer.core.TyperCommand]:
    found = {}
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for sub, inner in getattr(cmd, "commands", {}).items():
            found[f"{name} {sub}"] = inner
        if not getattr(cmd, "commands", None):
            found[name] = cmd
    return found


def body_lines(function) -> int:
    """Non-blank lines of a function's body, its docstring left out."""
    node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    body = node.body[1:] if isinstance(node.body[0], ast.Expr) and len(node.body) > 1 else node.body
    lines = textwrap.dedent(inspect.getsource(function)).splitlines()[body[0].lineno - 1:]
    return len([line for line in lines if line.strip()])


def test_every_command_body_is_short():
    lengths = {name: body_lines(cmd.callback) for name, cmd in commands().items()}
    assert len(lengths) >= 16
    assert max(lengths.values()) <= MAX_BODY, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


def options_of(name: str) -> set[str]:
    return {p.name for p in commands()[name].params}


# (command, library function, its parameters a command line does not take, each with the reason)
NOT_OPTIONS = {
    "model": "MODEL/--weights: the command loads it", "x": "IMAGE: the command reads it",
    "images": "IMAGE: the command reads them", "on_round": "a callback: the command writes each round",
    "stats": "--stats names the report file the command writes", "keep_rounds": "the command streams rounds",
    "schedule": "golden replays: a (iters, 5) array, library only",
    "jitter": "jitter=False is the golden-vector switch (library only); lucid offers --jitter",
    "classes": "--class", "layer_range": "--range", "guide": "--guide (an image path)",
    "progress": "a callback: the command shows progress", "inputs": "VIDEO: the command's arguments",
    "outputs": "--out", "layers": "--layers", "rates": "--rates", "threshs": "--thresh",
    "sizes": "images of several sizes on one canvas: batch plans them (--exact-sizes turns that off)",
    "objective": "render: OBJECTIVE, the command's argument", "init": "--from (an image path)",
    "colour": "--colours-from (photos)", "item_seeds": "an atlas seeds each item by its unit (library)",
    "redirect": "--redirect-relu", "value_range": "--values", "attribution": "--mask (written as PNGs)",
}


def test_every_mode_parameter_has_an_option():
    from jaxdream import dream, sweep, video
    from jaxdream.visual.render import render

    pairs = [("nightmare", dream.nightmare), ("deepdream", dream.deepdream), ("lucid", dream.lucid),
             ("video", video.dream_videos), ("sweep", sweep.sweep), ("render", render)]
    for name, function in pairs:
        have = options_of(name) | {"layer"}
        wanted = {p for p in inspect.signature(function).parameters if p not in NOT_OPTIONS}
        missing = wanted - have
        assert not missing, f"{name} lacks options for {sorted(missing)}"


OWN_MEANING = {  # (command, option): why it differs from the shared option of that name
    ("sweep", "thresh"): "a grid axis: a comma-separated list", ("sweep", "octaves"): "a grid axis: a list",
    ("video", "out"): "a file for one video or a folder", ("batch", "out"): "required: it holds the manifest",
    ("batch", "size"): "resizes every image", ("plan", "size"): "required: the size to plan",
    ("weights convert", "output"): "-o FILE, the .h5 written",
    ("render", "size"): "the rendered image's size (224x224 by default)",
    ("atlas", "out"): "it holds the manifest", ("atlas", "size"): "each unit's picture size (96x96 by default)",
    ("atlas", "batch_size"): "units, not images; its default depends on the platform",
    ("render", "format_"): "png by default",
    ("eval", "output"): "a JSON file, its Markdown table beside it", ("eval", "layer"): "where features compare",
    ("accentuate", "format_"): "png by default",
}


def test_shared_options_have_one_name_help_and_metavar():
    seen: dict[str, tuple] = {}
    for name, cmd in commands().items():
        for param in cmd.params:
            if not isinstance(param, typer.core.TyperOption) or name.startswith("bench"):
                continue
            shape = (tuple(param.opts), param.help, param.metavar)
            key = param.name
            if (name, key) in OWN_MEANING:
                continue
            assert seen.setdefault(key, shape) == shape, f"{name} --{key}: {shape} vs {seen[key]}"


def test_help_shows_words_not_types():
    from typer.testing import CliRunner

    runner = CliRunner()
    for argv in (["--help"], ["nightmare", "--help"], ["batch", "--help"], ["lucid", "--help"],
                 ["render", "--help"]):
        text = runner.invoke(app, argv, env={"COLUMNS": "200"}).output
        assert "<bool>" not in text and "<int>" not in text and "<list" not in text, (argv, text)
    top = runner.invoke(app, ["--help"]).output
    assert "--debug" in top and "--no-cache" in top


def test_version_is_the_installed_distributions():
    from importlib import metadata

    from typer.testing import CliRunner

    import jaxdream

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"jaxdream {metadata.version('jaxdream')}" == f"jaxdream {jaxdream.__version__}"
