"""The ``kmc`` command: global options, the command groups, and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

import typer

from kmc import __version__
from kmc.cli import argv as cli_argv
from kmc.cli import context, signals
from kmc.cli._options import MAX_SECONDS
from kmc.cli._typer_internals import (
    ABORT_EXCEPTIONS,
    EXIT_EXCEPTIONS,
    NoArgsIsHelpError,
    UsageError,
    plain_help_style,
)
from kmc.cli.argv import COMMAND_MODULES, command_words, hoist_global_options
from kmc.client import DEFAULT_TIMEOUT, allow_connections, configure_logging
from kmc.errors import Cancelled, ExitCode, KmcError, OutputError, Terminated
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
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=0.5, max=MAX_SECONDS, metavar="SECONDS",
                                  help="How long to wait for a cluster before giving up (exit 4)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only data and errors; no progress or messages."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="More detail on stderr (-vv for client logs)."),
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


def _register_commands(only: str | None) -> None:
    """Add the commands to ``app``: every one, or ``only`` that one (the ``kmc`` entry point names the command
    it runs: importing the others and building their options was a tenth of a short copy's CPU seconds)."""
    modules = dict.fromkeys(COMMAND_MODULES[name] for name in COMMAND_MODULES if only in (None, name))
    for module in modules:
        cli = importlib.import_module(f"kmc.cli.{module}")
        if hasattr(cli, "register"):
            cli.register(app)
        else:
            app.add_typer(cli.app, name=module)


_register_commands(cli_argv.only_command)  # (set by kmc.__main__ before this import)
plain_help_style()

def main(argv: Sequence[str] | None = None, early_signals: Sequence[int] = ()) -> int:
    """Entry point: run the command, turn every failure into one stderr line and an exit code.

    ``early_signals`` are SIGINT/SIGTERM received while kmc was being imported (kmc.__main__)."""
    _usable_standard_streams()
    try:
        args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    except KmcError as exc:
        _error_line(exc.one_line())
        return int(exc.exit_code)
    _ERROR_FORMAT[0] = _log_format(args)
    allow_connections()
    clean_stop = signals.stops_cleanly(command_words(args))
    if early_signals and not clean_stop:
        return _stopped_by(early_signals[-1])
    with signals.stopping(clean_stop, early_signals):
        code = _run(args, debug="--debug" in args)
    try:
        sys.stdout.flush()  # what is still buffered: a full disk shows here
    except BrokenPipeError:
        _discard_stdout()
    except OSError as exc:
        _discard_stdout()
        if code == ExitCode.OK:  # otherwise the command has said what went wrong already
            _error_line(OutputError(f"cannot write the output to stdout: {exc.strerror or exc}").one_line())
            return int(OutputError.exit_code)
    return code


def _run(args: list[str], debug: bool) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="kmc", standalone_mode=False)
        code = int(result) if isinstance(result, int) else int(ExitCode.OK)
        if code == ExitCode.INTERRUPTED:
            # typer turns Ctrl-C (KeyboardInterrupt) into a bare exit status 130: say what happened
            _error_line("interrupted")
        return code
    except Cancelled as exc:  # a clean-stop command stopped by a signal before it could handle it itself
        received = signals.last_received()
        if received is None:
            _error_line(exc.one_line())
            return int(exc.exit_code)
        return _stopped_by(received)
    except KmcError as exc:
        if debug:
            traceback.print_exc()
        line = exc.one_line()
        if debug:  # the traceback is above already: do not ask for it
            line = line.replace("(run again with --debug for details)", "(details above)").replace(
                "run again with --debug and report it", "report it, with the traceback above")
        _error_line(line)
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
    except Terminated:
        _error_line("terminated")
        return int(ExitCode.TERMINATED)
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
    except OSError as exc:
        if debug:
            traceback.print_exc()
        if exc.filename is None:
            return _internal_error(exc, debug)
        # a file or directory of the environment (data, cache, state) that cannot be used
        _error_line(f"{exc.filename}: {exc.strerror or exc} (check the path and its permissions)")
        return int(ExitCode.CONFIG)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
        return _internal_error(exc, debug)


def _stopped_by(signum: int) -> int:
    if signum == signal.SIGINT:
        _error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
    _error_line("terminated")
    return int(ExitCode.TERMINATED)


def _internal_error(exc: BaseException, debug: bool) -> int:
    advice = "report it, with the traceback above" if debug else "run again with --debug and report it"
    _error_line(f"internal error: {type(exc).__name__}: {exc} ({advice})")
    return int(ExitCode.FAILED)


class _ClosedStream(io.TextIOBase):
    """Stands in for a standard stream the shell closed (`kmc ... >&-`): writing to it is an error the
    command reports, while commands that write nothing there still work."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, f"{self.name} is closed")

    def isatty(self) -> bool:
        return False


def _usable_standard_streams() -> None:
    if sys.stdout is None:
        sys.stdout = _ClosedStream("stdout")
    if sys.stderr is None:  # nowhere to say anything: the exit status still tells
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
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
