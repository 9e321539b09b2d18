"""The `f1` command: one typer app, one sub-command per verb.

Each verb's options live beside the code they drive (`f1.collect.cli`,
`f1.datasets.cli`, `f1.train.cli`); those modules import only typer at the
top, so `f1 --help` is instant and the collect parent never loads SAPIEN or torch.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from f1 import __version__
from f1.collect.cli import collect
from f1.datasets.cli import app as dataset_app
from f1.shared.errors import UserError
from f1.train.cli import app as train_app
from f1.train.cli import evaluate, tokenize

app = typer.Typer(
    name="f1",
    help="Collect simulated Panda experience (SAPIEN) and train world models and explorers from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(help="Run exploration workers in SAPIEN and write a sharded episode store.")(collect)
# `f1 dataset tokenize` runs the tokenizer, so it lives in f1.train (f1.datasets never imports it, DESIGN §1).
dataset_app.command(name="tokenize")(tokenize)
app.add_typer(dataset_app, name="dataset", help="Inspect, check, convert and tokenise episode stores.")
app.add_typer(train_app, name="train", help="Train the tokenizer, teacher, student and adversarial phases.")
app.command(help="Evaluate a world model on stored episodes and an explorer in the live env.")(evaluate)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"f1 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """f1: a two-stage pipeline, collect -> datasets -> train."""


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: a UserError becomes `error: <message>` on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="f1")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
