"""Sessions of the catalogue's runtimes, built as the platform builds them, without a database.

``catalogue_session`` turns a catalogue ``Entry`` and a source into the ``Session`` the
platform would run: an unsaved ``Runtime`` carries the entry's fields (as
``manage.py runtimes`` seeds them), and the platform's own ``runtime_policy`` and
``compile_step`` make its policy and compile step, so the compile output cap and every
runtime limit are the platform's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from executions.catalogue import ENTRIES, IMAGES, Entry
from executions.models import Runtime
from executions.services.running import compile_step, runtime_policy
from sandbox.contract import Session

ENTRIES_BY_NAME = {entry.name: entry for entry in ENTRIES}


def catalogue_runtime(entry: Entry, **overrides: Any) -> Runtime:
    """An unsaved ``Runtime`` of ``entry``, its fields changed by ``overrides`` (e.g. a shorter
    ``compile_time_limit_ms``)."""
    limits = entry.limits
    fields: dict[str, Any] = {
        "name": entry.name,
        "display_name": entry.display_name,
        "language": entry.language,
        "image": IMAGES[entry.image].tag,
        "command": list(entry.command),
        "compile_command": list(entry.compile_command),
        "file_name": entry.file_name,
        "default_time_limit_ms": limits.time_limit_ms,
        "default_memory_mb": limits.memory_mb,
        "compile_time_limit_ms": limits.compile_time_limit_ms,
        "compile_memory_mb": limits.compile_memory_mb,
        "pids_limit": limits.pids,
    }
    unknown = set(overrides) - {field.name for field in Runtime._meta.get_fields()}
    if unknown:
        raise TypeError(f"Runtime has no field {', '.join(sorted(unknown))}")
    return Runtime(**{**fields, **overrides})


def catalogue_session(
    entry: Entry | str,
    source: str | bytes,
    stdins: Sequence[bytes] = (b"",),
    *,
    time_limit_ms: int,
    memory_mb: int,
    output_kb: int = 64,
    **runtime_overrides: Any,
) -> Session:
    """The session the platform runs for ``source`` as ``entry``'s main file, one case per
    stdin, with these per-case limits."""
    if isinstance(entry, str):
        entry = ENTRIES_BY_NAME[entry]
    if isinstance(source, str):
        source = source.encode()
    runtime = catalogue_runtime(entry, **runtime_overrides)
    policy = runtime_policy(
        runtime, time_limit_ms=time_limit_ms, memory_mb=memory_mb, output_kb=output_kb
    )
    return Session(
        execution_id=0,
        handle=f"evaltest-{entry.name}-{uuid.uuid4().hex[:8]}",
        image=runtime.image,
        command=list(runtime.command),
        files={runtime.file_name: source},
        policy=policy,
        stdins=list(stdins),
        compile=compile_step(runtime, policy),
    )
