"""Showing program output: visible whitespace, excerpts, and splitting around a line."""

from __future__ import annotations

import pytest

from executions.display import Excerpt, excerpt, split_at_line, visible


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a b\tc\n", "a·b→c↵"),
        ("x\r\n", "x␍↵"),
        ("nul\x00bell\x07", "nul␀bell␇"),
        ("del\x7f", "del␡"),
        ("nbsp\u00a0zwsp\u200bbom\ufeff", "nbsp\\u00a0zwsp\\u200bbom\\ufeff"),
        ("\u202eevil", "\\u202eevil"),
        ("c1\x85\x9b", "c1\\u0085\\u009b"),
        # Bytes that were not UTF-8, decoded with surrogateescape.
        (b"ok\xff\xfe".decode("utf-8", errors="surrogateescape"), "ok\\xff\\xfe"),
        ("<b>&amp;</b> é 日本", "<b>&amp;</b>·é·日本"),  # escaping is the template's job
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_excerpt_marks_one_character() -> None:
    assert excerpt("hello world\n", 7) == Excerpt("hello·", "w", "orld↵", False, False)


def test_excerpt_past_the_end_of_the_line() -> None:
    assert excerpt("42", 3) == Excerpt("42", "", "", False, False)
    assert excerpt("", 1) == Excerpt("", "", "", False, False)


def test_excerpt_of_a_huge_line_is_clipped() -> None:
    line = "a" * 1_000_000 + "b" + "c" * 1_000_000
    found = excerpt(line, 1_000_001, radius=5)
    assert found == Excerpt("aaaaa", "b", "ccccc", True, True)


@pytest.mark.parametrize(
    ("text", "line", "parts"),
    [
        ("1\n2\n3\n", 2, ("1\n", "2", "\n3\n")),
        ("1\n2\n3", 3, ("1\n2\n", "3", "")),
        ("only", 1, ("", "only", "")),
        ("1\n", 2, ("1\n", "", "")),  # an empty last line
        ("1\n", 5, ("1\n", "", "")),  # no such line
        ("", 1, ("", "", "")),
    ],
)
def test_split_at_line(text: str, line: int, parts: tuple[str, str, str]) -> None:
    assert split_at_line(text, line) == parts
    assert "".join(parts) == text
