"""The `bench` command line: one module per command group; `main` is the entry point."""

from bench.cli.main import cli, main

__all__ = ["cli", "main"]
