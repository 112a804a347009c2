from __future__ import annotations

from rest_framework.pagination import PageNumberPagination

from executions.conf import execution_settings


class Pagination(PageNumberPagination):
    """``?page=`` and ``?page_size=``, the latter capped by EXECUTION_API_MAX_PAGE_SIZE."""

    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:  # type: ignore[override]
        return int(execution_settings.API_MAX_PAGE_SIZE)
