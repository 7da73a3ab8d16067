"""Command-line options made from dataclass fields: each setting defined once.

A field ``name`` becomes the option ``--name`` (underscores as dashes); the
command receives it under its parameter key (``metadata["key"]``, else the
field's name). The option's default is the field's (or a given instance's),
its type follows the annotation:

===============================  ===================================================
annotation                       option
===============================  ===================================================
an :class:`enum.Enum`            ``click.Choice`` of the members' values
``bool``                         ``--name/--no-name``
``int``, ``float``, ``str``      that type (``X | None``: the same, default None)
``tuple[int, ...]``              ``8,2``: comma-separated (``N[,N...]``), a tuple
``tuple[float, float]``          two values (``nargs=2``, ``MIN MAX``)
``float | str``                  a number, or one of ``metadata["words"]``
===============================  ===================================================

The field's ``metadata`` refines it (every key optional): ``help`` (else
the field's description in the class docstring's numpydoc ``Attributes`` or
``Parameters``);
``option``, the option's name(s) when not ``--name`` (``"--dtype"``,
``"--noise/--no-noise"``); ``choices``, an Enum or a sequence of strings for a
``str`` field; ``path``: ``"file"`` for an existing file (given as its
absolute path); ``range``, the keywords of ``click.IntRange``/``FloatRange``;
``metavar``; ``words``; ``option_default``, where the command line's default
differs from the field's; ``key``; ``cli``: False for a field that is no
option. A command adds entries of the same keys per field (``overrides``) for
the dataclasses whose fields carry none.

Light on purpose: click and the standard library only.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping

import click

__all__ = [
    "CommaSeparated",
    "NumberOrWord",
    "apply_options",
    "choice_values",
    "docstring_help",
    "field_options",
    "option_key",
    "take_fields",
]


class CommaSeparated(click.ParamType):
    """``8,2`` -> ``(8, 2)``: a tuple of ``item`` values."""

    name = "list"

    def __init__(self, item: type = int):
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated {self.item.__name__}s, got {value!r}", param, ctx)


class NumberOrWord(click.ParamType):
    """A float, or one of ``words`` (any word when there are none)."""

    name = "number"

    def __init__(self, words: Iterable[str] = ()):
        self.words = tuple(words)

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) or value in self.words:
            return value
        try:
            return float(value)
        except ValueError:
            if not self.words:
                return value
        self.fail(f"expected a number or {' or '.join(map(repr, self.words))}, got {value!r}",
                  param, ctx)  # fmt: skip


def choice_values(choices) -> list[str]:
    """The values a ``choices`` entry allows: an Enum's values, or the choices themselves."""
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        return [member.value for member in choices]
    return list(choices)


def option_key(item: dataclasses.Field) -> str:
    """The name under which a command receives the option of ``item``."""
    return item.metadata.get("key", item.name)


def field_options(
    cls: type,
    *,
    defaults=None,
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Mapping] | None = None,
) -> list[Callable]:
    """One ``click.option`` decorator per field of the dataclass ``cls``.

    Parameters
    ----------
    cls : dataclass type
    defaults : instance of ``cls``, optional
        Where the defaults come from (another recipe's); default the fields'.
    exclude : iterable of str
        Fields that are no option of this command.
    overrides : mapping of field name -> metadata, optional
        Entries that add to (or replace) a field's metadata.

    Returns
    -------
    list of decorators
        In field order; give them to :func:`apply_options`.
    """
    hints = typing.get_type_hints(cls)
    described = docstring_help(cls)
    overrides = overrides or {}
    decorators = []
    for item in dataclasses.fields(cls):
        meta = {**item.metadata, **overrides.get(item.name, {})}
        if item.name in exclude or meta.get("cli") is False:
            continue
        default = meta["option_default"] if "option_default" in meta else _default(item, defaults)
        dashed = option_key(item).replace("_", "-")
        flag = _without_none(hints[item.name]) is bool
        declarations = meta.get("option", f"--{dashed}/--no-{dashed}" if flag else f"--{dashed}")
        attrs = _type_attrs(hints[item.name], meta, default)
        attrs["help"] = meta.get("help", described.get(item.name))
        if "metavar" in meta:
            attrs["metavar"] = meta["metavar"]
        elif attrs.get("metavar") is None:
            attrs.pop("metavar", None)
        decorators.append(click.option(declarations, meta.get("key", item.name), **attrs))
    return decorators


def apply_options(*decorator_lists: Iterable[Callable]) -> Callable:
    """Apply lists of option decorators so that ``--help`` lists them in the order given."""
    flat = [decorator for decorators in decorator_lists for decorator in decorators]

    def decorate(function):
        for decorator in reversed(flat):
            function = decorator(function)
        return function

    return decorate


def take_fields(cls: type, values: dict) -> dict:
    """Remove the options of ``cls``'s fields from ``values``; return them by field name."""
    return {
        item.name: values.pop(option_key(item))
        for item in dataclasses.fields(cls)
        if option_key(item) in values
    }


def docstring_help(cls: type) -> dict[str, str]:
    """Each attribute's description in the numpydoc docstring of ``cls``, as one plain line.

    ``name : type`` (or ``a, b : type``) lines start an entry; the indented
    lines below it are its description; roles and literals lose their marks.
    """
    entries = re.finditer(
        r"^(?P<names>\w+(?:, \w+)*) : .*\n(?P<text>(?:    .*\S.*\n?)+)",
        inspect.getdoc(cls) or "",
        flags=re.MULTILINE,
    )
    described = {}
    for entry in entries:
        text = " ".join(entry["text"].split())
        text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text).replace("``", "")
        described.update(dict.fromkeys(entry["names"].split(", "), text))
    return described


def _default(item: dataclasses.Field, instance):
    if instance is not None:
        value = getattr(instance, item.name)
    elif item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return None
    return value.value if isinstance(value, enum.Enum) else value


def _type_attrs(annotation, meta: Mapping, default) -> dict:
    """``click.option`` keywords for a field's type: type, nargs, flag, default."""
    attrs = {"default": default, "show_default": default is not None}
    if "type" in meta:
        return {**attrs, "type": meta["type"]}
    if "choices" in meta:
        return {**attrs, "type": click.Choice(choice_values(meta["choices"]))}
    if meta.get("path") == "file":
        return {**attrs, "type": click.Path(exists=True, dir_okay=False, resolve_path=True)}
    kind = _without_none(annotation)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {**attrs, "type": click.Choice(choice_values(kind))}
    if kind is bool:  # declared --name/--no-name
        return attrs
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:
            text = None if default is None else ",".join(map(str, default))
            return {**attrs, "default": text, "type": CommaSeparated(items[0]),
                    "metavar": "N[,N...]"}  # fmt: skip
        metavar = "MIN MAX" if len(items) == 2 else None  # a pair is mostly a range
        return {**attrs, "type": items[0], "nargs": len(items), "metavar": metavar}
    if _is_union(kind):
        return {**attrs, "type": NumberOrWord(meta.get("words", ()))}
    if kind in (int, float) and "range" in meta:
        ranged = click.IntRange if kind is int else click.FloatRange
        return {**attrs, "type": ranged(**meta["range"])}
    return {**attrs, "type": kind}


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _without_none(annotation):
    """``X | None`` -> ``X``; anything else unchanged."""
    if _is_union(annotation):
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
        return typing.Union[tuple(kinds)]  # noqa: UP007 - built from a tuple of types
    return annotation
