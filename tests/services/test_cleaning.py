"""Input cleaning through ``evaluation_submit``: every bad field named, nothing stored; and a
callback URL whose host is an address checked at submission by the delivery's own rule."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from executions import services, webhooks
from executions.models import Evaluation, Runtime
from tests.api.conftest import client_for
from tests.services.conftest import nothing_stored, submit

pytestmark = pytest.mark.django_db


def test_submit_puts_the_main_file_first(user: Any, runtime: Runtime) -> None:
    files = [
        {"name": "helper.py", "content": "X = 1\n"},
        {"name": "main.py", "content": "import helper\n"},
    ]
    evaluation = services.evaluation_submit(user=user, runtime=runtime, files=files)
    assert [f["name"] for f in evaluation.files] == ["main.py", "helper.py"]


BIG = "x" * (64 * 1024 + 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"runtime": "cobol-85"}, "runtime"),
        ({"runtime": None}, "runtime"),
        ({"source": ""}, "source"),
        ({"source": "   \n"}, "source"),
        ({"source": BIG}, "source"),
        ({"source": "print(1)\x00"}, "source"),
        ({"source": b"print('\xff')"}, "source"),
        ({"source": "print('\udcff')"}, "source"),
        ({"stdin": "a\x00b"}, "stdin"),
        ({"stdin": b"\xc3\x28"}, "stdin"),
        ({"stdin": "x" * (1024 * 1024 + 1)}, "stdin"),
        ({"time_limit_ms": 10_001}, "time_limit_ms"),
        ({"time_limit_ms": 0}, "time_limit_ms"),
        ({"time_limit_ms": "soon"}, "time_limit_ms"),
        ({"memory_mb": 513}, "memory_mb"),
        ({"output_kb": 4096}, "output_kb"),
        ({"test_cases": [{"stdin": "1"}] * 51}, "test_cases"),
        ({"test_cases": [{"comparison": "fuzzy"}]}, "test_cases[0].comparison"),
        ({"test_cases": [{"weight": 0}]}, "test_cases[0].weight"),
        ({"test_cases": [{"tolerance": -1}]}, "test_cases[0].tolerance"),
        ({"test_cases": [{"expected_output": "\x00"}]}, "test_cases[0].expected_output"),
        ({"test_cases": [{"colour": "red"}]}, "test_cases[0]"),
        ({"source": None, "files": []}, "files"),
        ({"source": None, "files": [{"name": "a.py", "content": "1"}] * 17}, "files"),
        ({"source": None, "files": [{"name": "../main.py", "content": "1"}]}, "files[0].name"),
        ({"source": None, "files": [{"name": "util.py", "content": "1"}]}, "files"),
        (
            {"source": None, "files": [{"name": "main.py", "content": "1"}] * 2},
            "files",
        ),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    user: Any, runtime: Runtime, kwargs: dict[str, Any], field: str
) -> None:
    kwargs.setdefault("runtime", runtime)
    kwargs.setdefault("source", "print(1)\n")
    with pytest.raises(ValidationError) as error:
        services.evaluation_submit(user=user, **kwargs)
    assert field in error.value.message_dict, error.value.message_dict
    assert nothing_stored()


def test_disabled_runtime_is_refused(user: Any, runtime: Runtime) -> None:
    runtime.enabled = False
    runtime.save()
    with pytest.raises(ValidationError) as error:
        submit(user, runtime)
    assert error.value.message_dict == {"runtime": ["Runtime 'python-3.11' is disabled."]}


def test_every_bad_field_is_reported_at_once(user: Any, runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as error:
        submit(user, runtime, source="", stdin="\x00", memory_mb=100_000)
    assert set(error.value.message_dict) == {"source", "stdin", "memory_mb"}


# Literal addresses at submission ----------------------------------------------------------

REFUSED_LITERALS = [
    ("http://127.0.0.1/hook", "loopback"),
    ("https://127.8.9.10:8443/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://169.254.1.1/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://240.0.0.1/", "private"),  # 240.0.0.0/4: Python counts it as private
    ("http://[::127.0.0.1]/", "reserved"),  # IPv4-compatible, deprecated
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]:8080/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    # Spellings the resolver reads as 127.0.0.1, as a delivery would connect to it.
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff10\uff11/", "loopback"),  # full-width
    ("http://user:pass@127.0.0.1:80/", "loopback"),
    ("ftp://127.0.0.1/", "loopback"),
]


def submit_callback(client: Any, url: str) -> Any:
    return client.post(
        "/api/v1/evaluations/",
        {"runtime": "python-3.11", "source": "print(1)\n", "callback_url": url},
        format="json",
    )


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
def test_literal_addresses_are_refused_at_submit(
    user: User, runtime: Runtime, url: str, reason: str
) -> None:
    response = submit_callback(client_for(user), url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    [message] = error["fields"].pop("callback_url")
    assert error["fields"] == {}
    assert reason in message and "EXECUTION_WEBHOOK_ALLOWLIST" in message
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(("url", "reason"), REFUSED_LITERALS)
def test_submit_and_delivery_refuse_alike(url: str, reason: str) -> None:
    """One check, so one answer: what submit refuses, a delivery refuses with the same
    words."""
    with pytest.raises(webhooks.Refused) as at_submit:
        webhooks.check_literal_host(url)
    if url.startswith("http"):
        with pytest.raises(webhooks.Refused) as at_delivery:
            webhooks.resolve_target(url)
        assert str(at_delivery.value) == str(at_submit.value)


def test_batch_names_the_item(user: User, runtime: Runtime, roomy_quota: Any) -> None:
    items = [
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "https://example.org/h"},
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "http://[::1]:9/h"},
        {"runtime": "python-3.11", "source": "1\n", "callback_url": "http://2130706433/"},
    ]
    response = client_for(user).post("/api/v1/evaluations/batch/", {"items": items}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"items[1].callback_url", "items[2].callback_url"}
    assert "loopback" in fields["items[1].callback_url"][0]
    assert Evaluation.objects.count() == 0


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8080/hook"),
        (["127.0.0.0/8"], "http://127.1.2.3/hook"),
        (["10.0.0.0/8"], "http://10.1.2.3/hook"),
        (["::1"], "http://[::1]:8080/hook"),
        (["169.254.169.254"], "http://169.254.169.254/"),
    ],
)
def test_allowlisted_literals_are_accepted(
    user: User, runtime: Runtime, settings: Any, allowlist: list[str], url: str
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": allowlist}
    response = submit_callback(client_for(user), url)
    assert response.status_code == 201, response.content
    assert response.json()["callback_url"] == url
    # The delivery's own check agrees.
    assert webhooks.resolve_target(url).address


def test_allowlist_covers_only_what_it_names(user: User, runtime: Runtime, settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["10.0.0.0/8"]}
    response = submit_callback(client_for(user), "http://192.168.1.1/")
    assert response.status_code == 400
    assert "private" in response.json()["error"]["fields"]["callback_url"][0]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/hook",
        "http://93.184.215.14/hook",
        "http://[2606:4700:4700::1111]/hook",
        # A name is judged by what it resolves to, at delivery (see above).
        "http://localhost:9/hook",
        "https://internal.example/hook",
    ],
)
def test_public_literals_and_names_are_accepted(user: User, runtime: Runtime, url: str) -> None:
    response = submit_callback(client_for(user), url)
    assert response.status_code == 201, response.content


def test_service_names_the_field(user: User, runtime: Runtime) -> None:
    with pytest.raises(ValidationError) as refused:
        services.evaluation_submit(
            user=user, runtime="python-3.11", source="1\n", callback_url="http://0x7f.1/"
        )
    assert list(refused.value.message_dict) == ["callback_url"]
    assert Evaluation.objects.count() == 0


def test_schema_documents_the_rule(runtime: Runtime) -> None:
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/v1/schema/?format=json").json()
    field = schema["components"]["schemas"]["SubmitInputRequest"]["properties"]["callback_url"]
    assert "IP address" in field["description"]
    assert "EXECUTION_WEBHOOK_ALLOWLIST" in field["description"]
