"""The submit page: the form and its errors, the disabled-backend banner, edit and resubmit."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from executions import services
from executions.backends.fake import FakeBackend
from executions.models import Evaluation, Execution, Runtime

from .support import submit_form

pytestmark = pytest.mark.django_db


def test_submit_then_see_the_result(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        **{"cases-0-stdin": "7\n", "cases-0-expected_output": "7", "cases-0-weight": "3"},
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == evaluation.get_absolute_url()
    assert evaluation.test_cases.get().weight == 3

    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Queued" in page and 'http-equiv="refresh"' in page, "a queued run refreshes itself"

    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Finished" in page and "Accepted" in page and "100.00 / 100" in page
    assert 'http-equiv="refresh"' not in page


def test_submit_errors_are_shown_next_to_fields(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        source="print(1)",
        memory_mb="99999",
        **{
            "cases-1-stdin": "x",
            "cases-1-weight": "1",
            "cases-1-comparison": "numeric",
            "cases-1-tolerance": "-1",
        },
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    assert response.status_code == 200
    assert response.context["form"].errors["memory_mb"] == [
        "Must be at most 512, this runtime's cap."
    ]
    assert response.context["cases"].forms[1].errors["tolerance"] == [
        "Must be a non-negative number."
    ]
    assert not Evaluation.objects.exists()


def test_disabled_backend_banner_and_refusal(
    logged_in: Client, user: Any, runtime: Runtime, settings: Any, monkeypatch: Any
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "BACKEND": ""}
    monkeypatch.setattr("executions.environment.container_evidence", lambda: "/.dockerenv exists")
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    assert 'id="disabled-banner"' in page and "inside a container" in page
    evaluation = services.evaluation_submit(user=user, runtime=runtime, source="print(1)")
    services.execution_run(evaluation.executions.get().pk)
    page = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert "Refused" in page and "root on the" in page
    assert FakeBackend.runs == []
    assert Execution.objects.get().backend == "disabled"


def test_removed_test_cases_are_not_submitted(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        **{
            "cases-0-stdin": "1",
            "cases-0-expected_output": "1",
            "cases-0-DELETE": "on",
            "cases-1-stdin": "2",
            "cases-1-expected_output": "2",
        },
    )
    logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert list(evaluation.test_cases.values_list("stdin", flat=True)) == ["2"]


def test_submit_page_shows_runtime_limits(logged_in: Client, runtime: Runtime) -> None:
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    assert 'id="runtime-data"' in page and '"time_limit_ms": [5000, 10000]' in page
    assert "codemirror.js" in page


# The runtime picker and what the page knows of each runtime --------------------------------


class PickerOptions(HTMLParser):
    """The runtime picker's options as (group label, value, label, selected)."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[tuple[str | None, str, str, bool]] = []
        self.in_picker = False
        self.group: str | None = None
        self.option: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "select":
            self.in_picker = attributes.get("id") == "id_runtime"
        elif self.in_picker and tag == "optgroup":
            self.group = attributes["label"]
        elif self.in_picker and tag == "option":
            self.option = {**attributes, "text": ""}

    def handle_data(self, data: str) -> None:
        if self.option is not None:
            self.option["text"] = (self.option["text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self.option is not None:
            option, self.option = self.option, None
            value, text = str(option["value"]), str(option["text"]).strip()
            self.options.append((self.group, value, text, "selected" in option))
        elif tag == "optgroup":
            self.group = None
        elif tag == "select":
            self.in_picker = False


def picker_options(page: str) -> list[tuple[str | None, str, str, bool]]:
    parser = PickerOptions()
    parser.feed(page)
    return parser.options


def runtime_data(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script id="runtime-data" type="application/json">(.*?)</script>', page, re.S
    )
    assert match, "no runtime data on the page"
    return dict(json.loads(match.group(1)))


def add_runtime(name: str, language: str, version: str, **fields: Any) -> Runtime:
    return Runtime.objects.create(
        name=name,
        language=language,
        version=version,
        display_name=f"{language} ({version})" if version else language,
        image=f"evalplatform/{name}",
        command=["./main"],
        **fields,
    )


@pytest.fixture
def cpp_runtimes(runtime: Runtime) -> list[Runtime]:
    """Two C++ versions, one disabled and one failing its self-test, beside the Python one."""
    common = {"editor_mode": "text/x-c++src", "file_name": "main.cpp"}
    compile_command = ["g++", "-O2", "-o", "main", "main.cpp"]
    return [
        add_runtime("cpp-20", "C++", "C++20, GCC 12", compile_command=compile_command, **common),
        add_runtime("cpp-17", "C++", "C++17, GCC 12", compile_command=compile_command, **common),
        add_runtime("cpp-14", "C++", "C++14, GCC 12", enabled=False, **common),
        add_runtime("cpp-11", "C++", "C++11, GCC 12", self_test_status="failed", **common),
    ]


def test_the_picker_groups_each_languages_versions(
    logged_in: Client, runtime: Runtime, cpp_runtimes: list[Runtime]
) -> None:
    add_runtime("ada", "Ada", "", editor_mode="text/x-ada")
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    # Grouped by language, versions by display name; a runtime without a version is labelled
    # by its display name. Only what evaluators may pick is offered.
    assert picker_options(page) == [
        ("Ada", "ada", "Ada", False),
        ("C++", "cpp-17", "C++17, GCC 12", False),
        ("C++", "cpp-20", "C++20, GCC 12", False),
        ("Python", "python-3.11", "Python 3.11", False),
    ]
    assert page.count("<optgroup") == 3
    assert '<select name="runtime" id="id_runtime">' in page


def test_the_picker_keeps_the_runtime_of_a_resubmission(
    logged_in: Client, user: Any, runtime: Runtime, cpp_runtimes: list[Runtime]
) -> None:
    evaluation = services.evaluation_submit(
        user=user, runtime=cpp_runtimes[0], source="int main() {}\n"
    )
    page = logged_in.get(resubmit_url(evaluation)).content.decode()
    selected = [option for option in picker_options(page) if option[3]]
    assert selected == [("C++", "cpp-20", "C++20, GCC 12", True)]
    assert 'data-starter-code="false"' in page, "a resubmission keeps its own source"


def test_runtime_data_carries_the_editor_mode_starter_code_and_compile_step(
    logged_in: Client, runtime: Runtime, cpp_runtimes: list[Runtime]
) -> None:
    cpp = cpp_runtimes[1]
    cpp.hello_world = '#include <iostream>\nint main() { std::cout << "Hello, world!\\n"; }\n'
    cpp.save()
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    data = runtime_data(page)
    assert set(data) == {"cpp-17", "cpp-20", "python-3.11"}
    assert data["cpp-17"] == {
        "language": "C++",
        "display_name": "C++ (C++17, GCC 12)",
        "editor_mode": "text/x-c++src",
        "hello_world": cpp.hello_world,
        "compiles": True,
        "compile_time_limit_ms": 10_000,
        "compile_memory_mb": 512,
        "time_limit_ms": [5000, 10000],
        "memory_mb": [256, 512],
        "output_kb": [64, 1024],
        "network": False,
    }
    python = data["python-3.11"]
    assert (python["editor_mode"], python["compiles"]) == ("text/x-python", False)
    assert 'id="runtime-compiles"' in page
    assert 'data-starter-code="true"' in page, "a fresh form starts from the hello-world"


def test_a_hello_world_with_markup_stays_data_in_the_page(
    logged_in: Client, runtime: Runtime
) -> None:
    hostile = '</script><script>window.pwned = 1</script><!-- & "quotes"\n'
    runtime.hello_world = hostile
    runtime.save()
    page = logged_in.get(reverse("executions:evaluation-submit")).content.decode()
    # The JSON's own script element is the only one it could close, and it cannot: every <, >
    # and & in it is a \u escape.
    assert "<script>window.pwned" not in page and "<!--" not in page.split('id="runtime-data"')[1]
    assert "\\u003C/script\\u003E\\u003Cscript\\u003Ewindow.pwned" in page
    assert runtime_data(page)["python-3.11"]["hello_world"] == hostile


def test_a_form_sent_back_with_errors_keeps_its_source(logged_in: Client, runtime: Runtime) -> None:
    runtime.hello_world = "print('Hello, world!')\n"
    runtime.save()
    response = logged_in.post(
        reverse("executions:evaluation-submit"), submit_form(runtime, source="")
    )
    page = response.content.decode()
    assert response.context["form"].errors["source"] == ["Source is empty."]
    assert 'data-starter-code="false"' in page


# Edit and resubmit ---------------------------------------------------------------------------


def resubmit_url(evaluation: Evaluation) -> str:
    return f"{reverse('executions:evaluation-submit')}?from={evaluation.pk}"


def hidden_and_visible(user: Any, runtime: Runtime) -> Evaluation:
    return services.evaluation_submit(
        user=user,
        runtime=runtime,
        source="print(input())\n",
        stdin="unused",
        title="Echo",
        time_limit_ms=2000,
        memory_mb=64,
        output_kb=8,
        test_cases=[
            {"stdin": "visible-in", "expected_output": "visible-out", "weight": 2},
            {
                "stdin": "secret-in",
                "expected_output": "secret-out",
                "hidden": True,
                "comparison": "numeric",
                "tolerance": 0.5,
                "name": "big",
            },
        ],
    )


def test_the_owner_resubmits_with_everything_prefilled(
    logged_in: Client, user: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    detail = logged_in.get(evaluation.get_absolute_url()).content.decode()
    assert f'href="{resubmit_url(evaluation)}"' in detail
    response = logged_in.get(resubmit_url(evaluation))
    form, cases = response.context["form"], response.context["cases"]
    assert {name: form[name].value() for name in form.fields} == {
        "title": "Echo",
        "runtime": "python-3.11",
        "source": "print(input())\n",
        "stdin": "unused",
        "time_limit_ms": 2000,
        "memory_mb": 64,
        "output_kb": 8,
    }
    initial = [case.initial for case in cases.forms if case.initial]
    assert [case["stdin"] for case in initial] == ["visible-in", "secret-in"]
    assert initial[1] == {
        "name": "big",
        "stdin": "secret-in",
        "expected_output": "secret-out",
        "comparison": "numeric",
        "tolerance": 0.5,
        "weight": 1,
        "hidden": True,
    }
    page = response.content.decode()
    assert "secret-out" in page and 'id="resubmit-note"' in page and "not copied" not in page

    # Submitting the prefilled page as it is makes an equal, new evaluation.
    data = {key: str(value) for key, value in form.initial.items() if key != "runtime"}
    post = submit_form(runtime, **data)
    for index, case in enumerate(initial):
        post.update({f"cases-{index}-{key}": str(value) for key, value in case.items()})
    post["cases-1-hidden"] = "on"
    logged_in.post(reverse("executions:evaluation-submit"), post)
    copy = Evaluation.objects.exclude(pk=evaluation.pk).get()
    assert copy.files == evaluation.files and copy.stdin == "unused"
    assert (copy.time_limit_ms, copy.memory_mb, copy.output_kb) == (2000, 64, 8)
    fields = ("name", "stdin", "expected_output", "comparison", "tolerance", "weight", "hidden")
    assert list(copy.test_cases.values_list(*fields)) == list(
        evaluation.test_cases.values_list(*fields)
    )


def test_staff_resubmit_without_someone_elses_hidden_cases(
    client: Client, user: Any, staff: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    client.force_login(staff)
    response = client.get(resubmit_url(evaluation))
    assert response.status_code == 200
    assert [case.initial["stdin"] for case in response.context["cases"].forms if case.initial] == [
        "visible-in"
    ]
    page = response.content.decode()
    assert "secret-in" not in page and "secret-out" not in page
    assert "Its 1 hidden test case is not copied" in page


def test_nobody_else_may_resubmit(
    client: Client, user: Any, other_user: Any, runtime: Runtime
) -> None:
    evaluation = hidden_and_visible(user, runtime)
    client.force_login(other_user)
    assert client.get(resubmit_url(evaluation)).status_code == 404
    assert client.get(f"{reverse('executions:evaluation-submit')}?from=x").status_code == 404


# Every submit error at once ------------------------------------------------------------------


def test_every_submit_error_is_reported_at_once(logged_in: Client, runtime: Runtime) -> None:
    data = submit_form(
        runtime,
        source="",
        memory_mb="99999",
        time_limit_ms="soon",
        **{
            "cases-0-stdin": "x",
            "cases-0-tolerance": "-1",
            "cases-0-comparison": "numeric",
            "cases-1-stdin": "y",
            "cases-1-weight": "0",
        },
    )
    response = logged_in.post(reverse("executions:evaluation-submit"), data)
    assert response.status_code == 200
    form, cases = response.context["form"], response.context["cases"]
    assert form.errors == {
        "source": ["Source is empty."],
        "memory_mb": ["Must be at most 512, this runtime's cap."],
        "time_limit_ms": ["Must be a whole number."],
    }
    assert cases.forms[0].errors == {"tolerance": ["Must be a non-negative number."]}
    assert cases.forms[1].errors == {"weight": ["Must be a whole number from 1 to 1000."]}
    assert not Evaluation.objects.exists()


def test_textarea_line_breaks_are_stored_as_typed(logged_in: Client, runtime: Runtime) -> None:
    # Browsers submit a textarea's line breaks as CRLF whatever the page showed.
    data = submit_form(
        runtime,
        source="a = input()\r\nprint(a)\r\n",
        stdin="x\r\ny",
        **{"cases-0-stdin": "1\r\n2", "cases-0-expected_output": "1\r\n2\r\n"},
    )
    logged_in.post(reverse("executions:evaluation-submit"), data)
    evaluation = Evaluation.objects.get()
    assert evaluation.files[0]["content"] == "a = input()\nprint(a)\n"
    assert evaluation.stdin == "x\ny"
    case = evaluation.test_cases.get()
    assert (case.stdin, case.expected_output) == ("1\n2", "1\n2\n")
