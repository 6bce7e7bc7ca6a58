"""CSV cells that a spreadsheet reads as text, never as a formula.

OWASP's advice against CSV injection: a text cell beginning with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return is prefixed with a single quote. Invoice numbers, labels,
family ids and PayFiP's answers reach the exports, and some come from outside.
"""

from collections.abc import Collection, Mapping
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Mapping[str, Any], numbers: Collection[str]) -> dict[str, Any]:
    """``row`` with its text cells made safe; the ``numbers`` columns (a negative amount
    begins with ``-``) stay numbers."""
    return {k: v if k in numbers else text_cell(v) for k, v in row.items()}
