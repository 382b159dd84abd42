"""The ``tokenlean`` command line.

``tokenlean count FILE|-``, ``tokenlean canonicalize FILE|-``, ``tokenlean demo`` and
``tokenlean bench tokens``. Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tokenlean._errors import TokenleanError
from tokenlean.cli import _bench_commands, _cache_commands, _commands  # noqa: F401 (registers)
from tokenlean.cli._app import app

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        from tokenlean import __version__

        typer.echo(f"tokenlean {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log what tokenlean falls back to (tokenizers, models)."
        ),
    ] = False,
) -> None:
    """Spend fewer LLM tokens for the same answers."""
    if verbose:
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("tokenlean").addHandler(handler)
        logging.getLogger("tokenlean").setLevel(logging.INFO)


def _usage_error(exc: Exception) -> int | None:
    """Print a command-line usage error (an unknown option, a missing argument…) as one line
    and return its exit status; None when ``exc`` is not one. Typer bundles its own copy of
    click, so the error is recognized by its shape rather than by click's classes."""
    message = getattr(exc, "format_message", None)
    code = getattr(exc, "exit_code", None)
    if not callable(message) or not isinstance(code, int):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as asked
        ctx = getattr(exc, "ctx", None)
        typer.echo(ctx.get_help() if ctx is not None else message())
        return 0
    ctx = getattr(exc, "ctx", None)
    where = f" (try '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"tokenlean: error: {message()}{where}", err=True)
    return 2 if code in (1, 2) else code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tokenlean`` command; typed errors and usage errors exit 2 with a
    one-line message."""
    try:
        app(args=argv, standalone_mode=False)
    except TokenleanError as exc:
        typer.echo(f"tokenlean: error: {exc}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        status = _usage_error(exc)
        if status is None:
            raise
        sys.exit(status)
