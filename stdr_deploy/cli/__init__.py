"""The `stdr-deploy` command: a thin Click layer over the library.

Each subcommand lives in its own module of this package and only parses options, calls the
library and prints. Typed errors (`stdr_deploy.errors`) become one-line messages and their exit
codes; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from stdr_deploy import __version__
from stdr_deploy.errors import StdrError

# command name -> module under stdr_deploy.cli exposing `command`
COMMANDS = {
    "auto": "auto",
    "bench": "bench",
    "build": "build",
    "eval": "eval",
    "export": "export",
    "ocr": "ocr",
    "package": "package",
    "plan": "plan",
    "probe": "probe",
    "render": "render",
    "serve": "serve",
    "smoke": "smoke",
    "weights": "weights",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `--help` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"stdr_deploy.cli.{COMMANDS[name]}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stdr-deploy")
def cli() -> None:
    """Deploy a scene-text OCR pipeline (CRAFT + CRNN/PARSeq) onto NVIDIA Triton.

    `stdr-deploy auto` probes the host, plans, exports, renders a model repository, starts
    Triton and proves it reads text. The other commands are its steps, one at a time.
    """


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except StdrError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    else:
        sys.exit(0)
