"""The runtime picker in a real browser: versions grouped by language, highlighting that
follows the runtime (loaded on demand, plain text where no mode exists), starter code that
never replaces what the evaluator typed, and the source page highlighted in its runtime's mode.

The rows come from the catalogue's entries (``runtimes_sync``): no image is needed."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from executions import services
from executions.catalogue import ENTRIES, ENTRY_BY_NAME
from executions.models import Evaluation, Runtime
from executions.services.runtimes import runtimes_sync
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_service, pytest.mark.slow]

EDITOR = "document.querySelector('#submit-form .CodeMirror').CodeMirror"
# True once the editor highlights as its runtime's MIME type says: in a real mode when
# CodeMirror knows one for it (its file has then loaded), else as plain text.
MODE_SETTLED = f"""(mime) => {{
  const mode = {EDITOR}.getMode().name;
  return CodeMirror.findModeByMIME(mime) ? mode !== "null" : mode === "null";
}}"""
TOKENS = "#submit-form .CodeMirror-code span[class*='cm-']"


def sync(*names: str) -> dict[str, Runtime]:
    entries = [ENTRY_BY_NAME[name] for name in names] if names else list(ENTRIES)
    return {outcome.runtime.name: outcome.runtime for outcome in runtimes_sync(entries)}


def editor_value(page: Any) -> str:
    return str(page.evaluate(f"{EDITOR}.getValue()"))


def replace_code(page: Any, code: str) -> None:
    """Select everything in the editor and type `code` over it, as a person would."""
    page.click("#submit-form .CodeMirror")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(code)


def pick(page: Any, runtime: Runtime) -> None:
    page.select_option("#id_runtime", runtime.name)
    page.wait_for_function(MODE_SETTLED, arg=runtime.editor_mode)


def watch_errors(page: Any) -> Callable[[], list[str]]:
    """Script errors, and static files (a mode's among them) that failed to load, from now
    on. The browser's own favicon request is not the page's."""
    errors: list[str] = []

    def failed(response: Any) -> None:
        if response.status >= 400 and "/static/" in response.url:
            errors.append(f"{response.status} {response.url}")

    page.on("pageerror", lambda error: errors.append(f"script error: {error}"))
    page.on("response", failed)
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    return lambda: errors


def test_highlighting_and_starter_code_follow_the_runtime_and_typed_code_stays(
    page: Any, live_server: Any, user: Any
) -> None:
    runtimes = sync("bash-5.2", "cpp17-gcc12", "cpp20-gcc12", "nim-1.6", "python-3.11")
    bash, cpp, nim, python = (
        runtimes[name] for name in ("bash-5.2", "cpp17-gcc12", "nim-1.6", "python-3.11")
    )
    errors = watch_errors(page)
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/")

    groups = page.locator("#id_runtime optgroup")
    expect(groups).to_have_count(4)
    assert [groups.nth(index).get_attribute("label") for index in range(4)] == [
        "Bash",
        "C++",
        "Nim",
        "Python",
    ]
    expect(groups.nth(1).locator("option")).to_have_text(["C++17, GCC 12", "C++20, GCC 12"])

    # A fresh form starts from the first runtime's hello-world, highlighted as a shell script.
    expect(page.locator("#id_runtime")).to_have_value(bash.name)
    page.wait_for_function(MODE_SETTLED, arg=bash.editor_mode)
    assert editor_value(page) == bash.hello_world
    expect(page.locator("#runtime-compiles")).to_have_text(
        "No compile step: each test case runs the source as it is."
    )

    # Picking C++: its starter code, in C++ highlighting, and its compile step.
    pick(page, cpp)
    assert editor_value(page) == cpp.hello_world
    expect(page.locator(TOKENS).filter(has_text=re.compile(r"^int$")).first).to_have_class(
        re.compile(r"\bcm-type\b")
    )
    expect(page.locator(f"{TOKENS}.cm-meta").first).to_have_text("#include <iostream>")
    expect(page.locator("#runtime-limits")).to_contain_text("C++ (C++17, GCC 12): default 5000 ms")
    expect(page.locator("#runtime-compiles")).to_have_text(
        "Compiled: each submission compiles once (within 15000 ms, 512 MB), "
        "then runs every test case."
    )
    screenshot(page, "runtime-picker-cpp")

    # Typed code is never replaced: not by Python, not by Nim (plain text), not by C++ again.
    typed = "int answer() { return 42; }"
    replace_code(page, typed)
    pick(page, python)
    assert editor_value(page) == typed
    expect(page.locator(f"{TOKENS}.cm-builtin")).to_have_text("int")
    expect(page.locator(f"{TOKENS}.cm-type")).to_have_count(0)
    pick(page, nim)
    assert editor_value(page) == typed
    expect(page.locator(TOKENS)).to_have_count(0)
    pick(page, cpp)
    assert editor_value(page) == typed
    expect(page.locator(f"{TOKENS}.cm-type")).to_have_text("int")

    # An emptied editor takes the next runtime's hello-world, and an unchanged hello-world
    # gives way to the next one's.
    replace_code(page, "")
    pick(page, python)
    assert editor_value(page) == python.hello_world
    pick(page, cpp)
    assert editor_value(page) == cpp.hello_world

    # The evaluation's page highlights the source in its runtime's mode.
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    evaluation = Evaluation.objects.get()
    assert evaluation.runtime == cpp and evaluation.files[0]["content"] == cpp.hello_world
    source = page.locator(".source-view")
    expect(source.locator(".cm-meta").first).to_have_text("#include <iostream>")
    expect(source.locator(".cm-type").first).to_have_text("int")
    screenshot(page, "source-highlighted-cpp")
    assert errors() == []


def test_a_resubmission_keeps_its_source_whatever_runtime_is_picked(
    page: Any, live_server: Any, user: Any
) -> None:
    runtimes = sync("cpp17-gcc12", "python-3.11")
    python, cpp = runtimes["python-3.11"], runtimes["cpp17-gcc12"]
    source = "print(int(input()) * 2)\n"
    evaluation = services.evaluation_submit(user=user, runtime=python, source=source)
    errors = watch_errors(page)
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/?from={evaluation.pk}")
    expect(page.locator("#id_runtime")).to_have_value(python.name)
    page.wait_for_function(MODE_SETTLED, arg=python.editor_mode)
    assert editor_value(page) == source
    pick(page, cpp)
    assert editor_value(page) == source
    assert errors() == []


def test_every_catalogue_runtime_shows_its_hello_world_in_its_mode(
    page: Any, live_server: Any, user: Any
) -> None:
    """Each mode file the catalogue needs is vendored and loads with what it depends on
    (PHP's on HTML, Rust's on the simple-mode addon); a MIME type without a mode is plain
    text. Highlighted hello-worlds have tokens; plain ones have none."""
    runtimes = sync()
    errors = watch_errors(page)
    log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/evaluations/new/")
    expect(page.locator("#id_runtime option")).to_have_count(len(ENTRIES))
    plain = []
    for runtime in sorted(runtimes.values(), key=lambda runtime: runtime.name):
        pick(page, runtime)
        assert editor_value(page) == runtime.hello_world, runtime.name
        highlighted = page.evaluate(
            "(mime) => Boolean(CodeMirror.findModeByMIME(mime))", runtime.editor_mode
        )
        if highlighted:
            assert page.locator(TOKENS).count() > 0, runtime.name
        else:
            plain.append(runtime.editor_mode)
            expect(page.locator(TOKENS)).to_have_count(0)
    assert sorted(set(plain)) == [
        "text/x-ada",
        "text/x-awk",
        "text/x-bc",
        "text/x-elixir",
        "text/x-nasm",
        "text/x-nim",
        "text/x-prolog",
        "text/x-vala",
    ]

    # The source page too: Rust in its mode, Nim as plain text.
    for name, tokens in (("rust-1.63", True), ("nim-1.6", False)):
        runtime = runtimes[name]
        evaluation = services.evaluation_submit(
            user=user, runtime=runtime, source=runtime.hello_world
        )
        page.goto(f"{live_server.url}{evaluation.get_absolute_url()}")
        view = page.locator(".source-view .CodeMirror-code")
        expect(view).to_contain_text("Hello, world!")
        spans = view.locator("span[class*='cm-']")
        if tokens:
            expect(spans.first).to_be_visible()
        else:
            expect(spans).to_have_count(0)
    assert errors() == []
