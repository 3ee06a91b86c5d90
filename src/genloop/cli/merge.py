"""``genloop merge``: fold a LoRA adapter version into a new version with full weights."""

from __future__ import annotations

from typing import Annotated

import typer

from genloop.cli.console import command_app, faced, out

app = command_app()


@app.command(epilog="Examples:\n\n    genloop merge poems@3\n\n"
             "    genloop merge poems@3 --name poems-merged")
@faced
def merge(
    model: Annotated[str, typer.Argument(help="the adapter version to merge: name or name@N")],
    name: Annotated[str | None, typer.Option(
        help="register under this name (default: the adapter's, as its next version)")] = None,
) -> None:
    """Fold a LoRA adapter into its base's weights and register the result as a full version
    (its parent: the adapter version); its outputs equal the adapter's within float error."""
    from genloop.hub.adapters import merge_version

    merged = merge_version(model, name)
    out.print(f"merged {merged.parent} → [bold]{merged.ref}[/]", highlight=False)
