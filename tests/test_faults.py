"""The fast part of the fault suite (``faults``, docs/faults.md) against real processes:
gunicorn and a qcluster of two workers on a PostgreSQL, a Redis and a Docker engine of their
own, struck by the faults CI runs. Each must keep the promise: nothing answered 2xx lost or
given a verdict its program does not earn, nothing duplicated or half-stored, no 5xx but a
503 with Retry-After, and every run terminal or running again within 60 s of its part coming
back. The Docker engine's restart and the 200-submission burst run in ``make faults`` only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faults import suite
from faults.parts import PartUnavailable
from faults.scenarios import CI_FAULTS, FAULTS, Outcome, Rig, run_fault
from tests.conftest import require_real

pytestmark = [pytest.mark.slow, pytest.mark.real_service]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    try:
        with suite.rig(tmp_path_factory.mktemp("faults")) as started:
            yield started
    except PartUnavailable as exc:
        require_real(exc.part, exc.reason)


def report(outcome: Outcome) -> str:
    return "\n".join([suite.table([outcome]), *suite.details([outcome])])


# What each fault must have done to the platform, beyond keeping the promise: a fault that
# missed its moment would keep it without testing anything.
STRUCK = {
    # The runs the killed cluster held were closed by the reaper and run again.
    "cluster-sigkill": lambda outcome: outcome.verdict.reruns >= 1,
    # The killed sandbox's run ended in error and ran again.
    "sandbox-killed": lambda outcome: outcome.verdict.reruns >= 1,
    # Redis came back empty: the tasks it held were sent again.
    "redis-restart": lambda outcome: outcome.verdict.resent >= 1,
    # Every submission stored in the end: what the restart refused, its retry stored.
    "postgres-restart": lambda outcome: (
        {answer.title for answer in outcome.answers if answer.stored}
        == {answer.title for answer in outcome.answers}
    ),
    # Stored while Redis was down, every one: none refused.
    "submit-redis-down": lambda outcome: all(answer.stored for answer in outcome.answers),
}


@pytest.mark.parametrize("name", CI_FAULTS)
def test_the_platform_keeps_its_promise_through(rig: Rig, name: str) -> None:
    fault = next(fault for fault in FAULTS if fault.name == name)
    outcome = run_fault(rig, fault)
    assert outcome.kept, report(outcome)
    assert STRUCK[name](outcome), report(outcome)
    assert outcome.answers and all(answer.status is not None for answer in outcome.answers)
