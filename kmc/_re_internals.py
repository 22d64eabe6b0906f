"""CPython's regular-expression parser, the one internal of the standard library kmc uses.

``kmc flow check`` asks which topic names a pattern such as ``orders|payments`` or ``dc[12]\\.orders``
spells out (kmc/flows/patterns.py). The ``re`` module has no public parser; its private one
(``re._parser`` and ``re._constants`` since Python 3.11, ``sre_parse`` and ``sre_constants`` before)
gives a tree of ``(opcode, argument)`` items. tests/test_internals.py has a test per assumption:

- ``parse_items``: :func:`parse` gives a sequence of ``(opcode, argument)`` pairs, opcodes compared with ``is``;
- ``literal``: LITERAL and NOT_LITERAL carry a code point; ANY (``.``) has no useful argument;
- ``at``: ``^``, ``$`` and ``\\b`` are AT items (they match no characters);
- ``subpattern``: a group is SUBPATTERN whose argument's last element is the group's items;
- ``branch``: ``a|b`` is BRANCH whose argument is ``(None, [items, items, ...])``;
- ``repeat``: ``x{m,n}``, ``x*``, ``x+?`` are MAX_REPEAT / MIN_REPEAT with ``(low, high, items)``, ``high`` being
  MAXREPEAT when unbounded;
- ``class``: ``[...]`` is IN with a list of (LITERAL, code), (RANGE, (low, high)), (CATEGORY, CATEGORY_*) and
  (NEGATE, None) items.
"""

from __future__ import annotations

from typing import Any

try:
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_constants  # type: ignore[no-redef]
    import sre_parse as _sre_parser  # type: ignore[no-redef]

LITERAL = _sre_constants.LITERAL
NOT_LITERAL = _sre_constants.NOT_LITERAL
ANY = _sre_constants.ANY
AT = _sre_constants.AT
SUBPATTERN = _sre_constants.SUBPATTERN
BRANCH = _sre_constants.BRANCH
MAX_REPEAT = _sre_constants.MAX_REPEAT
MIN_REPEAT = _sre_constants.MIN_REPEAT
MAXREPEAT = _sre_constants.MAXREPEAT
IN = _sre_constants.IN
RANGE = _sre_constants.RANGE
NEGATE = _sre_constants.NEGATE
CATEGORY = _sre_constants.CATEGORY
CATEGORY_DIGIT = _sre_constants.CATEGORY_DIGIT
CATEGORY_WORD = _sre_constants.CATEGORY_WORD


def parse(pattern: str) -> list[tuple[Any, Any]]:
    """The parse tree of ``pattern`` as ``(opcode, argument)`` items; ``re.error`` for a bad pattern (and
    RecursionError for one nested too deep)."""
    return list(_sre_parser.parse(pattern))
