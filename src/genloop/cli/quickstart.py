"""``genloop quickstart``: a small GPT and a digit generator, trained, evaluated and sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.views import TrainView, show_result

app = command_app()


@app.command(epilog="Examples:\n\n    genloop quickstart\n\n    genloop quickstart --steps 200\n\n"
             "    genloop quickstart --no-images")
@faced
def quickstart(
    steps: Annotated[int | None, typer.Option(help="text training steps (default: the recipe's)")] = None,
    image_steps: Annotated[int | None, typer.Option(
        help="image training steps (default: the digits recipe's)")] = None,
    images: Annotated[bool, typer.Option(help="also train a digit generator and write a grid")] = True,
    grid: Annotated[Path, typer.Option(help="where to write the digit grid")] = Path("quickstart-digits.png"),
) -> None:
    """Train a small GPT on the Python docs and a digit generator (offline, a few minutes each),
    evaluate, register, sample."""
    import genloop
    from genloop.generation.service import ImageModel
    from genloop.training.loop import train as run_training
    from genloop.training.recipe import load_recipe

    runs = [("quickstart", [f"train.steps={steps}"] if steps else [])]
    if images:
        runs.append(("digits", [f"train.steps={image_steps}"] if image_steps else []))
    refs: list[str] = []
    for name, overrides in runs:
        recipe = load_recipe(name, overrides)
        err.print(f"[bold]genloop quickstart[/]: {recipe.model.family} ({recipe.model.preset}) on "
                  f"{recipe.data.source}, {recipe.train.steps} steps")
        view = TrainView(err)
        try:
            result = run_training(recipe, on_progress=view)
        finally:
            view.stop()
        show_result(result)
        assert result.model_ref is not None  # train registers by default
        refs.append(result.model_ref)
    if images:
        digits = genloop.load(refs[1])
        assert isinstance(digits, ImageModel)  # the digits recipe trains an image family
        drawn = digits.generate(num_samples=40, seed=1)  # the request's default guidance
        drawn.save_grid(grid, columns=10)
        out.print(f"[dim]digit grid (each column one class, 0-9):[/] {grid}", highlight=False)
    out.print("\n[bold]Next:[/]")
    nexts = [f"genloop generate {refs[0]} --prompt 'The ' --seed 1", f"genloop models show {refs[0]}"]
    if images:
        nexts.append(f"genloop generate {refs[1]} -n 16 --class 7 --out sevens.png")
    nexts += ["genloop keys create me && genloop serve      # API + studio at http://127.0.0.1:8000",
              "genloop train shakespeare-char", "genloop train mnist-diffusion"]
    for cmd in nexts:
        out.print(f"  {cmd}", highlight=False, markup=False)
