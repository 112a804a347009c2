"""Strict readers for settings that come from the environment.

Each helper raises ``ImproperlyConfigured`` naming the variable when its value is malformed,
and reads ``NAME_FILE`` (a path whose contents are the value) when ``NAME`` is unset, so
secrets can come from mounted files.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is not None:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path!r}: {exc}") from exc
    return default


def load_env_file(path: Path) -> list[str]:
    """Put each ``NAME=value`` line of ``path`` into the environment where ``NAME`` is unset,
    and return the names it set. Nothing happens when the file does not exist.

    Blank lines and ``#`` comments are skipped; any other line without ``=`` raises
    ``ImproperlyConfigured`` naming the file and the line.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read {path}: {exc}") from exc
    set_here = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier():
            raise ImproperlyConfigured(f"{path}, line {number}: expected NAME=value, got {line!r}")
        if name not in os.environ:
            os.environ[name] = value.strip()
            set_here.append(name)
    return set_here


def envbool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    value = env(name)
    if value is None or value.strip() == "":
        return default
    return parse_int(name, value, minimum=minimum)


def parse_int(name: str, value: str, *, minimum: int | None = None) -> int:
    """``value`` of the variable ``name`` as an integer of at least ``minimum``."""
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
    return number


def envlist(name: str, default: list[str]) -> list[str]:
    value = env(name)
    if value is None:
        return default
    return parse_list(value)


def parse_list(value: str) -> list[str]:
    """The items of a comma-separated ``value``, stripped, empty ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


DATABASE_CONNECT_TIMEOUT_S = 5


def database_from_url(name: str, url: str) -> dict[str, object]:
    """Turn ``postgres://user:pass@host/db?opt=v`` or ``sqlite:///path`` into a DATABASES entry.

    Query options are libpq's; ``connect_timeout`` is ``DATABASE_CONNECT_TIMEOUT_S`` unless
    the URL sets it."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        # libpq waits for the operating system's TCP timeout (minutes) by default: a database
        # host that does not answer would hold each request that long instead of a quick 503.
        options.setdefault("connect_timeout", str(DATABASE_CONNECT_TIMEOUT_S))
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ImproperlyConfigured(f"{name} must name a database, got {url!r}")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if path.startswith("//"):
            path = path[1:]
        elif path.startswith("/"):
            path = path[1:] or ":memory:"
        return sqlite_database(path)
    raise ImproperlyConfigured(
        f"{name} must start with postgres:// or sqlite://, got scheme {parts.scheme!r}"
    )


def sqlite_database(path: str | Path) -> dict[str, object]:
    # WAL and immediate transactions let the web server and the worker cluster write to
    # one SQLite file at the same time without "database is locked" errors.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # Opening a SQLite file is cheap but not free, and the worker cluster's broker closes
        # non-persistent connections around every poll: keep each thread's connection open.
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
