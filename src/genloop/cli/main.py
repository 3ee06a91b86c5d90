"""The ``genloop`` command: parse, call the Python API, format. No logic of its own.

One module per command (group) in this package; this one assembles them. Every
``GenloopError`` becomes one line on stderr and its exit code (``console.faced``); nothing
half-done is left. ``python -m genloop.cli.main`` runs it too (torchrun starts it so).
"""

from __future__ import annotations

import typer

from genloop.cli import data, generate, keys, models, quickstart, serve, train
from genloop.cli import eval as eval_command

app = typer.Typer(
    name="genloop",
    help="genloop — train, generate, evaluate and own your generative models.\n\n"
    "Start with:  genloop quickstart",
    epilog="Examples:\n\n    genloop quickstart\n\n    genloop train shakespeare-char\n\n"
    "    genloop generate shakespeare-char --prompt 'ROMEO:' --seed 1",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for command in (train, generate, eval_command, serve, quickstart):
    app.add_typer(command.app)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
