"""Formats the contract and the services share: one definition each.

Nothing here imports from the services; the services import these from here. A pattern is
given without anchors: the contract anchors it with ``$`` because it is published as JSON
Schema (ECMA-262 knows no ``\\Z``), the services with ``\\Z`` so that a trailing newline does
not make "F-1\\n" a second name for "F-1".
"""

from zoneinfo import ZoneInfo

# The régies' and PayFiP's local time: days, journals and PayFiP's dattrans/heurtrans.
PARIS = ZoneInfo("Europe/Paris")

REGIE_CODE = "[A-Za-z0-9_-]{1,32}"
NUMCLI = "[0-9]{6}"  # a régie's PayFiP client number


def published(pattern: str) -> str:
    """The pattern as the contract publishes it."""
    return f"^{pattern}$"


def exact(pattern: str) -> str:
    """The pattern as the services check it: the whole text, no trailing newline."""
    return rf"^{pattern}\Z"
