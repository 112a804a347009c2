"""Layers and image archives of executions.runtime_images, on the real engine where needed."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from executions import runtime_images
from executions.catalogue import IMAGES, Image
from executions.runtime_images import (
    Layer,
    _image_config,
    _strip_setid,
    _write_archive,
    _write_layer_tar,
    dockerfile,
    recipe_key,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes: root")


def test_recipe_key_covers_the_whole_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe_key("kotlin")
    assert recipe_key("kotlin") == before
    changed = Image("java", IMAGES["java"].tag, ("openjdk-17-jdk-headless", "something-else"))
    monkeypatch.setitem(IMAGES, "java", changed)
    assert recipe_key("kotlin") != before  # a parent's change is a new child layer
    assert recipe_key("python") == recipe_key("python")


@needs_root
def test_layer_tar_turns_overlay_whiteouts_into_image_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "upper"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o4755)  # noqa: S103  (setuid, for _strip_setid)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-again")
    os.symlink("tool", root / "usr/bin/alias")
    os.mknod(root / "usr/bin/gone", 0o600 | 0o020000, os.makedev(0, 0))  # a deletion
    (root / "etc/fresh").mkdir(parents=True)
    os.setxattr(root / "etc/fresh", "trusted.overlay.opaque", b"y")
    _strip_setid(root)
    diff_id = _write_layer_tar(root, tmp_path / "layer.tar")
    assert diff_id.startswith("sha256:") and len(diff_id) == 71
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert members["usr/bin/.wh.gone"].isreg() and members["usr/bin/.wh.gone"].size == 0
    assert "usr/bin/gone" not in members
    assert "etc/fresh/.wh..wh..opq" in members
    assert members["usr/bin/alias"].issym()
    assert members["usr/bin/tool-again"].islnk() or members["usr/bin/tool"].islnk()
    assert members["usr/bin"].isdir()
    tool = (
        members["usr/bin/tool"]
        if members["usr/bin/tool"].isreg()
        else members["usr/bin/tool-again"]
    )
    assert tool.mode == 0o755  # no setuid bit reaches an image


def test_dockerfile_builds_on_the_parent_and_drops_root() -> None:
    text = dockerfile(IMAGES["kotlin"], "k1")
    assert text.startswith(f"FROM {IMAGES['java'].tag}\n")
    assert "apt-get install -y --no-install-recommends kotlin" in text
    assert "chmod a-s" in text and text.rstrip().splitlines()[-2] == "USER 65534:65534"
    assert 'evalplatform.recipe="k1"' in text
    assert dockerfile(IMAGES["base"], "b").startswith("FROM debian:bookworm-slim\n")


@pytest.mark.real_service
@needs_root
def test_an_archive_of_layers_loads_and_applies_whiteouts(
    tmp_path: Path, require_docker: dict[str, Any]
) -> None:
    """Two layers on the real engine: the base's, then one that deletes and adds a file."""
    from sandbox.docker import DockerBackend

    backend = DockerBackend(**require_docker)
    runtime_images.ensure_images(["base"], backend=backend, log=lambda line: None)
    cache = runtime_images._LayerCache(
        runtime_images.default_cache_dir() / "layers", lambda line: None
    )
    base = cache.ensure(IMAGES["base"])
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/added").write_text("from the upper layer\n")
    os.mknod(upper / "etc/debian_version", 0o600 | 0o020000, os.makedev(0, 0))
    diff_id = _write_layer_tar(upper, tmp_path / "layer.tar")
    top = Layer("probe", upper, tmp_path / "layer.tar", diff_id, 0)
    image = Image("probe", "evalplatform-test/layers:probe", ())
    config = _image_config(IMAGES["base"], "probe-key", [base.diff_id, diff_id])
    _write_archive(tmp_path / "image.tar", image.tag, config, [base, top])
    backend.load_image_archive(str(tmp_path / "image.tar"))
    try:
        listing = subprocess.run(
            ["docker", "run", "--rm", image.tag, "sh", "-c", "cat /etc/added; ls /etc; id -u"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "from the upper layer" in listing
        assert "debian_version" not in listing  # the whiteout hid the base's file
        assert "passwd" in listing  # the base's other files are there
        assert listing.split()[-1] == "65534"
        labels = backend.image_labels(image.tag)
        assert labels is not None and labels["evalplatform.recipe"] == "probe-key"
    finally:
        subprocess.run(["docker", "rmi", "-f", image.tag], capture_output=True, check=False)


def test_prune_keeps_current_layers_and_removes_the_others(tmp_path: Path) -> None:
    layers = tmp_path / "layers"
    current = layers / f"gcc-{recipe_key('gcc')}"
    stale = layers / "gcc-0123456789abcdef"
    unfinished = layers / "gcc-x1y2z3"
    for path in (current, stale, unfinished):
        (path / "root").mkdir(parents=True)
    pruned = runtime_images.prune_layers(tmp_path)
    assert pruned == [stale, unfinished]
    assert current.is_dir() and not stale.exists() and not unfinished.exists()


@pytest.mark.real_service
def test_the_generated_dockerfile_builds_a_layer_on_its_parent(
    require_docker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online path, for real, on the offline base (only the base needs a registry)."""
    from sandbox.docker import DockerBackend

    backend = DockerBackend(**require_docker)
    runtime_images.ensure_images(["base"], backend=backend, log=lambda line: None)
    probe = Image("probe", "evalplatform-test/online:probe", ("bc",), env=(("PROBE", "1"),))
    monkeypatch.setitem(IMAGES, "probe", probe)
    try:
        (outcome,) = runtime_images.ensure_images(
            ["probe"], mode="online", backend=backend, log=lambda line: None
        )
        assert (outcome.action, outcome.method) == ("built", "dockerfile")
        labels = backend.image_labels(probe.tag)
        assert labels is not None and labels["evalplatform.recipe"] == recipe_key("probe")
        said = subprocess.run(
            ["docker", "run", "--rm", probe.tag, "sh", "-c", 'echo "6*7" | bc; id -u; echo $PROBE'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert said == ["42", "65534", "1"]
        setuid = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                probe.tag,
                "find",
                "/",
                "-xdev",
                "-perm",
                "/6000",
                "-type",
                "f",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert setuid == ""
        # Current now: a second build changes nothing.
        (again,) = runtime_images.ensure_images(
            ["probe"], mode="online", backend=backend, log=lambda line: None
        )
        assert again.action == "exists"
    finally:
        subprocess.run(["docker", "rmi", "-f", probe.tag], capture_output=True, check=False)
