"""ChampionHolder: the pointer is re-read at most every TTL, in the background; a version is swapped
in only once loaded; a version that cannot load leaves the current one serving; rollback to the
version served before needs no load."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sml.predict.champion import ChampionHolder, ChampionSwitch


class FakeServed:
    def __init__(self, version: str) -> None:
        self.version = version


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Registry:
    """The pointer and a loader that blocks until the test lets it finish."""

    def __init__(self, pointer: str) -> None:
        self.pointer = pointer
        self.reads = 0
        self.loads: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.loading = threading.Event()
        self.broken: set[str] = set()
        self.unreachable = False

    def read_pointer(self) -> str:
        self.reads += 1
        if self.unreachable:
            raise ConnectionError("SSM unreachable")
        return self.pointer

    def load(self, version: str) -> Any:
        self.loads.append(version)
        self.loading.set()
        self.release.wait(10)
        if version in self.broken:
            raise RuntimeError(f"{version} cannot be unpickled")
        return FakeServed(version)


@pytest.fixture
def setup() -> tuple[ChampionHolder, Registry, Clock, list[ChampionSwitch], list[tuple[str | None, Exception]]]:
    registry, clock = Registry("v1"), Clock()
    switches: list[ChampionSwitch] = []
    failures: list[tuple[str | None, Exception]] = []
    holder = ChampionHolder(
        FakeServed("v1"),  # type: ignore[arg-type]
        read_pointer=registry.read_pointer,
        load=registry.load,
        ttl_seconds=60,
        on_switch=switches.append,
        on_failure=lambda version, error: failures.append((version, error)),
        clock=clock,
    )
    return holder, registry, clock, switches, failures


def test_the_pointer_is_not_read_before_the_ttl_has_passed(setup: Any) -> None:
    holder, registry, clock, _, _ = setup
    registry.pointer = "v2"
    clock.now = 59.9

    assert [holder.current().version for _ in range(100)] == ["v1"] * 100
    holder.wait_for_refresh()
    assert registry.reads == 0


def test_a_promotion_is_served_once_loaded_and_no_request_waits_for_the_load(setup: Any) -> None:
    holder, registry, clock, switches, _ = setup
    registry.pointer = "v2"
    registry.release.clear()  # the load of v2 hangs until released
    clock.now = 60

    answered_while_loading = [holder.current().version]  # starts the refresh
    # Before: read counted right away, while the refresher thread might not have read the pointer yet.
    assert registry.loading.wait(10)  # the refresher has read the pointer and is loading
    answered_while_loading += [holder.current().version for _ in range(49)]
    assert answered_while_loading == ["v1"] * 50
    assert registry.reads == 1  # one refresher, however many requests saw the TTL pass
    registry.release.set()
    holder.wait_for_refresh()

    assert holder.current().version == "v2"
    assert registry.loads == ["v2"]
    assert switches == [ChampionSwitch(previous="v1", current="v2", load_seconds=switches[0].load_seconds)]


def test_the_next_check_is_a_ttl_after_the_last_one(setup: Any) -> None:
    holder, registry, clock, _, _ = setup
    clock.now = 60
    holder.current()
    holder.wait_for_refresh()
    clock.now = 119
    holder.current()
    holder.wait_for_refresh()
    assert registry.reads == 1
    clock.now = 120
    holder.current()
    holder.wait_for_refresh()
    assert registry.reads == 2


def test_a_version_that_cannot_load_leaves_the_current_one_serving_and_is_retried_next_ttl(setup: Any) -> None:
    holder, registry, clock, switches, failures = setup
    registry.pointer = "v2"
    registry.broken.add("v2")
    clock.now = 60
    holder.current()
    holder.wait_for_refresh()

    assert holder.current().version == "v1"
    assert switches == [] and [(version, str(error)) for version, error in failures] == [("v2", "v2 cannot be unpickled")]

    registry.broken.clear()
    clock.now = 120
    holder.current()
    holder.wait_for_refresh()
    assert holder.current().version == "v2"


def test_a_pointer_that_cannot_be_read_is_reported_without_a_version(setup: Any) -> None:
    holder, registry, clock, _, failures = setup
    registry.unreachable = True
    clock.now = 60
    holder.current()
    holder.wait_for_refresh()

    assert holder.current().version == "v1"
    assert [(version, type(error)) for version, error in failures] == [(None, ConnectionError)]


def test_a_rollback_to_the_version_served_before_needs_no_load(setup: Any) -> None:
    holder, registry, clock, switches, _ = setup
    registry.pointer = "v2"
    holder.refresh_now()
    registry.pointer = "v1"
    holder.refresh_now()

    assert holder.current().version == "v1"
    assert registry.loads == ["v2"]
    assert [(switch.previous, switch.current, switch.load_seconds) for switch in switches][1] == ("v2", "v1", 0.0)
