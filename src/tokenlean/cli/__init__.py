"""The ``tokenlean`` command line (every command and input format: ``docs/cli.md``).

``tokenlean count|canonicalize FILE|-``, ``demo``, ``audit LOG``, ``bench`` and its
benchmarks, ``cache calibrate|acceptance`` and ``cache stats|list|invalidate|clear STORE``.
A failure, whatever the input, is one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from types import SimpleNamespace
from typing import Annotated

import pydantic
import typer

from tokenlean._errors import TokenleanError
from tokenlean.cli import (  # noqa: F401 (registers the commands)
    _bench_commands,
    _cache_commands,
    _commands,
    _store_commands,
)
from tokenlean.cli._app import app, run_app

__all__ = ["MAX_ERROR_CHARS", "app", "main"]

MAX_ERROR_CHARS = 300
"""The longest error message printed (``tokenlean: error: `` comes on top)."""

_state = SimpleNamespace(verbose=False)  # set by the root options, read when an error is shown


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
    _state.verbose = verbose
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
    _error(f"{message()}{where}")
    return 2 if code in (1, 2) else code


def _error(message: str) -> None:
    """One line on stderr: ``tokenlean: error: MESSAGE``, made printable and cut short, whatever
    the message holds (a path with a newline, an escape sequence, a long value)."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 1] + "…"
    typer.echo(f"tokenlean: error: {line}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tokenlean`` command.

    Whatever the input, a failure is one line on stderr and exit status 2: typed errors and
    usage errors with their message, and any other exception (a bug) naming its type, with
    the traceback above it when ``-v`` was given. Ctrl-C exits with 130.
    """
    _state.verbose = False
    try:
        status = run_app(argv)  # a command's typer.Exit(code) comes back as its code
    except TokenleanError as exc:
        if _state.verbose:
            traceback.print_exc()
        _error(str(exc))
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("tokenlean: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader of stdout went away (`tokenlean … | head`)
        with contextlib.suppress(OSError, ValueError):  # no flush error at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        usage = _usage_error(exc)
        if usage is not None:
            sys.exit(usage)
        if isinstance(exc, pydantic.ValidationError):  # an option a setting refused
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or exc.title
            _error(f"{where}: {first.get('msg', 'invalid')} (got {first.get('input')!r})")
            sys.exit(2)
        if _state.verbose:
            traceback.print_exc()
            _error(f"unexpected {type(exc).__name__}; this is a bug in tokenlean, please report it")
        else:
            _error(
                f"unexpected {type(exc).__name__}; this is a bug in tokenlean: run "
                "'tokenlean -v …' for the traceback and report it"
            )
        sys.exit(2)
    if isinstance(status, int) and status:
        sys.exit(status)
