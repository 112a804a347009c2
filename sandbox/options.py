"""A backend's options: one frozen dataclass per backend, built from keyword options.

Each backend declares its options as a dataclass whose field defaults are the only copy of
each default, and its constructor builds it with ``build_options``. ``None`` or an empty string
means the field's default; other values are converted to the field's type, and an unknown
option or a value that does not convert raises ``OptionError`` naming it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class OptionError(ValueError):
    """An option a backend does not know, or a value it cannot take; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def names(value: Any) -> tuple[str, ...]:
    """A tuple of non-empty strings, from a sequence or a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise TypeError(f"expected a list or a comma-separated string, got {value!r}")
    return tuple(str(item).strip() for item in items if str(item).strip())


CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    int: int,
    float: float,
    str: text,
    tuple[str, ...]: names,
}


def build_options(cls: type[T], given: Mapping[str, Any]) -> T:
    """Return ``cls`` (a frozen dataclass) built from the keyword options ``given``.

    A field may name its own converter as ``metadata={"convert": function}``; otherwise the
    field's type picks one of ``CONVERTERS``. Raises ``OptionError`` for an unknown option or
    a value its converter refuses (``TypeError`` or ``ValueError``); checks in the class's
    ``__post_init__`` raise ``OptionError`` themselves.
    """
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in given.items():
        field = fields.get(name)
        if field is None:
            known = ", ".join(sorted(fields)) or "none"
            raise OptionError(name, f"unknown option {name!r} (known options: {known})")
        if value is None or value == "":
            continue
        convert = field.metadata.get("convert") or CONVERTERS.get(hints[name])
        try:
            values[name] = convert(value) if convert else value
        except OptionError:
            raise
        except (TypeError, ValueError) as exc:
            raise OptionError(name, f"option {name!r}: {exc}") from exc
    return cls(**values)


def at_least(option: str, value: float, minimum: float) -> None:
    """Raise ``OptionError`` unless ``value`` is at least ``minimum``."""
    if value < minimum:
        raise OptionError(option, f"option {option!r} must be at least {minimum:g}, got {value:g}")
