"""The Docker runner's node-wide concurrency slots (``sandbox.docker.slots``). No engine needed."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.docker.slots import SlotPool, SlotsBusy


def test_slot_pool_is_exclusive(tmp_path: Any) -> None:
    pool = SlotPool(str(tmp_path), 2)
    with pool.acquire(0) as first, pool.acquire(0) as second:
        assert {first, second} == {0, 1}
        with pytest.raises(SlotsBusy), pool.acquire(0.1):
            pass
    with pool.acquire(0):
        pass
