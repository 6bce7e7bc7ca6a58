"""Fast loaders built from the marshmallow schemas, for the messages they accept.

The schemas in ``events.schemas`` stay the contract (the AsyncAPI document is made from
them) and the judge: marshmallow loads a message field by field through its generic
machinery, which was most of a consumer's time per message. ``compile_loader`` reads a
schema's fields once and writes a plain Python function for it (type checks, ISO 8601
parsing and the validators' tests, in line) that, for a message the schema accepts,
returns exactly what ``schema.load`` returns (same keys, values and types), and raises
``Rejected`` for anything it is not sure of. It may turn down what marshmallow would
accept (a Boolean given as "yes"): the caller then asks marshmallow, which accepts or
explains, so errors read as they always did. It never accepts what marshmallow refuses.

A field, validator or hook this module does not know makes ``compile_loader`` raise
``NotCompilable`` when the schema is compiled (at import of ``events.envelope``), so a
future schema cannot get a decoder that quietly reads it another way.
"""

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, validate
from marshmallow.decorators import (
    POST_LOAD,
    PRE_LOAD,
    VALIDATES,
    VALIDATES_SCHEMA,
)

Loader = Callable[[Any], Any]


class Rejected(Exception):
    """The fast loader will not vouch for this value: ask marshmallow."""


class NotCompilable(TypeError):
    """A schema uses a field, validator or hook the fast loader does not know."""


def compile_loader(schema: Schema) -> Callable[[Any], dict[str, Any]]:
    """A loader for the messages ``schema`` accepts, equal to ``schema.load`` on them."""
    return _Writer().schema_loader(schema)


class CodeWriter:
    """Writes functions of one argument ``v`` as Python source, their constants in ``env``."""

    label = "loader"

    def __init__(self) -> None:
        self.env: dict[str, Any] = {"R": Rejected, "missing": missing}

    def const(self, value: Any, hint: str) -> str:
        name = f"{hint}_{len(self.env)}"
        self.env[name] = value
        return name

    def function(self, name: str, body: list[str], result: str) -> Loader:
        source = "\n".join([f"def {name}(v):", *indent(body, 4), f"    return {result}", ""])
        exec(compile(source, f"<{self.label} {name}>", "exec"), self.env)
        return self.env[name]  # type: ignore[no-any-return]

    @staticmethod
    def plain_schema(schema: Schema, hooks: tuple[str, ...]) -> str:
        """The schema's name, once it is known to use none of the options and ``hooks``
        that change which keys a message has: NotCompilable otherwise."""
        where = type(schema).__name__
        if schema.many or schema.only is not None or schema.exclude:
            raise NotCompilable(f"{where}: many, only and exclude are not supported")
        if schema.dict_class is not dict:
            raise NotCompilable(f"{where}: dict_class {schema.dict_class!r}")
        for tag in hooks:
            if schema._hooks[tag]:
                raise NotCompilable(f"{where}: {tag} hooks are not supported")
        return where

    @staticmethod
    def plain_field(name: str, field: Any, what: str) -> None:
        """NotCompilable for a field read or written under another key than its name."""
        if field.data_key is not None or field.attribute is not None or "." in name:
            raise NotCompilable(f"{what}: data_key, attribute and dotted names are not supported")


class _Writer(CodeWriter):
    """Writes one schema's loader."""

    def __init__(self) -> None:
        super().__init__()
        self.env.update({"Mapping": Mapping, "ValidationError": ValidationError})

    def schema_loader(self, schema: Schema) -> Loader:
        where = self.plain_schema(schema, (PRE_LOAD, POST_LOAD, VALIDATES))
        if schema.partial:
            raise NotCompilable(f"{where}: partial is not supported")
        if schema.unknown != EXCLUDE:
            raise NotCompilable(f"{where}: unknown={schema.unknown!r}, only EXCLUDE is supported")
        hooks = schema._hooks
        body = ["if not isinstance(v, Mapping):", "    raise R", "get = v.get", "out = {}"]
        for name, field in schema.load_fields.items():
            what = f"{where}.{name}"
            self.plain_field(name, field, what)
            if field.pre_load or field.post_load:
                raise NotCompilable(f"{what}: field pre_load/post_load are not supported")
            if not field.required and field.load_default is not missing:
                raise NotCompilable(f"{what}: load_default is not supported")
            key = repr(name)
            body += [
                f"v = get({key}, missing)",
                "if v is missing:",
                "    raise R" if field.required else "    pass",
                "elif v is None:",
                f"    out[{key}] = None" if field.allow_none else "    raise R",
                "else:",
                *indent(self.value(field, what), 4),
                f"    out[{key}] = v",
            ]
        for attr_name, pass_collection, kwargs in hooks[VALIDATES_SCHEMA]:
            if pass_collection or kwargs.get("pass_original") or not kwargs.get(
                    "skip_on_field_errors", True):
                raise NotCompilable(
                    f"{where}.{attr_name}: only a plain validates_schema is supported "
                    "(no pass_collection, no pass_original, skip_on_field_errors)")
            # As marshmallow calls it once every field loaded without error.
            check = self.const(getattr(schema, attr_name), "check")
            unknown = self.const(schema.unknown, "unknown")
            body += ["try:",
                     f"    {check}(out, partial=None, many=False, unknown={unknown})",
                     "except ValidationError:",
                     "    raise R from None"]
        return self.function(f"load_{where}", body, "out")

    # Fields are Any below: each kind's own attributes are read once its type is known.
    def value(self, field: Any, what: str) -> list[str]:
        """Lines that turn ``v``, neither missing nor None, into the field's value, or
        raise R; its validators included."""
        kind = type(field)
        if kind is fields.String:
            # Bytes (which marshmallow decodes) never come out of JSON: left to marshmallow.
            lines = ["if type(v) is not str:", "    raise R"]
        elif kind is fields.Integer:
            # Exactly int: no bool, no float, no numeric string, strict or not.
            lines = ["if type(v) is not int:", "    raise R"]
        elif kind is fields.Boolean:
            if (field.truthy is not fields.Boolean.truthy
                    or field.falsy is not fields.Boolean.falsy):
                raise NotCompilable(f"{what}: Boolean with its own truthy/falsy values")
            # JSON's true and false; "yes", 1 and the like are left to marshmallow.
            lines = ["if v is not True and v is not False:", "    raise R"]
        elif kind in (fields.Date, fields.DateTime, fields.AwareDateTime):
            lines = self.temporal(field, what)
        elif kind is fields.Nested:
            lines = [f"v = {self.nested(field, what)}(v)"]
        elif kind is fields.List:
            inner = field.inner
            if inner.pre_load or inner.post_load or inner.allow_none:
                raise NotCompilable(f"{what}: List of a field with hooks or allow_none")
            # Every kind above refuses None, as the inner field does (allow_none False).
            item = self.const(self.function(f"item_{len(self.env)}",
                                            self.value(inner, f"{what}[]"), "v"), "item")
            lines = ["if type(v) is not list:", "    raise R", f"v = [{item}(x) for x in v]"]
        elif kind is fields.Dict:
            if field.key_field is not None or field.value_field is not None:
                raise NotCompilable(f"{what}: Dict with keys or values fields")
            lines = ["if type(v) is not dict:", "    raise R", "v = dict(v)"]
        else:
            raise NotCompilable(f"{what}: field kind {kind.__name__} is not supported")
        for validator in field.validators:
            lines += self.validator(validator, what)
        return lines

    def temporal(self, field: Any, what: str) -> list[str]:
        if field.format not in ("iso", "iso8601"):
            raise NotCompilable(f"{what}: format {field.format!r}, only ISO 8601 is supported")
        # The functions marshmallow's Date and DateTime call for "iso".
        parse = self.const(date.fromisoformat if type(field) is fields.Date
                           else datetime.fromisoformat, "parse")
        lines = ["if type(v) is not str:", "    raise R",
                 "try:", f"    v = {parse}(v)", "except ValueError:", "    raise R from None"]
        if type(field) is fields.AwareDateTime:
            if field.default_timezone is not None:
                raise NotCompilable(f"{what}: AwareDateTime with a default_timezone")
            # marshmallow.utils.is_aware
            lines += ["if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:", "    raise R"]
        return lines

    def nested(self, field: Any, what: str) -> str:
        if field.many or field.only is not None or field.exclude or field.unknown is not None:
            raise NotCompilable(f"{what}: Nested with many, only, exclude or unknown")
        schema = field.schema
        if not isinstance(schema, Schema):
            raise NotCompilable(f"{what}: Nested of {schema!r}, not a schema")
        return self.const(_Writer().schema_loader(schema), "nested")

    def validator(self, validator: Any, what: str) -> list[str]:
        """The validator's test, as its __call__ in marshmallow 4 makes it."""
        kind = type(validator)
        if kind is validate.Regexp:
            if not isinstance(validator.regex.pattern, str):
                raise NotCompilable(f"{what}: Regexp of bytes")
            match = self.const(validator.regex.match, "match")
            return [f"if {match}(v) is None:", "    raise R"]
        if kind is validate.OneOf:
            choices = self.const(validator.choices, "choices")
            return ["try:", f"    absent = v not in {choices}", "except TypeError:",
                    "    raise R from None", "if absent:", "    raise R"]
        if kind is validate.Equal:
            return [f"if v != {self.const(validator.comparable, 'equal')}:", "    raise R"]
        if kind is validate.Length:
            if validator.equal is not None:
                return [f"if len(v) != {self.const(validator.equal, 'length')}:", "    raise R"]
            lines = []
            if validator.min is not None:
                lines += [f"if len(v) < {self.const(validator.min, 'least')}:", "    raise R"]
            if validator.max is not None:
                lines += [f"if len(v) > {self.const(validator.max, 'most')}:", "    raise R"]
            return lines
        if kind is validate.Range:
            lines = []
            if validator.min is not None:
                op = "<" if validator.min_inclusive else "<="
                lines += [f"if v {op} {self.const(validator.min, 'least')}:", "    raise R"]
            if validator.max is not None:
                op = ">" if validator.max_inclusive else ">="
                lines += [f"if v {op} {self.const(validator.max, 'most')}:", "    raise R"]
            return lines
        raise NotCompilable(f"{what}: validator {kind.__name__} is not supported")


def indent(lines: list[str], by: int) -> list[str]:
    return [" " * by + line for line in lines]
