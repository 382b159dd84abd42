"""The command-line apps and what every command shares: option types, input reading,
output."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tokenlean._config import load_settings
from tokenlean._errors import ConfigurationError, MalformedRequestError
from tokenlean._input import decode_text, looks_like_json, parse_chat_request, read_limited

__all__ = ["app", "bench_app", "cache_app", "emit", "input_kind", "read_source", "run_app"]

app = typer.Typer(
    name="tokenlean",
    help="Spend fewer LLM tokens for the same answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks that print figures (add --json for machine output). Without a subcommand:"
    " the end-to-end harness comparing four ways of building prompts.",
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")
cache_app = typer.Typer(
    help="Look into a SQLite cache store and remove entries; give a semantic route evidence."
)
app.add_typer(cache_app, name="cache")


def _plain_flags(command: Any) -> None:
    """Show flags without a type: typer's help prints ``--json <bool>`` as if the flag took a
    value. A flag's metavar (empty here) replaces the type; ``--help`` is a flag too."""
    for param in command.get_params(typer.Context(command)):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


@functools.cache
def _command() -> Any:
    """The click command behind the app, built once (building it takes longer than most
    commands run)."""
    command = typer.main.get_command(app)
    _plain_flags(command)
    return command


def run_app(argv: list[str] | None) -> Any:
    """Run the ``tokenlean`` app on ``argv`` (default: the process's arguments), raising
    errors rather than exiting (``standalone_mode=False``); returns what a command's
    ``typer.Exit(code)`` carries."""
    return _command().main(args=argv, prog_name="tokenlean", standalone_mode=False)


InputKind = Literal["auto", "text", "request"]
SourceArg = Annotated[str, typer.Argument(help="A file path, or - for standard input.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Model name; picks the tokenizer.")
]
AsOpt = Annotated[
    str,
    typer.Option(
        "--as", help="auto: a chat request if the input is JSON, else text; or text / request."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
MaxBytesOpt = Annotated[
    int | None,
    typer.Option("--max-bytes", help="Largest input accepted (TOKENLEAN_MAX_INPUT_BYTES)."),
]


def read_source(source: str, max_bytes: int | None) -> str:
    limit = max_bytes or load_settings().max_input_bytes
    if source == "-":
        return decode_text(read_limited(sys.stdin.buffer, limit))
    path = Path(source)
    if path.is_dir():
        raise ConfigurationError(f"{source} is a folder, not a file")
    if not path.is_file():
        raise ConfigurationError(f"no such file: {source}")
    with path.open("rb") as stream:
        return decode_text(read_limited(stream, limit))


def input_kind(text: str, requested: str) -> Literal["text", "request"]:
    if requested not in ("auto", "text", "request"):
        raise ConfigurationError(f"--as takes auto, text or request, not {requested!r}")
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if not looks_like_json(text):
        return "text"
    try:
        parse_chat_request(text)
    except MalformedRequestError as exc:
        raise MalformedRequestError(
            f"the input looks like JSON but is not a chat request ({exc}); "
            "pass --as text to treat it as plain text"
        ) from exc
    return "request"


def emit(payload: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        for line in lines:
            typer.echo(line)


RouteOpt = Annotated[
    str | None, typer.Option(help="The cache route (default: the cache's default policy).")
]
BudgetOpt = Annotated[float, typer.Option(help="The route's max_error_rate.")]
VersionOpt = Annotated[str, typer.Option(help="The route policy's version.")]
