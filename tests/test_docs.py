"""The documented commands run as written, and the documents' links lead somewhere.

The README's quick start (``make run``) and every ``sh`` and ``python`` block of docs/api.md run,
in order, in one shell, from a fresh copy of this checkout, against the platform that ``make run``
serves there: a new virtualenv, a new SQLite database, the embedded broker. The only change
made to the text is the port, so that the test does not need 8000 to be free.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_real

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
API_DOC = ROOT / "docs" / "api.md"
# Every document a reader follows links through, the README's list included.
DOCUMENTS = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("deploy/*/README.md")),
]
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
# Variables of the developer's or CI's own shell that a newcomer's would not have.
FOREIGN_ENVIRONMENT = re.compile(
    r"^(DATABASE_URL|REDIS_URL|DEBUG|SECRET_KEY.*|DJANGO_.*|VAR_DIR|EXECUTION_.*|PORT|"
    r"ADMIN_.*|Q_.*|PYTEST_.*|VIRTUAL_ENV|MAKE.*|MFLAGS)$"
)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int


def section(text: str, heading: str) -> str:
    """The text under the level-2 ``heading``, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def api_blocks() -> list[Block]:
    """The ``sh`` and ``python`` blocks of docs/api.md, in order."""
    return code_blocks(API_DOC.read_text())


def code_blocks(text: str, *, languages: tuple[str, ...] = ("sh", "python")) -> list[Block]:
    blocks = []
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```$", text, re.M | re.S):
        indent, language, code = match.groups()
        if language in languages:
            code = "\n".join(line.removeprefix(indent) for line in code.splitlines())
            blocks.append(Block(language, code, text.count("\n", 0, match.start()) + 1))
    return blocks


def test_the_quick_start_is_the_two_make_targets() -> None:
    (quick_start,) = code_blocks(section(README.read_text(), "Two commands"))
    commands = [line.split("#")[0].strip() for line in quick_start.code.splitlines()]
    assert commands == ["make run", "make test"]
    # Both targets exist and expand (-n: print, do not run).
    for target in ("run", "test"):
        result = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr


def test_the_api_doc_has_runnable_blocks() -> None:
    blocks = api_blocks()
    assert len(blocks) >= 4, f"docs/api.md shows {len(blocks)} runnable blocks"
    assert "api_token create" in blocks[0].code, "the token is made first: every example uses it"
    languages = {block.language for block in blocks}
    assert languages == {"sh", "python"}, "the API section shows shell and Python examples"
    assert any("api_token create" in block.code for block in blocks)
    assert blocks[-1].language == "sh" and "api_token revoke" in blocks[-1].code, (
        "revoking the token comes last: every example before it uses the token"
    )


def without_code(text: str) -> str:
    return re.sub(r"^( *)```.*?^\1```$", "", text, flags=re.M | re.S)


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives the document's headings."""
    headings = re.findall(r"^#+ (.+)$", without_code(document.read_text()), re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings
    }


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_links_between_documents_lead_somewhere(document: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(document.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_architecture_names_only_modules_that_exist() -> None:
    """docs/architecture.md must match the code: every path and module it names is there."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    names = set(re.findall(r"`([A-Za-z_][\w./]*)`", text)) | set(
        re.findall(r"^ *((?:sandbox|executions|execution_service|evalplatform)[\w.]*)", text, re.M)
    )
    files = {path.name for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    # A name like `docker/` is relative to the package the sentence is about.
    bases = [ROOT, ROOT / "sandbox", ROOT / "executions", ROOT / "executions" / "backends"]
    checked = 0
    for name in sorted(names):
        if "/" in name:
            found = any((base / name).exists() for base in bases)
            assert found, f"docs/architecture.md names {name}, which is gone"
        elif name.endswith(".py"):
            assert name in files, f"docs/architecture.md names {name}, which is gone"
        elif name.split(".")[0] in ("sandbox", "executions", "execution_service"):
            module = ROOT.joinpath(*name.split("."))
            assert module.is_dir() or module.with_suffix(".py").exists(), name
        else:
            continue
        checked += 1
    assert checked > 30


def fresh_checkout(destination: Path) -> Path:
    """The files a clone of this working tree would have (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def newcomer_environment(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not FOREIGN_ENVIRONMENT.match(k)}
    return {**environ, **extra}


def docker_engine_answers() -> bool:
    from sandbox.docker import DockerBackend

    return DockerBackend(base_url="unix:///var/run/docker.sock").health().ok


@dataclass
class Served:
    checkout: Path
    port: int
    log: Path
    runs_code: bool

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``make run`` in a fresh copy, as the README says: with the Docker backend where an
    engine answers (the README's next step inside a container), else as it comes."""
    if shutil.which("make") is None:
        require_real("make", "not installed")
    checkout = fresh_checkout(tmp_path_factory.mktemp("fresh") / "evalplatform")
    port = free_port()
    extra = {"PORT": str(port), "ADMIN_PASSWORD": "readme-admin-password"}
    if docker_engine_answers():
        extra["EXECUTION_BACKEND"] = "docker"
    elif os.environ.get("CI"):
        require_real("A Docker engine", "docs/api.md's examples run programs on it")
    log = checkout.parent / "make-run.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            ["make", "run"],
            cwd=checkout,
            env=newcomer_environment(**extra),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Served(checkout, port, log, runs_code="EXECUTION_BACKEND" in extra)
    try:
        wait_for_login_page(running, server)
        yield running
    finally:
        stop(server)


def wait_for_login_page(running: Served, server: subprocess.Popen[bytes]) -> None:
    # A new virtualenv and every pinned requirement come first.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, f"make run stopped:\n{running.output()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/login/", timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"make run did not serve the login page in 300 s:\n{running.output()}")


def stop(server: subprocess.Popen[bytes]) -> None:
    # `serve` stops its web server and cluster itself on SIGTERM, as on Ctrl-C.
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def run_api_doc(running: Served) -> dict[int, str]:
    """Every block of docs/api.md in order, in one shell; each block's output by line."""
    blocks = api_blocks()
    address = f"127.0.0.1:{running.port}"
    script = ["set -euo pipefail"]
    for number, block in enumerate(blocks):
        code = block.code.replace(DOCUMENTED_ADDRESS, address)
        script.append(f"echo '@@block {block.line}'")
        if block.language == "python":
            path = running.checkout.parent / f"api-block-{number}.py"
            path.write_text(code + "\n")
            script.append(f".venv/bin/python {path}")
        else:
            script.append(code)
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=running.checkout,
        env=newcomer_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"a docs/api.md command failed (exit {result.returncode}); output up to it:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    outputs: dict[int, str] = {}
    for chunk in result.stdout.split("@@block ")[1:]:
        line, _, output = chunk.partition("\n")
        outputs[int(line)] = output
    return outputs


def test_the_documented_commands_run_as_written_from_a_fresh_checkout(served: Served) -> None:
    announced = served.output().count("Execution backend:")
    assert announced == 1, f"the backend is announced {announced} times:\n{served.output()}"

    outputs = run_api_doc(served)
    blocks = api_blocks()
    by_code = {block.code: outputs[block.line] for block in blocks}

    token_block = next(code for code in by_code if "api_token create" in code)
    assert '"name":"python-3.11"' in by_code[token_block], "the token lists the runtimes"
    submit_block = next(code for code in by_code if "?wait=10" in code)
    python_block = next(code for code in by_code if "import os, time, requests" in code)
    revoke_block = next(code for code in by_code if "api_token revoke" in code)
    assert by_code[revoke_block].strip().endswith("401"), by_code[revoke_block]
    if served.runs_code:
        # Real runs: the reversal program is right on both cases, 2 + 2 is 4.
        assert '"status":"finished"' in by_code[submit_block], by_code[submit_block]
        assert '"verdict":"accepted"' in by_code[submit_block], by_code[submit_block]
        assert by_code[python_block].startswith("accepted 4"), by_code[python_block]
    else:
        assert '"status":"refused"' in by_code[submit_block], by_code[submit_block]


def test_manage_py_runs_with_the_settings_make_run_used(served: Served) -> None:
    """No DEBUG in the environment: the checkout's var/local.env supplies what make run used."""
    result = subprocess.run(
        [".venv/bin/python", "manage.py", "api_token", "create", "admin"],
        cwd=served.checkout,
        env=newcomer_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{40}\n", result.stdout), result.stdout
