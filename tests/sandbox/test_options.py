"""Backend options: one frozen dataclass per backend, built from keyword options, with errors
that name the option."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sandbox.docker import DEFAULT_LOCK_DIR, DockerBackend, DockerOptions
from sandbox.options import OptionError, build_options, names


@dataclass(frozen=True)
class Example:
    count: int = 3
    ratio: float = 0.5
    label: str = "default"
    items: tuple[str, ...] = ()
    upper: str = field(default="", metadata={"convert": lambda value: str(value).upper()})


def test_values_are_converted_to_the_field_types() -> None:
    built = build_options(Example, {"count": "7", "ratio": 2, "items": "a, b,,c", "upper": "x"})
    assert built == Example(count=7, ratio=2.0, items=("a", "b", "c"), upper="X")
    assert build_options(Example, {"items": ["a", " b "]}).items == ("a", "b")


@pytest.mark.parametrize("empty", [None, ""])
def test_none_or_an_empty_string_means_the_default(empty: object) -> None:
    assert build_options(Example, {"count": empty, "label": empty}) == Example()


def test_an_unknown_option_is_named_with_the_known_ones() -> None:
    with pytest.raises(OptionError, match="unknown option 'colour'") as caught:
        build_options(Example, {"colour": "red"})
    assert caught.value.option == "colour"
    assert "count, items, label, ratio, upper" in str(caught.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [("count", "many"), ("ratio", "half"), ("label", 12), ("items", 3)],
)
def test_a_value_that_does_not_convert_is_named(option: str, value: object) -> None:
    with pytest.raises(OptionError, match=f"option '{option}'") as caught:
        build_options(Example, {option: value})
    assert caught.value.option == option
    assert isinstance(caught.value, ValueError)


def test_names_refuses_what_is_not_a_list() -> None:
    with pytest.raises(TypeError):
        names(3)


# --- the Docker backend's options ----------------------------------------------------------


def test_docker_keeps_accepting_keyword_options(tmp_path: object) -> None:
    backend = DockerBackend(lock_dir=str(tmp_path), max_concurrent_per_node="2", grace_s=1)
    assert backend.options == DockerOptions(
        lock_dir=str(tmp_path), max_concurrent_per_node=2, grace_s=1.0
    )
    assert backend.slots.size == 2


def test_docker_defaults_are_written_once() -> None:
    options = DockerBackend().options
    assert options == DockerOptions()
    assert (options.max_concurrent_per_node, options.lock_dir) == (4, DEFAULT_LOCK_DIR)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_concurrent": 2}, "max_concurrent"),  # the old name: refused, not ignored
        ({"max_concurrent_per_node": 0}, "max_concurrent_per_node"),
        ({"slot_wait_s": "soon"}, "slot_wait_s"),
    ],
)
def test_docker_names_a_bad_option(options: dict[str, object], option: str) -> None:
    with pytest.raises(OptionError, match=option) as caught:
        DockerBackend(**options)
    assert caught.value.option == option


def test_an_empty_base_url_leaves_the_engine_to_the_docker_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert DockerBackend().base_url == "tcp://127.0.0.1:9"
    assert DockerBackend(base_url="unix:///run/other.sock").base_url == "unix:///run/other.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert DockerBackend().base_url == "unix:///var/run/docker.sock"


def test_a_broken_docker_environment_is_reported_when_the_engine_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", f"{tmp_path}/missing")
    backend = DockerBackend()  # building it needs no engine
    health = backend.health()
    assert not health.ok and "unreachable" in health.detail
