"""How program output is shown on a page: whitespace made visible, a short excerpt around a
position, and a text split around one line so a template can mark it.

Pure functions on text. What they return is still the program's: templates escape it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Judges show whitespace this way when it is what differs; the arrows and dots are what
# people recognise from editors.
_VISIBLE = {" ": "\u00b7", "\t": "\u2192", "\n": "\u21b5", "\r": "\u240d", "\x7f": "\u2421"}
# Characters that print as nothing, or reorder what follows, though they are not whitespace:
# C1 controls, zero-width characters, bidirectional controls and the byte-order mark.
_INVISIBLE = frozenset(
    [
        *range(0x80, 0xA0),
        0x200B,
        0x200C,
        0x200D,
        0x2060,
        0xFEFF,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
)
# Characters shown around a position; a program may print one line of a megabyte.
EXCERPT_RADIUS = 40


def visible(text: str) -> str:
    """``text`` with whitespace and control characters shown as symbols (NUL as ␀), other
    blank or invisible characters as ``\\uNNNN``, and each byte that was not UTF-8 (a lone
    surrogate from ``surrogateescape``) as ``\\xNN``."""
    shown = []
    for char in text:
        code = ord(char)
        if char in _VISIBLE:
            shown.append(_VISIBLE[char])
        elif code < 0x20:
            shown.append(chr(0x2400 + code))
        elif char.isspace() or code in _INVISIBLE:
            shown.append(f"\\u{code:04x}")
        elif 0xDC80 <= code <= 0xDCFF:
            shown.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            shown.append("\ufffd")
        else:
            shown.append(char)
    return "".join(shown)


@dataclass(frozen=True)
class Excerpt:
    """Part of a line around one character, each part made ``visible``. ``at`` is that
    character, or "" when the position is just past the end of the line."""

    before: str
    at: str
    after: str
    clipped_before: bool
    clipped_after: bool


def excerpt(line: str, column: int, radius: int = EXCERPT_RADIUS) -> Excerpt:
    """The characters of ``line`` within ``radius`` of ``column`` (counted from 1)."""
    index = max(column - 1, 0)
    start = max(0, index - radius)
    end = min(len(line), index + 1 + radius)
    return Excerpt(
        before=visible(line[start:index]),
        at=visible(line[index : index + 1]),
        after=visible(line[index + 1 : end]),
        clipped_before=start > 0,
        clipped_after=end < len(line),
    )


def split_at_line(text: str, line: int) -> tuple[str, str, str]:
    """``text`` as (what comes before line ``line``, that line without its newline, the
    rest); the middle part is empty when the text has no such line."""
    start = 0
    for _ in range(line - 1):
        newline = text.find("\n", start)
        if newline == -1:
            return text, "", ""
        start = newline + 1
    end = text.find("\n", start)
    end = len(text) if end == -1 else end
    return text[:start], text[start:end], text[end:]
