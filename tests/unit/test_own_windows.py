"""The watchdog's own actions: engine events inside their time window are not an operator's."""

from __future__ import annotations

from watchdog.containers.own_actions import OWN_EVENT_SLACK, OwnActionWindows


def test_events_during_an_open_restart_are_our_own() -> None:
    own = OwnActionWindows()
    own.open("c1", 100.0)
    assert own.covers("c1", 100.2)
    assert own.covers("c1", 10_000.0)  # still open: the call has not returned
    assert not own.covers("c1", 99.0)  # before we acted
    assert not own.covers("c2", 100.2)  # another container


def test_a_closed_window_keeps_a_short_slack_then_ends() -> None:
    own = OwnActionWindows()
    own.open("c1", 100.0)
    own.close("c1", 100.0, 104.0)
    assert own.covers("c1", 104.0 + OWN_EVENT_SLACK - 0.01)
    assert not own.covers("c1", 104.0 + OWN_EVENT_SLACK + 0.01)
    # The slack is one second (own_actions.py): an event 0.99 s after the restart returned is ours, 1.01 s is not.
    assert OWN_EVENT_SLACK == 1.0
    assert own.covers("c1", 104.99)
    assert not own.covers("c1", 105.01)


def test_close_also_closes_windows_left_open_by_a_killed_watchdog() -> None:
    own = OwnActionWindows()
    own.open("c1", 50.0)  # from the journal: unfinished when the old watchdog died
    own.open("c1", 100.0)
    own.close("c1", 100.0, 101.0)
    assert not own.covers("c1", 200.0)


def test_prune_drops_only_closed_windows_older_than_the_horizon() -> None:
    own = OwnActionWindows()
    own.open("old", 10.0, 20.0)
    own.open("open", 10.0)
    own.open("recent", 900.0, 950.0)
    own.prune(horizon=500.0)
    assert not own.covers("old", 15.0)
    assert own.covers("open", 15.0)
    assert own.covers("recent", 920.0)


def test_what_the_container_does_after_our_restarts_start_event_is_its_own() -> None:
    own = OwnActionWindows()
    own.open("c1", 100.0)
    assert own.covers("c1", 100.1)  # kill, die, stop of the restart
    own.saw_start("c1", 100.4)  # the restart's start event
    assert own.covers("c1", 100.4)
    assert not own.covers("c1", 100.7)  # it died again 0.3 s later: not ours, a failure to count
    own.close("c1", 100.0, 100.5)
    assert not own.covers("c1", 101.0)
    own.open("c1", 200.0)  # the next restart has a window of its own
    assert own.covers("c1", 200.2)
