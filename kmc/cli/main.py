"""The ``kmc`` command: global options, the command groups, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

import typer

from kmc import __version__
from kmc.cli import context
from kmc.cli._typer_internals import ABORT_EXCEPTIONS, EXIT_EXCEPTIONS, NoArgsIsHelpError, UsageError
from kmc.client import DEFAULT_TIMEOUT, configure_logging
from kmc.errors import ExitCode, KmcError
from kmc.output import LogFormat, OutputFormat, color_enabled

app = typer.Typer(
    name="kmc",
    help="Cross-cluster Apache Kafka data operations: inventory, diff, mirror, aggregate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never render locals: kmc holds passwords in memory
    pretty_exceptions_show_locals=False,
    add_completion=False,  # `kmc completion SHELL` instead
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kmc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: str = typer.Option(None, "--config", envvar=None, metavar="PATH",
                               help="Config file [default: $KMC_CONFIG, else $XDG_CONFIG_HOME/kmc/config.toml]."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", case_sensitive=False,
                                        help="Output format for data on stdout."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=0.5, metavar="SECONDS",
                                  help="How long to wait for a cluster before giving up (exit 4)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only data and errors; no progress or messages."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail on stderr (-vv for client logs)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and kafka-python's debug log."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour (also NO_COLOR)."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", case_sensitive=False,
                                         help="Messages and logs on stderr: text, or json (one object per line: "
                                              "time, level, flow, source, target, topic, partition, event, "
                                              "message; for journald and log shippers)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Cross-cluster Apache Kafka data operations.

    Global options may stand anywhere on the command line, e.g. `kmc topics dc1 -o json`.
    """
    _configure_logging(verbose, debug, log_format.value)
    ctx.obj = context.AppContext(
        config_path=config,
        output=output,
        quiet=quiet,
        verbose=verbose,
        debug=debug,
        color=color_enabled(no_color, sys.stdout),
        timeout=timeout,
        log_format=log_format.value,
    )
    ctx.call_on_close(ctx.obj.close)


def _configure_logging(verbose: int, debug: bool, log_format: str) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose >= 2 else logging.WARNING
    # kafka-python logs connection failures as errors; kmc reports them itself, once.
    configure_logging(level, logging.DEBUG if debug else logging.INFO if verbose >= 2 else logging.CRITICAL,
                      log_format)


def _register_commands() -> None:
    from kmc.cli import aggregate, completion, diff, flow, groups, inventory, mirror, profile, sandbox, topics

    inventory.register(app)
    diff.register(app)
    app.add_typer(mirror.app, name="mirror")
    aggregate.register(app)
    app.add_typer(flow.app, name="flow")
    topics.register(app)
    app.add_typer(groups.app, name="groups")
    app.add_typer(profile.app, name="profile")
    app.add_typer(sandbox.app, name="sandbox")
    completion.register(app)


_register_commands()

# Global options that may stand anywhere on the command line; value-taking ones listed with True.
_GLOBAL_OPTIONS = {
    "--config": True, "--output": True, "-o": True, "--timeout": True,
    "--quiet": False, "-q": False, "--verbose": False, "-v": False, "-vv": False,
    "--debug": False, "--no-color": False, "--log-format": True,
}


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move global options found after the subcommand to the front, so click sees them."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            rest.extend(argv[index:])
            break
        name = token.split("=", 1)[0]
        if name in _GLOBAL_OPTIONS:
            front.append(token)
            if _GLOBAL_OPTIONS[name] and "=" not in token and index + 1 < len(argv):
                front.append(argv[index + 1])
                index += 1
        elif token.startswith("-o") and len(token) > 2 and not token.startswith("--"):
            front.append(token)  # -ojson
        else:
            rest.append(token)
        index += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into one stderr line and an exit code."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    _ERROR_FORMAT[0] = _log_format(args)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="kmc", standalone_mode=False)
        code = int(result) if isinstance(result, int) else int(ExitCode.OK)
        if code == ExitCode.INTERRUPTED:
            # typer turns Ctrl-C (KeyboardInterrupt) into a bare exit status 130: say what happened
            _error_line("interrupted")
        return code
    except KmcError as exc:
        if debug:
            traceback.print_exc()
        _error_line(exc.one_line())
        return int(exc.exit_code)
    except EXIT_EXCEPTIONS as exc:
        return exc.exit_code
    except NoArgsIsHelpError as exc:
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return int(ExitCode.USAGE)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "kmc"
        message = exc.format_message().replace("Value error, ", "")
        _error_line(f"{message} (see '{where} --help')")
        return int(ExitCode.USAGE)
    except (KeyboardInterrupt, *ABORT_EXCEPTIONS):
        _error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `kmc topics x | head`: the reader went away; that is not an error.
        _discard_stdout()
        return int(ExitCode.OK)
    except SystemExit as exc:
        # typer answers a broken pipe inside a command with sys.exit(1): the same case as above
        if isinstance(exc.__context__, BrokenPipeError):
            _discard_stdout()
            return int(ExitCode.OK)
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
        _error_line(f"internal error: {type(exc).__name__}: {exc} (run again with --debug and report it)")
        return int(ExitCode.FAILED)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_ERROR_FORMAT = ["text"]  # the --log-format of this command line, for the last error line


def _log_format(args: Sequence[str]) -> str:
    """The value of --log-format on the (hoisted) command line, before click parsed it."""
    for index, token in enumerate(args):
        if token.startswith("--log-format="):
            return token.partition("=")[2].lower()
        if token == "--log-format" and index + 1 < len(args):
            return args[index + 1].lower()
    return "text"


def _error_line(message: str) -> None:
    if _ERROR_FORMAT[0] == "json":
        from kmc.service.logs import json_line

        sys.stderr.write(json_line("error", " ".join(message.split()), event="exit") + "\n")
    else:
        sys.stderr.write(f"kmc: error: {' '.join(message.split())}\n")
    sys.stderr.flush()


def run() -> None:
    sys.exit(main())
