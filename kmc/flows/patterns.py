"""Which topic names a topic pattern spells out (``orders``, ``orders|payments``, ``dc[12]\\.orders``), or a
few examples of names it matches, read from the pattern's parse tree (kmc._re_internals). ``kmc flow check``
uses them to find collisions and endless rename cycles without asking a cluster.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from kmc import _re_internals as sre

_EXACT_LIMIT = 64  # a pattern matching more names than this is treated as open


def pattern_strings(pattern: str, *, exact: bool) -> list[str] | None:
    """Names a topic pattern matches (anchored, as kmc uses them).

    ``exact=True``: every name it matches when that is a short finite list (``orders``, ``orders|payments``,
    ``dc[12]\\.orders``), else None. ``exact=False``: a few examples of names it matches, for patterns like
    ``payments\\..*`` (``payments.``, ``payments.x``); None when none could be made.
    """
    try:
        tree = sre.parse(pattern)
        compiled = re.compile(pattern)
    except (re.error, RecursionError):
        return None
    found = _sequence(tree, exact)
    if found is None:
        return None
    return sorted({name for name in found if compiled.fullmatch(name)})


def _sequence(items: list[Any], exact: bool) -> list[str] | None:
    results = [""]
    for op, argument in items:
        options = _choices(op, argument, exact)
        if options is None:
            return None
        results = [head + tail for head in results for tail in options]
        if len(results) > _EXACT_LIMIT:
            if exact:
                return None
            results = results[:_EXACT_LIMIT]
    return results


def _choices(op: Any, argument: Any, exact: bool) -> list[str] | None:
    if op is sre.LITERAL:
        return [chr(argument)]
    if op is sre.AT:  # ^, $, \b: match no characters
        return [""]
    if op is sre.SUBPATTERN:
        return _sequence(list(argument[-1]), exact)
    if op is sre.BRANCH:
        found: list[str] = []
        for branch in argument[1]:
            options = _sequence(list(branch), exact)
            if options is None:
                return None
            found.extend(options)
        return found
    if op is sre.IN:
        return _class_choices(argument, exact)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, inner_items = argument
        inner = _sequence(list(inner_items), exact)
        if inner is None:
            return None
        if exact and (high is sre.MAXREPEAT or high > 4):
            return None
        counts = range(low, high + 1) if exact else sorted({low, low + 1})
        found = []
        for count in counts:
            found.extend("".join(parts) for parts in itertools.islice(itertools.product(inner, repeat=count),
                                                                      _EXACT_LIMIT + 1))
        return found
    if exact:
        return None
    if op is sre.NOT_LITERAL:
        return ["x" if argument != ord("x") else "y"]
    if op is sre.ANY:
        return ["x"]
    return [""]


def _class_choices(items: list[Any], exact: bool) -> list[str] | None:
    chars: list[str] = []
    for op, argument in items:
        if op is sre.LITERAL:
            chars.append(chr(argument))
        elif op is sre.RANGE and (not exact or argument[1] - argument[0] < 16):
            chars.extend(chr(code) for code in range(argument[0], argument[1] + 1))
        elif exact:
            return None
        elif op is sre.CATEGORY:
            chars.append({sre.CATEGORY_DIGIT: "0", sre.CATEGORY_WORD: "a"}.get(argument, "x"))
        else:  # a negated class: "x" is a guess, kept only if the pattern matches it
            chars.append("x")
    return chars if exact else chars[:1]
