"""The ``genloop`` command: parse, call the Python API, format. No logic of its own.

One module per command (or group) in this package, each with its own ``app``; this one
assembles them, importing a command's module only when that command runs (so ``genloop keys
list`` starts in a fraction of a second: the generation and evaluation modules bring torch).
Every ``GenloopError`` becomes one line on stderr and its exit code (``console.faced``);
nothing half-done is left. ``python -m genloop.cli.main`` runs it too (torchrun starts it so).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

# command → its module in genloop.cli, in the order `genloop --help` lists them
COMMANDS = {"train": "train", "tune": "tune", "generate": "generate", "eval": "eval", "serve": "serve",
            "worker": "worker", "quickstart": "quickstart", "data": "data", "models": "models",
            "keys": "keys", "import": "importer",
            "export": "export", "merge": "merge",
            "kg": "kg"}


class Commands(TyperGroup):
    """genloop's commands, each built from its module the first time it is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            module = importlib.import_module(f"genloop.cli.{COMMANDS[cmd_name]}")
            command = typer.main.get_command(module.app)
            command.name = cmd_name
            self.commands[cmd_name] = command
        return self.commands[cmd_name]


app = typer.Typer(
    cls=Commands,
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


@app.callback()
def genloop() -> None:
    """The group itself does nothing: a command follows."""


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
