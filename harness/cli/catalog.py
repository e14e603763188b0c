"""What the harness offers and how to add to it: ``bench list`` (methods, models, data sets,
attacks, grids) and ``bench new-method`` (a method skeleton and its test, harness.scaffold)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("list")
@click.argument("kind", type=click.Choice(["methods", "models", "datasets", "attacks", "grids"]))
@click.argument("pattern", required=False)
def list_(kind: str, pattern: str | None) -> None:
    """List registered methods, models, datasets, the attacks --attack takes, or the grids.

    PATTERN: a part of the name (res) or a wildcard (resnet*)."""
    import harness
    from harness.grid.load import list_grids
    from harness.registry import METHODS, match_names

    if kind == "attacks":
        from harness.grid.suites import PRESETS, preset_text

        for name in match_names(PRESETS, pattern):
            click.echo(f"{name:<12} {preset_text(PRESETS[name])}")
        return
    if kind == "grids":
        names = match_names(list_grids(), pattern)
    else:
        names = getattr(harness, f"list_{kind}")(pattern)
    width = max(map(len, names), default=0)
    for name in names:  # methods: each with its paper
        cite = METHODS.get(name).citation() if kind == "methods" else ""
        click.echo(f"{name:<{width}}  {cite}".rstrip())
    if kind == "models" and not pattern:
        click.echo("timm:NAME, torchvision:NAME  (any classifier of those packages)")


@click.command("new-method")
@click.argument("name")
@click.option(
    "--methods-dir",
    default=None,
    help="Where the method file goes (default: methods/, which registers it; elsewhere it "
    "prints the entry point that does).",
)
@click.option("--tests-dir", default="tests", show_default=True, help="Where its test goes.")
def new_method(name: str, methods_dir: str | None, tests_dir: str) -> None:
    """Write a working method skeleton (KD on adversarial examples) and its test."""
    import methods
    from harness.scaffold import new_method as scaffold
    from harness.scaffold import registration_hint

    builtin = Path(methods.__file__).parent
    folder = Path(methods_dir) if methods_dir else builtin
    method_path, test_path = scaffold(name, folder, Path(tests_dir))
    click.echo(f"wrote {method_path}")
    click.echo(f"wrote {test_path}")
    for line in registration_hint(name, method_path, builtin):
        click.echo(line)
    click.echo(f"try it: bench run --method {name} --grid smoke")
