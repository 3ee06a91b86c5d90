"""``genloop verify``: check a genloop image's C2PA manifest, or a generation's signed record,
against a trusted CA and the workspace's store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced, out

app = command_app()


@app.command(epilog="Examples:\n\n    genloop verify mnist-diffusion-1-42.png\n\n"
             "    genloop verify image.png --trust their-ca.pem\n\n"
             "    genloop verify record.json --trust ca.pem   # from GET /v1/generations/ID/provenance\n\n"
             "    genloop verify --generation 3f2a9c0d1e2b4c5d --json")
@faced
def verify(
    file: Annotated[Path | None, typer.Argument(
        help="a PNG genloop made, or a signed record's JSON")] = None,
    generation: Annotated[str | None, typer.Option(
        help="a generation's id: check the record signed when it was made against the store")] = None,
    trust: Annotated[Path | None, typer.Option(
        help="the CA certificate (PEM) to trust; default: this workspace's")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the verdict as JSON")] = False,
) -> None:
    """Check signature, trust, hard binding, pixels and the store's record; exit 1 if any fails."""
    from genloop.errors import InvalidInput
    from genloop.generation.provenance import verdict_json, verify_file, verify_generation

    if (file is None) == (generation is None):
        raise InvalidInput("give a FILE or --generation ID (one of them)")
    if file is not None:
        verdict = verify_file(file, trust=trust)
        signed = None
    else:
        assert generation is not None
        verdict, signed = verify_generation(generation, trust=trust)
    if as_json:
        print(verdict_json(verdict, signed))
    else:
        for check in verdict.checks:
            mark = "[green]ok[/]  " if check.ok else "[bold red]FAIL[/]"
            out.print(f"{mark} {check.name:<13} {check.detail}", highlight=False)
        said = verdict.claims
        if said.get("model"):
            out.print(f"     made by {said['model']} (seed {said.get('seed')}), generation "
                      f"{said.get('generation') or ', '.join(said.get('generations', []))}",
                      highlight=False)
    if verdict.ok:
        err.print(f"{verdict.subject}: verified", highlight=False)
        return
    failed = ", ".join(c.name for c in verdict.checks if not c.ok)
    err.print(f"[bold red]{verdict.subject}: NOT verified[/] ({failed})", highlight=False)
    raise typer.Exit(1)
