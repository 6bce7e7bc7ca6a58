"""Field formats both HTTP APIs check the same way."""

from marshmallow import validate

# \Z, not $: a trailing newline must not make "F-1\n" a second name for "F-1".
CODE = validate.Regexp(r"^[A-Za-z0-9_-]{1,32}\Z", error="letters, digits, '-' or '_', 1 to 32")
FAMILY = validate.Regexp(r"^[A-Za-z0-9._-]{1,64}\Z", error="letters, digits, '.', '_' or '-'")
