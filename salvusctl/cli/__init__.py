"""C{salvusctl}, the command-line client of a Salvus host (console script C{salvusctl.cli:main})."""

from salvusctl.cli.main import ExitCode, main, run

__all__ = ["main", "run", "ExitCode"]
