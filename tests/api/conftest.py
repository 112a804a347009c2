"""Fixtures for the API tests: token-authenticated clients for a user, another user and staff,
a submission's body, and the code blocks of docs/api.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from executions.models import Runtime

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user: User, runtime: Runtime) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_api(other_user: User, runtime: Runtime) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def staff_api(staff: User, runtime: Runtime) -> APIClient:
    return client_for(staff)


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": "python-3.11", "source": "print(input())\n"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def api_doc_blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the docs/api.md section headed ``section``, in order."""
    blocks: list[str] = []
    in_section = False
    fence: list[str] | None = None  # the lines of the code block being read
    keep = False  # whether that block is one asked for
    for line in API_DOC.read_text().splitlines(keepends=True):
        if fence is not None:
            if line.rstrip() != "```":
                fence.append(line)
                continue
            if keep:
                blocks.append("".join(fence))
            fence = None
        elif line.startswith("```"):
            fence, keep = [], in_section and line.strip() == f"```{language}"
        elif line.startswith("#"):  # a heading: "#" inside a code block never gets here
            in_section = line.lstrip("#").strip() == section
    return blocks
