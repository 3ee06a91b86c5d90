"""Where the CLI writes (results on stdout, progress and errors on stderr) and how an error
reaches the user: every ``GenloopError`` becomes one red line and its exit code."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from genloop.errors import GenloopError

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def faced(fn: F) -> F:
    """Turn genloop errors into one red line and the error's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenloopError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def command_app(**settings: Any) -> typer.Typer:
    """The Typer of one command (group); ``main`` lists it under ``genloop`` (shell completion is
    installed by ``genloop`` itself, not per command)."""
    return typer.Typer(rich_markup_mode="markdown", pretty_exceptions_enable=False, add_completion=False,
                       **settings)
