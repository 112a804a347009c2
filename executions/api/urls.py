from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from executions.api import views

app_name = "api"

urlpatterns = [
    path("evaluations/", views.EvaluationListCreateView.as_view(), name="evaluation-list"),
    path("evaluations/batch/", views.EvaluationBatchView.as_view(), name="evaluation-batch"),
    path("evaluations/<int:pk>/", views.EvaluationDetailView.as_view(), name="evaluation-detail"),
    path(
        "evaluations/<int:pk>/cancel/",
        views.EvaluationCancelView.as_view(),
        name="evaluation-cancel",
    ),
    path(
        "evaluations/<int:pk>/rerun/", views.EvaluationRerunView.as_view(), name="evaluation-rerun"
    ),
    path("runtimes/", views.RuntimeListView.as_view(), name="runtime-list"),
    path("backends/", views.BackendsView.as_view(), name="backends"),
    path("webhook-secret/", views.WebhookSecretView.as_view(), name="webhook-secret"),
    # The schema and its documentation page are public: they describe, they do not disclose.
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="api:schema", permission_classes=[AllowAny], authentication_classes=[]
        ),
        name="docs",
    ),
    re_path(r"^(?P<path>.*)$", views.not_found),
]
