"""The API's one request parser: JSON, and only a JSON object, within bounds.

DRF's own ``JSONParser`` turns most malformed bodies into a 400, but not all of them: a deeply
nested body raises ``RecursionError`` (a 500), a body of any size is read into memory, and
what it returns may hold values no later step expects (a lone surrogate, which cannot be
encoded or stored; a top-level string or list). Here every such body is a ``ParseError``,
which the API answers with 400 ``parse_error`` before any view code runs, or, for a body
over the size cap, ``BodyTooLarge`` (413 ``body_too_large``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

from executions.conf import execution_settings

# The deepest body the API takes is a batch item's test case (object, list, object, list,
# object: 5 levels). The bound keeps every later recursive pass over the data (serializers,
# the idempotency fingerprint, error flattening, rendering) far from Python's recursion limit.
MAX_DEPTH = 32
# No number the API takes needs more digits; Python's own limit (4300) would answer with a
# message about interpreter settings.
MAX_INTEGER_DIGITS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999 reads as infinity: the same value as the Infinity JSON does not allow.
        raise ValueError("a number is too large to be finite")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _check_values(data: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and strings (keys too) holding a lone
    surrogate. Iterative, so the check itself cannot run out of stack."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                # json reads "\ud800" without complaint, but it is not a character:
                # encoding it as UTF-8 (to store or hash it) fails.
                raise ParseError("The request body holds a lone surrogate (\\ud800-\\udfff).")
            continue
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ParseError(f"The request body is nested more than {MAX_DEPTH} levels.")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def _read(stream: IO[bytes], limit: int) -> bytes:
    # One byte more than allowed tells a body at the limit from one over it, without
    # reading the rest of a huge body into memory.
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(
            f"The request body is larger than {limit} bytes (EXECUTION_API_MAX_BODY_BYTES)."
        )
    return body


class JSONParser(parsers.JSONParser):
    """``application/json`` whose body is one JSON object of at most
    ``EXECUTIONS["API_MAX_BODY_BYTES"]`` (DRF's parser reads any size; a larger body is a
    413), with finite numbers, valid text and bounded nesting."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        body = _read(stream, execution_settings.API_MAX_BODY_BYTES)
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"The request body is not valid {encoding} text.") from exc
        try:
            data = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_float=_finite_float,
                parse_int=_bounded_int,
            )
        except RecursionError as exc:
            raise ParseError(f"The request body is nested more than {MAX_DEPTH} levels.") from exc
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        _check_values(data)
        if not isinstance(data, dict):
            raise ParseError(
                f"The request body must be a JSON object, not {_json_type(data)}.",
            )
        return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "a number"
