"""The runtime catalogue's declarations hold together: names, images, tiers, programs."""

from __future__ import annotations

import re

import pytest

from executions import catalogue
from executions.catalogue import ENTRIES, IMAGES, image_chain

TIER_ONE = {"c-gcc12", "cpp17-gcc12", "cpp20-gcc12", "java-17", "javascript-node18", "go-1.19"}


def test_at_least_forty_entries_with_unique_names() -> None:
    names = [entry.name for entry in ENTRIES]
    assert len(names) >= 40
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name) for name in names)
    assert len({entry.display_name for entry in ENTRIES}) == len(names)


def test_tier_one_is_the_issue_s_languages() -> None:
    tier_one = {entry.name for entry in ENTRIES if entry.tier == 1}
    assert tier_one == TIER_ONE | {"rust-1.63", "python-3.11"}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_every_entry_is_complete(entry: catalogue.Entry) -> None:
    assert entry.image in IMAGES
    assert entry.command and entry.file_name and entry.hello and entry.self_test
    # The main file is what the commands name (a compiled entry names it when compiling).
    named = " ".join(entry.compile_command or entry.command)
    assert entry.file_name in named
    limits = entry.limits
    assert limits.time_limit_ms <= limits.max_time_limit_ms
    assert limits.memory_mb <= limits.max_memory_mb


def test_every_image_chain_starts_at_base_and_has_no_loop() -> None:
    for name in IMAGES:
        chain = image_chain(name)
        assert chain[0].name == "base" and chain[-1].name == name
        assert len({image.name for image in chain}) == len(chain)
    assert len({image.tag for image in IMAGES.values()}) == len(IMAGES)


def test_shared_toolchains_share_layers() -> None:
    # What keeps forty runtimes from costing forty systems: the big toolchains are parents.
    def parents(name: str) -> set[str]:
        return {image.name for image in image_chain(name)}

    assert {"gcc"} <= parents("fortran") & parents("ada") & parents("rust") & parents("haskell")
    assert "java" in parents("kotlin") & parents("scala") & parents("clojure")
    assert "node" in parents("typescript") & parents("coffeescript")
