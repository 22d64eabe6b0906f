"""Every use kmc makes of typer's (and its click's) internals, in one place.

kmc is pinned to typer 0.29.x; tests/test_internals.py has a test per assumption, named as here:

- ``click_exceptions``: click's exception classes (UsageError, Exit, Abort, NoArgsIsHelpError) are in
  ``typer._click.exceptions`` where typer vendors click, else in ``click.exceptions``;
- ``completion_script``: ``typer._completion_shared.get_completion_script(prog_name=, complete_var=, shell=)``
  returns a shell's completion script;
- ``completion_init``: ``typer._completion_classes.completion_init()`` registers typer's shell classes (typer
  does so itself only with ``add_completion=True``, which kmc turns off for its own ``kmc completion``);
- ``signature``: typer builds a command's parameters from ``inspect.signature(function)``, which honours a
  ``__signature__`` attribute, and calls the function with keyword arguments (:func:`with_parameters`).
- ``help_style``: ``typer.core._TyperParameter.display_type(ctx)`` gives the type mark of a parameter's help
  line (``<str>``), ``TyperArgument._usage_display_name()`` its word in the usage line (``{name}``), and
  ``TyperCommand``/``TyperGroup.format_epilog(ctx, formatter)`` ends a command's help
  (:func:`plain_help_style`).
- ``group_dispatch``: typer's group class (``typer.core.TyperGroup``, taken by ``typer.Typer(cls=...)``) keeps
  its subcommands in ``commands``, hands what follows its own options to ``invoke`` in
  ``ctx._protected_args`` (the subcommand's name) and ``ctx.args``, and shell completion asks its
  ``resolve_command``, and its ``shell_complete(ctx, incomplete)`` when nothing follows the group's name
  (:func:`default_command_group`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.core import TyperGroup

try:
    from typer._click import exceptions as _exceptions
except ImportError:  # typer releases that depend on the click package
    from click import exceptions as _exceptions

UsageError = _exceptions.UsageError
# `kmc` or `kmc flow` alone: click raises this carrying the help text (older click has no such class)
NoArgsIsHelpError = getattr(_exceptions, "NoArgsIsHelpError", ())
EXIT_EXCEPTIONS = tuple({typer.Exit, getattr(_exceptions, "Exit", typer.Exit)})
ABORT_EXCEPTIONS = tuple({typer.Abort, getattr(_exceptions, "Abort", typer.Abort)})


def completion_script(prog_name: str, complete_var: str, shell: str) -> str:
    """The completion script of ``shell`` (bash, zsh, fish) for the command ``prog_name``."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=prog_name, complete_var=complete_var, shell=shell)


def init_completion() -> None:
    """Register typer's shell completion classes (``completion_init``)."""
    from typer._completion_classes import completion_init

    completion_init()


def with_parameters(function: Callable[..., Any], name: str, parameters: Sequence[inspect.Parameter],
                    collect: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, whose parameter ``name`` stands for a group of options, as a typer command with the
    group's ``parameters`` in its place: typer sees them (``signature``), and ``function`` gets
    ``name=collect(**their values)``. The group is declared once and shared by several commands, as
    pipx's ``add_pip_venv_args`` shares argparse arguments."""
    signature = inspect.signature(function, eval_str=True)
    names = [parameter.name for parameter in parameters]

    @functools.wraps(function)
    def command(*args: Any, **kwargs: Any) -> Any:
        kwargs[name] = collect(**{key: kwargs.pop(key) for key in names})
        return function(*args, **kwargs)

    kept = [parameter for parameter in signature.parameters.values() if parameter.name != name]
    grouped = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in parameters]
    after = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
             for parameter in kept[list(signature.parameters).index(name):]]
    before = kept[:list(signature.parameters).index(name)]
    command.__signature__ = signature.replace(parameters=[*before, *grouped, *after])  # type: ignore[attr-defined]
    command.__annotations__ = {parameter.name: parameter.annotation
                               for parameter in command.__signature__.parameters.values()}  # type: ignore[attr-defined]
    del command.__wrapped__  # inspect.signature stops at __signature__ anyway; nothing should see the original
    return command


def plain_help_style() -> None:
    """Help that reads like other Unix tools': typer 0.29 marks every parameter's Python type (`<str>`,
    `<list[str]>`) and required arguments with braces (`{name}`). kmc gives every parameter that takes a
    value a metavar (NAME, SECONDS; tests/test_docs.py checks), so the type adds nothing but for choices,
    shown as a|b|c; required arguments stand bare in the usage line, optional ones in [brackets]. Every
    command's help ends with the global options, which may stand anywhere on its command line."""
    from typer import core

    if getattr(core._TyperParameter, "_kmc_plain", False):
        return

    def display_type(self, ctx) -> str:  # noqa: ANN001 - typer's signature
        descriptor = self.type_descriptor
        if descriptor.is_choice and self.metavar is None:
            return "|".join(str(getattr(choice, "value", choice)) for choice in descriptor.choices or ())
        return ""

    def usage_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def format_epilog(self, ctx, formatter) -> None:  # noqa: ANN001 - click's signature
        original_epilog(self, ctx, formatter)
        if ctx.parent is None:
            return
        root = ctx.find_root()
        records = [param.get_help_record(root) for param in root.command.get_params(root)
                   if param.name not in ("help", "version")]
        with formatter.section("Global options (anywhere on the line; see 'kmc --help')"):
            formatter.write_dl([record for record in records if record is not None])

    original_epilog = core.TyperCommand.format_epilog
    core._TyperParameter.display_type = display_type
    core.TyperArgument._usage_display_name = usage_name
    core.TyperCommand.format_epilog = format_epilog
    core.TyperGroup.format_epilog = format_epilog
    core._TyperParameter._kmc_plain = True
def default_command_group(default: str) -> type[TyperGroup]:
    """A typer group class (``typer.Typer(cls=...)``) that runs its subcommand ``default`` when the first
    argument names none of its other subcommands: ``kmc mirror SRC DST`` beside ``kmc mirror status SRC DST``,
    ``kmc groups CLUSTER`` beside ``kmc groups translate SRC DST``. The default runs as the group itself (its
    usage and error lines say ``kmc mirror``, not ``kmc mirror run``), and the group's help is the default's
    followed by the other subcommands. A cluster named like a subcommand is reached through the default's
    own name (``kmc mirror run status dc2``)."""

    class DefaultCommandGroup(TyperGroup):
        default_command = default  # its name (kmc.cli.docs puts the default first on the group's man page)

        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            if args and (args[0] in self.commands or args[0] in ctx.help_option_names):
                return super().parse_args(ctx, args)
            ctx._protected_args, ctx.args = [], list(args)  # noqa: SLF001 - all for the default (group_dispatch)
            return ctx.args

        def invoke(self, ctx: Any) -> Any:
            if ctx._protected_args:  # noqa: SLF001 - a named subcommand (group_dispatch)
                return super().invoke(ctx)
            command = self.commands[default]
            args, ctx.args = ctx.args, []
            with ctx:
                # a sibling of the group's context, named as the group: `kmc mirror [OPTIONS] SRC DST`
                sub_ctx = command.make_context(ctx.info_name, args, parent=ctx.parent)
                with sub_ctx:
                    return sub_ctx.command.invoke(sub_ctx)

        def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
            if args and args[0] in self.commands:
                return super().resolve_command(ctx, args)
            return default, self.commands[default], args  # completion of the default's options

        def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
            # nothing typed after the group yet: what the default's first argument takes (cluster names),
            # then the other subcommands' names; an option: the default's options
            command = self.commands[default]
            sub_ctx = command.make_context(ctx.info_name, [], parent=ctx.parent, resilient_parsing=True)
            if incomplete.startswith("-"):
                return command.shell_complete(sub_ctx, incomplete)
            first = next((param for param in command.get_params(sub_ctx) if param.param_type_name == "argument"),
                         None)
            own = first.shell_complete(sub_ctx, incomplete) if first is not None else []
            return [*own, *super().shell_complete(ctx, incomplete)]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            self.commands[default].format_help(ctx, formatter)
            self.format_commands(ctx, formatter)

    return DefaultCommandGroup
