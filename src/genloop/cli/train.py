"""``genloop train``: a recipe in, a registered model version out, with a progress bar."""

from __future__ import annotations

from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.views import TrainView, show_result
from genloop.errors import GenloopError

app = command_app()


@app.command(epilog="Examples:\n\n"
             "    genloop train shakespeare-char\n\n"
             "    genloop train my.yaml --set train.steps=500 --set model.preset=tiny\n\n"
             "    genloop train shakespeare-char --print-recipe\n\n"
             "    genloop train mnist-diffusion --set train.steps=2000\n\n"
             "    genloop train --resume 3f2a9c1b7d4e")
@faced
def train(
    recipe: Annotated[str | None, typer.Argument(
        help="recipe YAML file or built-in name (shakespeare-char, tang-poems, digits, mnist-diffusion, "
        "mnist-gan, mnist-vae, ...)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override: section.key=value")] = [],
    name: Annotated[str | None, typer.Option(help="model name to register")] = None,
    print_recipe: Annotated[bool, typer.Option(
        "--print-recipe", help="print the resolved recipe and exit")] = False,
    resume: Annotated[str | None, typer.Option(help="resume this run id from its last checkpoint")] = None,
) -> None:
    """Train a model from a recipe and register it as **name@N**."""
    from genloop.training.loop import train as run_training
    from genloop.training.recipe import load_recipe

    overrides = list(set_) + ([f"name={name}"] if name else [])
    if resume is None and recipe is None:
        raise GenloopError("give a recipe (file or built-in name) or --resume RUN_ID")
    if resume is None:
        resolved = load_recipe(recipe, overrides)
        if print_recipe:
            out.print(resolved.to_yaml(), end="", highlight=False, markup=False)
            return
    view = TrainView(err)
    try:
        result = run_training(resolved if resume is None else None, resume=resume, on_progress=view)
    finally:
        view.stop()
    show_result(result)
