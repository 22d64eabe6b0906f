"""Click's exception classes, wherever this typer keeps them (newer typer vendors click)."""

import typer

try:
    from typer._click import exceptions as _exceptions
except ImportError:  # typer releases that depend on the click package
    from click import exceptions as _exceptions

UsageError = _exceptions.UsageError
# `kmc` or `kmc flow` alone: click raises this carrying the help text (older click has no such class)
NoArgsIsHelpError = getattr(_exceptions, "NoArgsIsHelpError", ())
EXIT_EXCEPTIONS = tuple({typer.Exit, getattr(_exceptions, "Exit", typer.Exit)})
ABORT_EXCEPTIONS = tuple({typer.Abort, getattr(_exceptions, "Abort", typer.Abort)})
