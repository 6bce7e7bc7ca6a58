"""Fast dumpers built from the marshmallow schemas, for the values the services pass.

The counterpart of ``events.loaders`` on the way out: ``schema.dump`` walks its generic
machinery (accessors, defaults, one method call per field and per list item), which was
a relay's largest cost per message after the JSON writing. ``compile_dumper`` reads a
schema's fields once and writes a plain Python function that, for data made of the types
the services pass (``str``, ``int``, ``bool``, ``date``, ``datetime``, ``None``, ``dict``
and ``list`` exactly, no subclass), returns exactly what ``schema.dump`` returns (same
keys in the same order, same values and types), and raises ``Rejected`` for anything
else: the caller then asks marshmallow, which dumps it as it always did. Like
``schema.dump`` it validates nothing: the caller checks the dumped data.

A field, option or hook this module does not know makes ``compile_dumper`` raise
``NotCompilable`` when the schema is compiled (at import of ``events.envelope``).
"""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP

from events.loaders import CodeWriter, NotCompilable, indent

Dumper = Callable[[Any], Any]


def compile_dumper(schema: Schema) -> Callable[[Any], dict[str, Any]]:
    """A dumper equal to ``schema.dump`` on data of plain types; Rejected otherwise."""
    return _Writer().schema_dumper(schema)


class _Writer(CodeWriter):
    """Writes one schema's dumper."""

    label = "dumper"

    def schema_dumper(self, schema: Schema) -> Dumper:
        where = self.plain_schema(schema, (PRE_DUMP, POST_DUMP))
        if type(schema).get_attribute is not Schema.get_attribute:
            raise NotCompilable(f"{where}: its own get_attribute")
        # A dict only: marshmallow reads other objects' attributes too.
        body = ["if type(v) is not dict:", "    raise R", "get = v.get", "out = {}"]
        for name, field in schema.dump_fields.items():
            what = f"{where}.{name}"
            self.plain_field(name, field, what)
            if hasattr(dict, name):
                # marshmallow falls back on getattr: a missing "items" would dump a method.
                raise NotCompilable(f"{what}: a name dict has as an attribute")
            if field.dump_default is not missing:
                raise NotCompilable(f"{what}: dump_default is not supported")
            key = repr(name)
            # As Field.serialize: a missing key is left out, None stays None (allow_none
            # or not: dumping does not validate).
            body += [
                f"v = get({key}, missing)",
                "if v is not missing:",
                "    if v is not None:",
                *indent(self.value(field, what), 8),
                f"    out[{key}] = v",
            ]
        return self.function(f"dump_{where}", body, "out")

    # Fields are Any below: each kind's own attributes are read once its type is known.
    def value(self, field: Any, what: str) -> list[str]:
        """Lines that turn ``v``, not None, into what ``field._serialize`` gives, or raise R."""
        kind = type(field)
        if kind is fields.String:
            # str(v) of a str is v; bytes and other objects are left to marshmallow.
            return ["if type(v) is not str:", "    raise R"]
        if kind is fields.Integer:
            if field.as_string:
                raise NotCompilable(f"{what}: Integer as_string")
            # int(v) of an int is v; bool (int(True) is 1), floats and others: marshmallow.
            return ["if type(v) is not int:", "    raise R"]
        if kind is fields.Boolean:
            # Booleans dump as themselves; 1, "yes" and the like: marshmallow.
            return ["if v is not True and v is not False:", "    raise R"]
        if kind in (fields.Date, fields.DateTime, fields.AwareDateTime):
            return self.temporal(field, what)
        if kind is fields.Nested:
            if field.many or field.only is not None or field.exclude:
                raise NotCompilable(f"{what}: Nested with many, only or exclude")
            schema = field.schema
            if not isinstance(schema, Schema):
                raise NotCompilable(f"{what}: Nested of {schema!r}, not a schema")
            return [f"v = {self.const(_Writer().schema_dumper(schema), 'nested')}(v)"]
        if kind is fields.List:
            # List._serialize calls the inner field's _serialize on each item: None stays
            # None there too.
            item = self.const(self.function(
                f"item_{len(self.env)}",
                ["if v is not None:", *indent(self.value(field.inner, f"{what}[]"), 4)],
                "v"), "item")
            return ["if type(v) is not list:", "    raise R", f"v = [{item}(x) for x in v]"]
        if kind is fields.Dict:
            if field.key_field is not None or field.value_field is not None:
                raise NotCompilable(f"{what}: Dict with keys or values fields")
            # A shallow copy, as Mapping._serialize makes it.
            return ["if type(v) is not dict:", "    raise R", "v = dict(v)"]
        raise NotCompilable(f"{what}: field kind {kind.__name__} is not supported")

    def temporal(self, field: Any, what: str) -> list[str]:
        if field.format not in (None, "iso", "iso8601"):
            raise NotCompilable(f"{what}: format {field.format!r}, only ISO 8601 is supported")
        # The very function marshmallow calls, on exactly the type it is written for.
        format_func = field.SERIALIZATION_FUNCS[field.format or field.DEFAULT_FORMAT]
        wanted = date if type(field) is fields.Date else datetime
        return [f"if type(v) is not {self.const(wanted, 'type')}:", "    raise R",
                f"v = {self.const(format_func, 'iso')}(v)"]
