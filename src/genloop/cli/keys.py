"""``genloop keys create|list|revoke``: API keys for ``genloop serve`` (only hashes are stored)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from genloop.cli.console import command_app, err, faced, out

app = command_app(help="Create, list and revoke API keys for `genloop serve`.", no_args_is_help=True,
                  epilog="Examples:\n\n    genloop keys create laptop\n\n"
                  "    genloop keys create dashboard --scope read --owner alice\n\n"
                  "    genloop keys list\n\n    genloop keys revoke laptop")


@app.command("create", epilog="Examples:\n\n    genloop keys create laptop\n\n"
             "    genloop keys create alice-bot --scope generate --owner alice\n\n"
             "    genloop keys create ops --scope admin")
@faced
def keys_create(
    name: Annotated[str, typer.Argument(help="a name to recognise the key by")],
    scope: Annotated[str, typer.Option(
        help="admin: everything; generate: generate, read and rate its owner's records; "
             "read: read its owner's records")] = "generate",
    owner: Annotated[str | None, typer.Option(
        help="whose records the key sees and makes (default: the key's name)")] = None,
) -> None:
    """Create an API key and print its secret, once: only its SHA-256 is stored."""
    from genloop.store import Store

    key, secret = Store().create_key(name, scope=scope, owner=owner)
    print(secret)
    err.print(f"API key [bold]{key.name}[/] ({key.id}, scope {key.scope}, owner {key.owner}) "
              "created. Copy the secret above now: it is not shown again. Send it as "
              "`Authorization: Bearer <secret>`.", highlight=False, soft_wrap=True)


@app.command("list", epilog="Example:\n\n    genloop keys list")
@faced
def keys_list() -> None:
    """Every API key (never its secret), newest first."""
    from genloop.store import Store

    table = Table("id", "name", "scope", "owner", "prefix", "created", "revoked")
    for k in Store().list_keys():
        table.add_row(k.id, k.name, k.scope, k.owner, f"{k.prefix}…",
                      k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    out.print(table, width=None if out.is_terminal else 160)  # piped: whole ids, one row a key


@app.command("revoke", epilog="Examples:\n\n    genloop keys revoke laptop\n\n"
             "    genloop keys revoke 3f2a9c1b7d4e")
@faced
def keys_revoke(key: Annotated[str, typer.Argument(help="the key's id or name")]) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    from genloop.store import Store

    k = Store().revoke_key(key)
    out.print(f"revoked API key {k.name} ({k.id})", highlight=False)


@app.command("provenance", epilog="Examples:\n\n    genloop keys provenance\n\n"
             "    genloop keys provenance --show\n\n"
             "    genloop verify grid.png --trust ca.pem   # elsewhere, with the CA copied")
@faced
def keys_provenance(
    show: Annotated[bool, typer.Option(
        "--show", help="only print the CA's fingerprint and path (what a third party trusts)")] = False,
    replace: Annotated[bool, typer.Option(
        help="make a new CA and signing key (files signed before verify only with the old ca.pem)")]
        = False,
) -> None:
    """Create the workspace's certificate authority and signing certificate for C2PA provenance
    (made on first need otherwise); keys stay in the workspace, 0600."""
    from genloop.safety.provenance import ProvenanceKeys, create_keys, keys_dir, workspace_keys

    keys = ProvenanceKeys(keys_dir())
    if show:
        keys = workspace_keys(create=False)  # none yet: one line naming this command
    elif keys.exists and not replace:
        err.print("provenance keys exist already: kept (--replace makes new ones)", highlight=False)
    else:
        keys = create_keys(replace=replace)
        err.print(f"created the provenance CA and signing key in {keys.directory}", highlight=False)
    out.print(f"CA certificate  {keys.ca_cert}\nSHA-256         {keys.fingerprint()}", highlight=False)
