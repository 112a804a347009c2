"""API views: parse with an input serializer, call a selector or a service, render with an
output serializer. Nothing else happens here."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import SAFE_METHODS, AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from executions import selectors, services
from executions.api import serializers as s
from executions.api.idempotency import REPLAY_HEADER, idempotent
from executions.api.pagination import Pagination
from executions.api.throttling import SubmitThrottle, UserThrottle
from executions.conf import execution_settings

ERRORS = {
    400: OpenApiResponse(
        s.ErrorSerializer,
        "Invalid input (`invalid`; `fields` names each bad field), or a body that is not one "
        "JSON object within the size and nesting limits (`parse_error`).",
    ),
    401: OpenApiResponse(s.ErrorSerializer, "Not authenticated."),
    403: OpenApiResponse(s.ErrorSerializer, "Not allowed."),
    404: OpenApiResponse(s.ErrorSerializer, "Not found, or not yours."),
    409: OpenApiResponse(s.ErrorSerializer, "Idempotency-Key in use by a running request."),
    413: OpenApiResponse(
        s.ErrorSerializer, "The body is over EXECUTION_API_MAX_BODY_BYTES (`body_too_large`)."
    ),
    415: OpenApiResponse(s.ErrorSerializer, "The body is not application/json."),
    422: OpenApiResponse(s.ErrorSerializer, "Idempotency-Key reused for another request."),
    429: OpenApiResponse(s.ErrorSerializer, "Rate limit or quota; see Retry-After."),
    503: OpenApiResponse(
        s.ErrorSerializer,
        "The queue is full (`queue_full`), or the database is out of reach "
        "(`database_unavailable`); see Retry-After.",
    ),
}
READ_ERRORS = {
    **{code: ERRORS[code] for code in (400, 401, 403, 404, 429)},
    503: OpenApiResponse(
        s.ErrorSerializer,
        "The database (`database_unavailable`) or the broker (`broker_unavailable`) is out "
        "of reach; see Retry-After.",
    ),
}
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    OpenApiParameter.HEADER,
    description="Replays the first successful response to retries of the same request "
    "(400 when it is empty or longer than 255 characters).",
)
WAIT = OpenApiParameter(
    "wait",
    {"type": "integer", "minimum": 0, "maximum": 3600},
    description="Hold the request up to this many seconds (server cap: "
    "EXECUTION_API_MAX_WAIT_S) until the execution ends.",
)


def _user(request: Request) -> User:
    """The authenticated user (every view here requires one)."""
    assert isinstance(request.user, User)
    return request.user


def _detail(request: Request, pk: int) -> dict[str, Any]:
    evaluation = selectors.evaluation_detail(request.user, pk)
    context = {"show_hidden": selectors.can_see_hidden_cases(request.user)}
    return s.EvaluationDetailSerializer(evaluation, context=context).data


def _wait_seconds(request: Request) -> float:
    params = s.WaitSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    wanted = params.validated_data.get("wait") or 0
    return float(min(wanted, execution_settings.API_MAX_WAIT_S))


class BodyView(APIView):
    """Parses a POST's body before its handler runs, even a handler that reads none (cancel,
    webhook-secret): a malformed body is refused the same way everywhere (400, or 415 for a
    type other than JSON), after authentication and before anything is done. An empty body
    is no body."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method not in SAFE_METHODS:
            _ = request.data  # parsing raises ParseError or UnsupportedMediaType


class EvaluationListCreateView(BodyView):
    throttle_classes = [UserThrottle, SubmitThrottle]

    @extend_schema(
        operation_id="evaluations_list",
        parameters=[s.EvaluationFilterSerializer],
        responses={200: s.EvaluationPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """Your evaluations (staff: everyone's), newest first, with the latest attempt."""
        filters = s.EvaluationFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        evaluations = selectors.evaluation_list(request.user, **filters.validated_data)
        paginator = Pagination()
        page = paginator.paginate_queryset(evaluations, request, view=self)
        return paginator.get_paginated_response(s.EvaluationSummarySerializer(page, many=True).data)

    @extend_schema(
        request=s.SubmitInputSerializer,
        parameters=[WAIT, IDEMPOTENCY],
        responses={201: s.EvaluationDetailSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Submit code. Answers 201 with the evaluation and its first execution; with
        `?wait=N`, 201 comes when the execution ended or N seconds passed, whichever is first
        (read `executions[0].status`)."""
        wait_s = _wait_seconds(request)

        def submit() -> Response:
            data = s.SubmitInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            evaluation = services.evaluation_submit(user=_user(request), **data.to_service_kwargs())
            return Response(_detail(request, evaluation.pk), status=status.HTTP_201_CREATED)

        response = idempotent(request, submit)
        if wait_s and response.status_code == status.HTTP_201_CREATED:
            # After the commit, which sends the execution's task; a retry waits too. The
            # first attempt is the last of the executions (newest first).
            selectors.execution_wait(response.data["executions"][-1]["id"], wait_s)
            replayed = response.get(REPLAY_HEADER)
            response = Response(
                _detail(request, response.data["id"]),
                status=status.HTTP_201_CREATED,
                headers={REPLAY_HEADER: replayed} if replayed else None,
            )
        return response


class EvaluationDetailView(APIView):
    @extend_schema(responses={200: s.EvaluationDetailSerializer, **READ_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """One evaluation with every execution and per-test results."""
        return Response(_detail(request, pk))


class EvaluationCancelView(BodyView):
    throttle_classes = [UserThrottle, SubmitThrottle]

    @extend_schema(
        request=None,
        parameters=[IDEMPOTENCY],
        responses={200: s.CancelOutputSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Cancel the latest queued or running execution; `cancelled` is false when none
        was active."""
        evaluation = selectors.evaluation_detail(request.user, pk)

        def cancel() -> Response:
            latest = evaluation.executions.order_by("-attempt").first()
            cancelled = latest is not None and services.execution_cancel(
                user=_user(request), execution=latest
            )
            return Response({"cancelled": cancelled, "evaluation": _detail(request, pk)})

        return idempotent(request, cancel)


class EvaluationRerunView(BodyView):
    throttle_classes = [UserThrottle, SubmitThrottle]

    @extend_schema(
        request=s.RerunInputSerializer,
        parameters=[IDEMPOTENCY],
        responses={201: s.EvaluationDetailSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Queue a new attempt. Only staff may choose `backend`."""
        evaluation = selectors.evaluation_detail(request.user, pk)
        data = s.RerunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        backend = data.validated_data.get("backend") or None
        if backend and not request.user.is_staff:
            raise exceptions.PermissionDenied("Only staff may choose the backend of a re-run.")

        def rerun() -> Response:
            services.execution_rerun(user=_user(request), evaluation=evaluation, backend=backend)
            return Response(_detail(request, pk), status=status.HTTP_201_CREATED)

        return idempotent(request, rerun)


class EvaluationBatchView(BodyView):
    throttle_classes = [UserThrottle, SubmitThrottle]

    @extend_schema(
        request=s.BatchInputSerializer,
        parameters=[IDEMPOTENCY],
        responses={201: s.BatchOutputSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Submit many evaluations at once: all are stored, or (400, errors under
        `items[i]...`) none. At most EXECUTION_API_MAX_BATCH items."""

        def batch() -> Response:
            items = request.data.get("items") if isinstance(request.data, dict) else None
            if isinstance(items, list) and len(items) > execution_settings.API_MAX_BATCH:
                # Refused before validating thousands of items one by one.
                services.evaluations_submit_batch(user=_user(request), submissions=items)
            data = s.BatchInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            submissions = [s.submit_kwargs(item) for item in data.validated_data["items"]]
            evaluations = services.evaluations_submit_batch(
                user=_user(request), submissions=submissions
            )
            body = {"items": [_detail(request, evaluation.pk) for evaluation in evaluations]}
            return Response(body, status=status.HTTP_201_CREATED)

        return idempotent(request, batch)


class RuntimeListView(APIView):
    @extend_schema(responses={200: s.RuntimeOutputSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request) -> Response:
        """Enabled runtimes: their limits, compile step and self-test; only those ``offered``
        (not failing their self-test) take submissions."""
        return Response(s.RuntimeOutputSerializer(selectors.runtimes_listed(), many=True).data)


class BackendsView(APIView):
    @extend_schema(responses={200: s.BackendsOutputSerializer, **READ_ERRORS})
    def get(self, request: Request) -> Response:
        """The active backend and why it was chosen; staff also get each backend's health."""
        if not request.user.is_staff:
            # Probing every backend's health is the operator's business, and slow; others get
            # the selection alone.
            try:
                selection = selectors.backend_selection()
                body: dict[str, Any] = {"active": selection.name, "reason": selection.reason}
            except Exception as exc:
                body = {"active": "", "reason": f"Could not choose a backend: {exc}"}
            return Response(s.BackendsOutputSerializer(body).data)
        overview = selectors.backends_overview()
        active = next((row for row in overview if row.active), None)
        body = {
            "active": active.name if active else "",
            "reason": active.selection_reason if active else "",
            "backends": [
                {
                    "name": row.name,
                    "active": row.active,
                    "ok": row.health.ok if row.health else None,
                    "detail": row.health.detail if row.health else "",
                    "version": row.health.version if row.health else "",
                    "error": row.health_error,
                }
                for row in overview
            ],
            "runtimes": selectors.runtimes_listed(),
        }
        return Response(s.BackendsOutputSerializer(body).data)


class WebhookSecretView(BodyView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={201: s.WebhookSecretOutputSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        """Make a new webhook signing secret and show it (this once); the old one stops
        verifying."""
        secret = services.webhook_secret_rotate(_user(request))
        return Response({"secret": secret}, status=status.HTTP_201_CREATED)


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@permission_classes([AllowAny])
@authentication_classes([])
def not_found(request: Request, path: str = "") -> Response:
    """Any other path under /api/v1/: a JSON 404 like every other API error."""
    raise exceptions.NotFound(f"No API endpoint at {request.path}.")
