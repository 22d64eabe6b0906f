"""The command line before click reads it: the global options that may stand anywhere (moved to the
front), the command words, and which command the ``kmc`` entry point runs (:func:`entry_command`: only
that command's module is imported, kmc.cli.main). Imports nothing but kmc.errors: kmc.__main__ uses it
before the rest of kmc is loaded."""

from __future__ import annotations

from collections.abc import Sequence

from kmc.errors import UsageError as KmcUsageError

# Global options that may stand anywhere on the command line; value-taking ones listed with True.
GLOBAL_OPTIONS = {
    "--config": True, "--output": True, "-o": True, "--timeout": True,
    "--quiet": False, "-q": False, "--verbose": False, "-v": False, "-vv": False,
    "--debug": False, "--no-color": False, "--log-format": True,
}


_SHORT_FLAGS = {"q", "v"}  # global short options that take no value; -o takes one


def short_globals(token: str) -> tuple[str, str, bool]:
    """Split a cluster of short options into its leading global ones (-vvv, -qv, -qo json, -qojson), which
    click reads as such once they stand before the subcommand, and the rest (the subcommand's own letters,
    from the first one on, with any value attached: -vbhost:1 gives -v and -bhost:1). Also whether the next
    argument is the value of a trailing -o. ("", token, False) when nothing is global."""
    if not token.startswith("-") or token.startswith("--") or len(token) < 2:
        return "", token, False
    letters = token[1:]
    lead = len(letters) - len(letters.lstrip("".join(_SHORT_FLAGS)))
    if letters[lead:lead + 1] == "o":  # -o takes the rest, or the next argument, as its value
        return token, "", lead + 1 == len(letters)
    if lead == 0:
        return "", token, False
    return "-" + letters[:lead], ("-" + letters[lead:]) if letters[lead:] else "", False


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
        if name in GLOBAL_OPTIONS and GLOBAL_OPTIONS[name] and "=" not in token and index + 1 == len(argv):
            raise KmcUsageError(f"option {token} needs a value", hint="see 'kmc --help'")
        elif name in GLOBAL_OPTIONS:
            front.append(token)
            if GLOBAL_OPTIONS[name] and "=" not in token:
                front.append(argv[index + 1])
                index += 1
        elif short_globals(token)[0]:  # -vvv, -qv, -qo json, -ojson, -vb
            global_part, local_part, takes_next = short_globals(token)
            if takes_next and index + 1 == len(argv):
                raise KmcUsageError(f"option {token} needs a value", hint="see 'kmc --help'")
            front.append(global_part)
            if local_part:
                rest.append(local_part)
            if takes_next:
                front.append(argv[index + 1])
                index += 1
        else:
            rest.append(token)
        index += 1
    return front + rest


def command_words(args: Sequence[str]) -> list[str]:
    """The first two words of a hoisted command line that are neither options nor their values:
    ["flow", "run"]. Only global options stand before the command, so only their values need skipping."""
    words: list[str] = []
    index = 0
    while index < len(args) and len(words) < 2 and args[index] != "--":
        token = args[index]
        if token in GLOBAL_OPTIONS and GLOBAL_OPTIONS[token] or short_globals(token)[2]:
            index += 1  # its value
        elif not token.startswith("-"):
            words.append(token)
        index += 1
    return words


# The top-level commands and the kmc.cli module each lives in, in the order they are registered.
COMMAND_MODULES = {
    "inventory": "inventory", "diff": "diff", "mirror": "mirror", "aggregate": "aggregate",
    "export": "archive", "import": "archive", "flow": "flow", "topics": "topics", "groups": "groups",
    "profile": "profile", "sandbox": "sandbox", "completion": "completion",
}

# Set by kmc.__main__ before it imports kmc.cli.main: the one command this process runs, whose module alone
# kmc.cli.main registers (None: every command, as for --help, a typo, completion, tests and the docs).
only_command: str | None = None


def entry_command(args: Sequence[str], environ: dict[str, str]) -> str | None:
    """The top-level command ``args`` (the command line after ``kmc``) runs, if it names one, else None.
    Shell completion (``_KMC_COMPLETE`` set), the root's help (``kmc --help mirror`` lists every command)
    and a command line click will refuse need every command."""
    if "_KMC_COMPLETE" in environ:
        return None
    try:
        hoisted = hoist_global_options(list(args))
    except KmcUsageError:
        return None
    words = command_words(hoisted)
    if not words or words[0] not in COMMAND_MODULES:
        return None
    before = hoisted[:hoisted.index(words[0])]
    return None if "-h" in before or "--help" in before else words[0]
