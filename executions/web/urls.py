from django.urls import path

from executions.web import views

app_name = "executions"

urlpatterns = [
    path("", views.evaluation_list, name="evaluation-list"),
    path("evaluations/new/", views.evaluation_submit, name="evaluation-submit"),
    path("evaluations/<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("evaluations/<int:pk>/live/", views.evaluation_live, name="evaluation-live"),
    path("evaluations/<int:pk>/rerun/", views.evaluation_rerun, name="evaluation-rerun"),
    path("executions/<int:pk>/cancel/", views.execution_cancel, name="execution-cancel"),
    path("security/", views.security_page, name="security"),
]
