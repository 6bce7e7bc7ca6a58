"""Field formats the HTTP APIs check, each defined once."""

from marshmallow import validate

from events import formats

CODE = validate.Regexp(formats.exact(formats.REGIE_CODE),
                       error="letters, digits, '-' or '_', 1 to 32")
NUMCLI = validate.Regexp(formats.exact(formats.NUMCLI), error="exactly 6 digits")
# \Z, not $: a trailing newline must not make "F-1\n" a second name for "F-1".
FAMILY = validate.Regexp(r"^[A-Za-z0-9._-]{1,64}\Z", error="letters, digits, '.', '_' or '-'")
