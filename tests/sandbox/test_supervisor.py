"""The host's half of the supervisor protocol: what it writes, and how it reads records it
must not be fooled by. No engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import supervisor
from sandbox.policy import Limits

NONCE = "0123456789abcdef" * 2


def header(
    index: int = 0,
    *,
    kind: str = "R",
    exit_code: int = 0,
    signal: int = 0,
    flags: int = 0,
    out: int = 0,
    err: int = 0,
    nonce: str = NONCE,
) -> bytes:
    return f"{nonce} {kind} {index} {exit_code} {signal} 12 9 4096 {flags} {out} {err}\n".encode()


def records(data: bytes, *, max_payload: int = 100) -> list[supervisor.Record]:
    return list(supervisor.RecordReader(NONCE, max_payload).feed(data))


def test_a_record_carries_each_fact_and_both_streams() -> None:
    (record,) = records(header(3, exit_code=2, out=4, err=3) + b"out\nerr")
    assert (record.index, record.failed) == (3, False)
    result = record.result
    assert (result.stdout, result.stderr) == (b"out\n", b"err")
    assert (result.exit_code, result.signal) == (2, None)
    assert (result.wall_time_ms, result.cpu_time_ms, result.peak_memory_bytes) == (12, 9, 4096)
    assert not (result.timed_out or result.oom_killed or result.output_limit_exceeded)


@pytest.mark.parametrize(
    ("flags", "facts"),
    [
        (1, (True, False, False, False)),
        (2, (False, True, False, False)),
        (4, (False, False, True, False)),
        (8, (False, False, False, True)),
        (15, (True, True, True, True)),
    ],
)
def test_flags(flags: int, facts: tuple[bool, ...]) -> None:
    (record,) = records(header(flags=flags))
    result = record.result
    assert (
        result.timed_out,
        result.oom_killed,
        result.stdout_truncated,
        result.stderr_truncated,
    ) == facts


def test_a_signal_reads_as_a_shell_reports_it() -> None:
    (record,) = records(header(exit_code=-1, signal=9))
    assert (record.result.exit_code, record.result.signal) == (137, 9)


def test_a_step_the_supervisor_stopped_has_neither_exit_code_nor_signal() -> None:
    (record,) = records(header(exit_code=-1, signal=0, flags=1))
    assert (record.result.exit_code, record.result.signal, record.result.timed_out) == (
        None,
        None,
        True,
    )


def test_an_exit_code_above_128_also_names_the_signal() -> None:
    (record,) = records(header(exit_code=139))
    assert (record.result.exit_code, record.result.signal) == (139, 11)


def test_a_failure_record_carries_the_message() -> None:
    (record,) = records(header(-1, kind="X", exit_code=-1, out=9) + b"gave up!!")
    assert record.failed and record.index == -1 and record.message == "gave up!!"


def test_records_split_anywhere_come_out_whole_and_in_order() -> None:
    stream = header(0, out=3) + b"abc" + header(1, err=2) + b"de" + header(2)
    reader = supervisor.RecordReader(NONCE, 100)
    seen = []
    for byte in stream:
        seen += list(reader.feed(bytes([byte])))
    assert [(r.index, r.result.stdout, r.result.stderr) for r in seen] == [
        (0, b"abc", b""),
        (1, b"", b"de"),
        (2, b"", b""),
    ]
    assert reader.pending == 0


def test_payload_bytes_that_look_like_a_header_are_payload() -> None:
    forged = header(1)
    (record,) = records(header(0, out=len(forged)) + forged)
    assert record.result.stdout == forged


@pytest.mark.parametrize(
    "stream",
    [
        header(nonce="ff" * 16),  # another session's nonce, or a guess
        header()[:-1] + b" extra\n",
        b"garbage\n",
        header().replace(b" R ", b" Z "),
        header().replace(b" 12 ", b" -12 "),
        b"\n",
    ],
)
def test_anything_but_a_record_of_this_session_breaks_the_protocol(stream: bytes) -> None:
    with pytest.raises(supervisor.ProtocolError):
        records(stream)


def test_a_header_without_an_end_is_refused_once_too_long() -> None:
    reader = supervisor.RecordReader(NONCE, 100)
    assert list(reader.feed(b"0" * 511)) == []  # might still be a header
    with pytest.raises(supervisor.ProtocolError, match=r"^a record header is too long$"):
        list(reader.feed(b"0"))


def test_a_line_ending_past_the_header_limit_is_too_long_not_merely_malformed() -> None:
    # The reader never looks beyond 512 bytes for a header's end, whatever follows.
    with pytest.raises(supervisor.ProtocolError, match=r"^a record header is too long$"):
        records(b"0" * 600 + b"\n")


def test_a_malformed_header_is_quoted_up_to_120_bytes() -> None:
    garbage = bytes(range(65, 91)) * 10  # 260 bytes of letters, then the line's end
    with pytest.raises(supervisor.ProtocolError) as raised:
        records(garbage + b"\n")
    assert str(raised.value) == f"malformed record header: {garbage[:120]!r}"


def test_exit_status_zero_is_kept() -> None:
    (record,) = records(header(exit_code=0))
    assert (record.result.exit_code, record.result.signal) == (0, None)


def test_a_payload_over_the_output_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(
        supervisor.ProtocolError, match=r"^a record's payload exceeds the output limit$"
    ):
        records(header(out=101), max_payload=100)
    assert records(header(out=100) + b"x" * 100, max_payload=100)[0].result.stdout == b"x" * 100


def test_a_step_carries_its_limits_command_and_input() -> None:
    limits = Limits(wall_time_ms=1500, memory_mb=64, output_bytes=1000, cpus=2.0)
    data = supervisor.step("C", 4, ("python3", "main.py"), limits, b"in\x00put")
    first, _, rest = data.partition(b"\n")
    kind, *numbers = first.decode().split()
    argv = b"python3\x00main.py\x00"
    assert kind == "C"
    assert [int(n) for n in numbers] == [
        4,
        1500,
        3000,  # CPU time: the wall time on each of the two CPUs
        64 * 1024 * 1024,
        1000,
        16 * 1024 * 1024,
        64,
        len(argv),
        len(b"in\x00put"),
    ]
    assert rest == argv + b"in\x00put"


def test_a_step_takes_its_own_cpu_limit_when_set() -> None:
    limits = Limits(wall_time_ms=1500, memory_mb=64, output_bytes=1000, cpu_time_ms=700)
    assert supervisor.cpu_limit_ms(limits) == 700
    assert supervisor.cpu_limit_ms(Limits(wall_time_ms=1500, memory_mb=64, output_bytes=1)) == 1500


def unpacked(archive: bytes) -> dict[str, bytes]:
    """The files of a code archive, read the way the supervisor reads it."""
    files: dict[str, bytes] = {}
    while archive:
        line, archive = archive.split(b"\n", 1)
        name_length, size = map(int, line.split(b" "))
        name = archive[:name_length].decode()
        files[name] = archive[name_length : name_length + size]
        archive = archive[name_length + size :]
    return files


def test_the_code_archive_carries_each_file_under_its_name() -> None:
    files = {"main.py": b"print(1)\n", "pkg/mod.py": b"", "d\u00e9j\u00e0 vu.txt": b"\x00\n" * 3}
    archive = supervisor.code_archive(files)
    assert b"7 9\nmain.py" in archive
    assert unpacked(archive) == files
    assert supervisor.code_archive({}) == b""


@pytest.mark.parametrize(
    "name", ["../x.py", "/etc/passwd", "a/../../b", "", "a//b", "a\x00b", "a/"]
)
def test_the_code_archive_refuses_names_that_leave_the_code_directory(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe file name"):
        supervisor.code_archive({"main.py": b"", name: b""})


def test_the_session_opens_with_the_nonce_then_the_archive() -> None:
    assert supervisor.session_start("ab12", b"TAR") == b"EVALPLATFORM-SESSION 1 ab12\nA 3\nTAR"


def test_a_configured_binary_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = tmp_path / "supervisor"
    built.write_bytes(b"\x7fELF...")
    monkeypatch.setenv(supervisor.SUPERVISOR_ENV, str(built))
    supervisor.binary.cache_clear()
    try:
        assert supervisor.binary() == b"\x7fELF..."
        monkeypatch.setenv(supervisor.SUPERVISOR_ENV, str(tmp_path / "missing"))
        supervisor.binary.cache_clear()
        with pytest.raises(supervisor.SupervisorUnavailable, match="cannot be read"):
            supervisor.binary()
    finally:
        supervisor.binary.cache_clear()


def test_without_a_compiler_the_error_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no musl-gcc
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(supervisor.SupervisorUnavailable, match=r"python -m sandbox\.supervisor"):
        supervisor.build(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_built_binary_is_static_and_small(tmp_path: Path) -> None:
    target = tmp_path / "supervisor"
    try:
        supervisor.build(target)
    except supervisor.SupervisorUnavailable as exc:
        pytest.skip(str(exc))
    data = target.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert b"ld-linux" not in data, "dynamically linked: it must run in any image"
    assert target.stat().st_mode & 0o111


def test_line_ended_records_each_end_with_a_newline() -> None:
    """As the unprivileged supervisor writes them, into a container log."""
    reader = supervisor.RecordReader(NONCE, 100, line_ended=True)
    stream = header(0, out=3) + b"abc\n" + header(1, err=1) + b"\n\n"
    seen = [record for byte in stream for record in reader.feed(bytes([byte]))]
    assert [(r.index, r.result.stdout, r.result.stderr) for r in seen] == [
        (0, b"abc", b""),
        (1, b"", b"\n"),
    ]
    assert reader.pending == 0


@pytest.mark.parametrize("ending", [b"", b"x", b" \n"])
def test_a_line_ended_record_without_its_newline_breaks_the_protocol(ending: bytes) -> None:
    reader = supervisor.RecordReader(NONCE, 100, line_ended=True)
    with pytest.raises(supervisor.ProtocolError, match=r"^a record does not end its line$"):
        list(reader.feed(header(0, out=3) + b"abc" + ending + header(1)))
