"""One JSON shape for every API error, and the mapping from service exceptions to statuses.

Every error body is ``{"error": {"code": str, "message": str, "fields": {path: [str]}}}``;
``fields`` names each bad input by its path (``source``, ``test_cases[0].weight``,
``items[2].runtime``) and is empty when the error is not about one field.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from executions.outages import RETRY_AFTER_S, log_answered, outage_to_answer
from executions.services import QueueFull, QuotaExceeded

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any, path: str, fields: dict[str, list[str]]) -> None:
    if isinstance(detail, dict):
        for key, value in detail.items():
            key = str(key)
            if key in {api_settings.NON_FIELD_ERRORS_KEY, NON_FIELD_ERRORS}:
                _flatten(value, path, fields)
            elif key.isdigit():
                _flatten(value, f"{path}[{key}]", fields)
            else:
                _flatten(value, f"{path}.{key}" if path else key, fields)
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            fields.setdefault(path, []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    _flatten(item, f"{path}[{index}]", fields)
    else:
        fields.setdefault(path, []).append(str(detail))


def _validation_response(fields: dict[str, list[str]]) -> Response:
    general = fields.pop("", [])
    message = " ".join(general) if general else "The request is invalid; see fields."
    return Response(error_body("invalid", message, fields), status=status.HTTP_400_BAD_REQUEST)


def _retry_response(
    code: str, message: str, http_status: int, retry_after_s: int | None
) -> Response:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else {}
    return Response(error_body(code, message), status=http_status, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, then reshaped; service exceptions mapped first:
    ``QueueFull`` → 503, ``QuotaExceeded`` → 429 (both with ``Retry-After``), any other
    Django ``ValidationError`` → 400 with its ``message_dict`` as ``fields``; the database or
    the broker out of reach (``executions.outages``) → 503 ``database_unavailable`` or
    ``broker_unavailable`` with ``Retry-After``."""
    request = context.get("request")
    if request is not None:
        outage = outage_to_answer(exc, request.method)
        if outage is not None:
            log_answered(outage, exc, request.method, request.path)
            answer = _retry_response(outage.code, outage.message, 503, RETRY_AFTER_S)
            # Logged above, once in a while; Django's request log would add one per request.
            answer._has_been_logged = True  # type: ignore[attr-defined]
            return answer
    if isinstance(exc, QueueFull):
        return _retry_response("queue_full", exc.messages[0], 503, exc.retry_after_s)
    if isinstance(exc, QuotaExceeded):
        return _retry_response(str(exc.code), exc.messages[0], 429, exc.retry_after_s)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            fields = {
                ("" if key == NON_FIELD_ERRORS else key): list(messages)
                for key, messages in exc.message_dict.items()
            }
        else:
            fields = {"": list(exc.messages)}
        return _validation_response(fields)
    if isinstance(exc, ObjectDoesNotExist):
        exc = Http404()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in the API", exc_info=exc)
        return Response(
            error_body("server_error", "The platform failed to handle this request."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        found: dict[str, list[str]] = {}
        _flatten(response.data, "", found)
        validation = _validation_response(found)
        validation.headers = response.headers
        return validation
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException) and isinstance(exc.detail, str):
        code = getattr(exc.detail, "code", None) or code
    if isinstance(exc, Http404):
        code = "not_found"
    data = response.data
    message = str(data.get("detail", data)) if isinstance(data, dict) else str(data)
    response.data = error_body(str(code), message)
    return response
