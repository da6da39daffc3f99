"""Command-line interface (placeholder until the analyze flow lands)."""

import typer

app = typer.Typer(no_args_is_help=True)


def main() -> None:
    app()
