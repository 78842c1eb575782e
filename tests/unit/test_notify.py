"""Notifications: which journal entries notify, the payload per target kind, de-duplication and
the rate limit (times passed in), the notify config and its errors, and that no secret leaks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from tests.integration.harness import free_port
from tests.unit.test_gpu_supervisor import fleet, reading
from watchdog.config import Config, ConfigError, NotifyConfig, NotifyTarget, parse_config
from watchdog.gpu.readings import NvmlState
from watchdog.journal import Journal
from watchdog.model import FaultKind, Verdict
from watchdog.ops.notices import (
    DISCORD_LIMIT,
    NOTIFY_EVENTS,
    SLACK_COLOURS,
    Gate,
    Notice,
    message_text,
    notice_from_entry,
    payload,
)
from watchdog.ops.notify import HttpSender, NotificationDispatcher, SendFailed
from watchdog.subsystem import CycleView

SECRET = "T0KEN-s3cr3t-9f8e7d"


def entry(kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": 1, "ts": 1000.0, "kind": kind, "reason": "why", **fields}


def notice(event: str = "fault", container: str | None = "llm-0", ts: float = 1000.0) -> Notice:
    return Notice(event, f"{event.upper()} {container}", "text", "warning", ts, "host-a", container)


# -- which entries notify ---------------------------------------------------------


@pytest.mark.parametrize(
    ("journal_entry", "event", "title_has"),
    [
        (entry("detected", container="llm-0", fault=FaultKind.STOPPED.value), "fault", "llm-0: stopped"),
        (entry("recovered", container="llm-0", fault="stopped", duration=4.25), "recovered", "after 4.2 s"),
        (entry(Verdict.GIVE_UP.value, container="llm-0", fault="stopped"), "given-up", "GAVE UP on llm-0"),
        (entry("gpu-quarantined", gpu="GPU-1", fault="gpu-lost"), "gpu-quarantined", "GPU GPU-1 quarantined"),
        (entry("gpu-drained", gpu="GPU-1", fault="xid-48"), "gpu-quarantined", "GPU GPU-1 drained"),
        (entry("gpu-resetting", gpu="GPU-1", fault="xid-48"), "gpu-quarantined", "GPU GPU-1 resetting"),
        (entry("alert", gpu="GPU-1", fault="gpu-reset"), "gpu-quarantined", "reset failed"),
        (entry("alert", fault="driver-hung"), "driver-hung", "driver hung"),
        (entry("alert", gpu="GPU-1", fault="xid-74"), "gpu-alert", "GPU ALERT GPU-1"),
        (entry("alert", gpu="GPU-1", fault="predicted-maintenance"), "gpu-alert", "GPU GPU-1: schedule maintenance"),
        (entry("gpu-reset-ok", gpu="GPU-1"), "gpu-recovered", "back in service"),
        (entry("gpu-proven", gpu="GPU-1"), "gpu-recovered", "proven: back in rotation"),
        (entry("driver-recovered"), "driver-recovered", "answers again"),
        (entry("cluster-down"), "cluster-down", "fleet view unreachable"),
        (entry("cluster-up"), "cluster-recovered", "reachable again"),
        (entry("alert", fault="host-silent", detail={"host": "gpu-b"}), "host-silent", "HOST SILENT gpu-b"),
        (entry("host-back", detail={"host": "gpu-b"}), "host-back", "host gpu-b publishes again"),
    ],
)
def test_state_transitions_notify(journal_entry: dict[str, Any], event: str, title_has: str) -> None:
    result = notice_from_entry(journal_entry, "host-a")
    assert result is not None and result.event == event and event in NOTIFY_EVENTS
    assert title_has in result.title
    assert result.host == "host-a" and result.ts == 1000.0


def test_a_notice_carries_the_subject_and_the_fix() -> None:
    given_up = notice_from_entry(entry("give-up", container="llm-3", fault="stopped"), "h")
    assert given_up is not None and given_up.container == "llm-3" and "`gpu-watchdog reset llm-3`" in given_up.text
    marked = notice_from_entry(entry("gpu-drained", gpu="GPU-7"), "h")
    assert marked is not None and marked.gpu == "GPU-7" and "gpu-watchdog gpu release GPU-7" in marked.text
    assert marked.subject == "GPU-7" and notice(container=None).subject == "host-a"


@pytest.mark.parametrize(
    "kind",
    [
        "restart-call",
        "restart-recovered",
        "restart-timed-out",
        "restart-failed",
        Verdict.GIVEN_UP.value,  # the breaker tripped earlier: said once, with give-up
        Verdict.BACKOFF.value,
        Verdict.DEFER.value,
        Verdict.HELD.value,
        "dry-run",
        "cleared",
        "manual-stop",
        "reset",
        "daemon-start",
        "daemon-stop",
        "reconciled",
        "xid",
        "orphan",
        "gpu-reset",
        "gpu-error",
        "gpu-released",
        "engine-down",
        "engine-up",
        "rotation-in",
        "rotation-out",
        "router-config",
        "capacity",
        "proxy-down",
        "",
    ],
)
def test_routine_entries_do_not_notify(kind: str) -> None:
    assert notice_from_entry(entry(kind, container="llm-0", fault="stopped"), "h") is None


def test_the_alert_that_goes_with_a_mark_is_not_said_twice() -> None:
    assert notice_from_entry(entry("alert", gpu="GPU-1", fault="xid-79", detail={"marked": "quarantined"}), "h") is None


def queued(notifier: NotificationDispatcher) -> list[Notice]:
    out = []
    while not notifier.queue.empty():
        item = notifier.queue.get_nowait()
        assert item is not None
        out.append(item)
    return out


def test_the_gpu_supervisor_entries_give_one_notice_per_transition(supervisor: Any) -> None:
    """The real GPU side writes the journal; the notifier (worker not started) sees what it would send."""
    webhooks = NotificationDispatcher(NotifyConfig(host="h"), senders={})
    supervisor.journal.subscribe(webhooks.observe)
    supervisor.monitor.reading = reading(lost=(2,))
    for now in (101.0, 102.0):
        supervisor.cycle(CycleView(tuple(fleet())), now=now)
    supervisor.monitor.reading = reading(NvmlState.HUNG)
    supervisor.cycle(CycleView(tuple(fleet())), now=103.0)
    supervisor.cycle(CycleView(tuple(fleet())), now=104.0)
    supervisor.monitor.reading = reading(lost=(2,))
    supervisor.cycle(CycleView(tuple(fleet())), now=105.0)
    events = [(n.event, n.gpu) for n in queued(webhooks)]
    assert events == [
        ("gpu-quarantined", "GPU-storm-2"),  # the mark and its alert: one notice
        ("driver-hung", None),
        ("driver-recovered", None),
    ]
    assert len(supervisor.journal.entries(kind="alert")) == 2, "the journal still has both alerts"


# -- the journal's observers ----------------------------------------------------


def test_the_journal_tells_its_observers_after_a_write(tmp_path: Path) -> None:
    journal = Journal.in_dir(tmp_path)
    seen: list[dict[str, Any]] = []

    def broken(_entry: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    journal.subscribe(broken)
    journal.subscribe(seen.append)
    journal.record("detected", "it died", ts=5.0, container="llm-0", gpus=("0", "1"), fault="stopped", detail={"a": 1})
    journal.unsubscribe(seen.append)
    journal.record("recovered", "back", ts=6.0, container="llm-0")
    assert len(seen) == 1
    stored = journal.entries()[0]
    assert seen[0] == stored, "the observer gets the fields entries() returns"
    assert seen[0]["gpu"] == "0,1" and seen[0]["detail"] == {"a": 1}
    assert len(journal.entries()) == 2, "an observer that raises does not stop the write"
    journal.close()


# -- payloads ---------------------------------------------------------------------


def test_the_generic_webhook_puts_the_text_under_its_key_with_the_fields() -> None:
    fault = notice_from_entry(entry("detected", container="llm-0", gpu="0", fault="stopped"), "host-a")
    assert fault is not None
    body = payload("webhook", fault)
    assert body["text"] == "[host-a] FAULT llm-0: stopped: why"
    assert {k: body[k] for k in ("event", "container", "gpu", "fault", "ts", "host")} == {
        "event": "fault",
        "container": "llm-0",
        "gpu": "0",
        "fault": "stopped",
        "ts": 1000.0,
        "host": "host-a",
    }
    custom = payload("webhook", fault, suppressed=2, key="message")
    assert "text" not in custom and custom["message"].endswith("(+2 suppressed)") and custom["suppressed"] == 2
    json.dumps(custom)  # serialisable as is


def test_slack_gets_text_and_a_coloured_attachment() -> None:
    given_up = notice_from_entry(entry("give-up", container="llm-0", fault="stopped"), "host-a")
    recovered = notice_from_entry(entry("recovered", container="llm-0", fault="stopped"), "host-a")
    assert given_up is not None and recovered is not None
    body = payload("slack", given_up)
    assert body["text"].startswith("[host-a] GAVE UP on llm-0")
    attachment = body["attachments"][0]
    assert attachment["color"] == SLACK_COLOURS["critical"] != payload("slack", recovered)["attachments"][0]["color"]
    assert {"title": "container", "value": "llm-0", "short": True} in attachment["fields"]


def test_discord_content_is_capped_at_2000_characters() -> None:
    long = notice_from_entry(entry("detected", container="llm-0", fault="stopped", reason="x" * 5000), "h")
    assert long is not None
    body = payload("discord", long)
    assert set(body) == {"content", "username"} and body["username"] == "gpu-watchdog"
    assert len(body["content"]) == DISCORD_LIMIT and body["content"].endswith("…")
    assert len(payload("discord", notice())["content"]) < DISCORD_LIMIT


def test_apprise_gets_title_body_and_type() -> None:
    body = payload("apprise", notice(), suppressed=1)
    assert body == {"title": "[host-a] FAULT llm-0", "body": "text (+1 suppressed)", "type": "warning"}
    with pytest.raises(ValueError, match="unknown notify kind"):
        payload("pager", notice())


# -- de-duplication and the rate limit ---------------------------------------------


def test_the_same_event_about_the_same_subject_is_sent_once_per_window() -> None:
    gate = Gate(dedup_window=300, per_minute=100)
    assert gate.admit(notice("fault", "llm-0"), 0.0) == (True, 0)
    assert gate.admit(notice("fault", "llm-0"), 299.0) == (False, 0)
    assert gate.admit(notice("recovered", "llm-0"), 299.0) == (True, 1), "another event, with the count held back"
    assert gate.admit(notice("fault", "llm-1"), 299.0) == (True, 0), "another container"
    assert gate.admit(notice("fault", "llm-0"), 300.0) == (True, 0), "the same again after the window"
    off = Gate(dedup_window=0, per_minute=100)
    assert off.admit(notice(), 0.0) == off.admit(notice(), 0.0) == (True, 0), "a window of 0 turns it off"


def test_the_rate_limit_counts_the_last_minute_and_reports_what_it_held_back() -> None:
    gate = Gate(dedup_window=0, per_minute=3)
    sent = [gate.admit(notice("fault", f"llm-{i}"), float(i)) for i in range(6)]
    assert [ok for ok, _ in sent] == [True, True, True, False, False, False]
    assert gate.admit(notice("fault", "llm-9"), 59.9) == (False, 0)
    assert gate.admit(notice("fault", "llm-9"), 60.0) == (True, 4), "the first send left the window"


class Recorder:
    """A sender that keeps what it would send (the HTTP side is tested against a real receiver)."""

    def __init__(self, target: NotifyTarget, fail: bool = False) -> None:
        self.target = target
        self.fail = fail
        self.sent: list[str] = []

    def send(self, item: Notice, suppressed: int) -> None:
        if self.fail:
            raise SendFailed("HTTP 500")
        self.sent.append(message_text(item, suppressed))

    def close(self) -> None:
        pass


def target(name: str, events: tuple[str, ...] = NOTIFY_EVENTS, url: str = "http://127.0.0.1:1/x") -> NotifyTarget:
    return NotifyTarget(name, "webhook", url, None, events)


def test_the_notifier_filters_per_target_and_says_what_was_suppressed() -> None:
    now = [0.0]
    ops, pager, broken = target("ops"), target("pager", ("given-up",)), target("broken")
    config = NotifyConfig((ops, pager, broken), dedup_window=300, rate_limit_per_minute=2)
    senders = {"ops": Recorder(ops), "pager": Recorder(pager), "broken": Recorder(broken, fail=True)}
    outcomes: list[tuple[str, str]] = []
    webhooks = NotificationDispatcher(
        config, senders, clock=lambda: now[0], on_outcome=lambda t, o: outcomes.append((t, o))
    )
    for name in ("llm-0", "llm-0", "llm-1", "llm-2"):
        webhooks.deliver(notice("fault", name))
    now[0] = 61.0
    webhooks.deliver(notice("given-up", "llm-2"))
    assert senders["ops"].sent == [
        "[host-a] FAULT llm-0: text",
        "[host-a] FAULT llm-1: text (+1 suppressed)",  # the duplicate about llm-0
        "[host-a] GIVEN-UP llm-2: text (+1 suppressed)",  # llm-2's fault, over the rate limit
    ]
    assert senders["pager"].sent == ["[host-a] GIVEN-UP llm-2: text"], "pager takes given-up only"
    counts = dict(webhooks.counts)
    assert counts[("ops", "sent")] == 3 and counts[("ops", "suppressed")] == 2
    assert counts[("broken", "failed")] == 3 and ("pager", "suppressed") not in counts
    assert outcomes.count(("ops", "sent")) == 3, "each outcome reaches the metrics callback"


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    ops = target("ops")
    webhooks = NotificationDispatcher(NotifyConfig((ops,)), {"ops": Recorder(ops)}, queue_size=2)  # worker not started
    assert [webhooks.submit(notice("fault", f"c{i}")) for i in range(4)] == [True, True, False, False]
    assert webhooks.dropped == 2 and webhooks.counts[("ops", "dropped")] == 2
    webhooks.observe({"kind": "detected", "ts": "not a number"})  # a bad entry: logged, never raised
    webhooks.observe({"kind": "restart-call", "ts": 1.0})
    assert webhooks.queue.qsize() == 2


def test_the_worker_sends_what_is_queued_and_stop_flushes() -> None:
    ops = target("ops")
    recorder = Recorder(ops)
    webhooks = NotificationDispatcher(NotifyConfig((ops,), dedup_window=0), {"ops": recorder}).start()
    for i in range(5):
        webhooks.submit(notice("fault", f"c{i}"))
    webhooks.stop(deadline=5)
    assert len(recorder.sent) == 5
    assert webhooks.submit(notice()) is False, "nothing is queued after stop"


# -- secrets --------------------------------------------------------------------------


def test_a_target_never_shows_its_url_or_headers() -> None:
    config = parse_config(
        {
            "notify": {
                "targets": [
                    {"name": "ops", "kind": "slack", "url_env": "HOOK", "headers": {"X-Token": SECRET + "-h"}},
                    {"name": "raw", "kind": "webhook", "url": f"http://127.0.0.1:9/{SECRET}"},
                ]
            }
        },
        env={"HOOK": f"https://hooks.invalid/services/{SECRET}"},
    )
    ops, raw = config.notify.targets
    assert ops.url.endswith(SECRET) and dict(ops.headers) == {"X-Token": SECRET + "-h"}
    for text in (repr(config), str(config.notify), ops.describe(), raw.describe(), repr(raw)):
        assert SECRET not in text
    assert ops.describe() == "ops (slack, url from $HOOK)" and raw.describe() == "raw (webhook, url in the config file)"


def test_a_failed_send_is_said_without_the_url() -> None:
    port = free_port()  # nothing listens: connection refused, for real
    hook = NotifyTarget("ops", "webhook", f"http://127.0.0.1:{port}/hooks/{SECRET}", None)
    sender = HttpSender(hook, timeout=2, retries=0, stopping=threading.Event())
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + json.dumps(m.record["extra"])), level="DEBUG")
    try:
        with pytest.raises(SendFailed) as failed:
            sender.send(notice(), 0)
        webhooks = NotificationDispatcher(NotifyConfig((hook,)), {"ops": sender})
        webhooks.deliver(notice())
    finally:
        logger.remove(sink)
        sender.close()
    assert str(failed.value) == "connection failed (ConnectError)"
    assert failed.value.__cause__ is None and failed.value.__context__ is None, "no httpx exception chained"
    assert any("to ops (webhook) failed: connection failed" in line for line in lines), lines
    assert lines and not any(SECRET in line or str(port) in line for line in lines)


# -- config ---------------------------------------------------------------------------


def test_notify_defaults_and_a_full_section() -> None:
    assert Config().notify == NotifyConfig()
    assert (NotifyConfig().dedup_window, NotifyConfig().rate_limit_per_minute) == (300.0, 10)
    assert (NotifyConfig().timeout, NotifyConfig().retries, NotifyConfig().targets) == (5.0, 1, ())
    config = parse_config(
        {
            "notify": {
                "dedup_window": "10m",
                "rate_limit_per_minute": 4,
                "timeout": "2s",
                "retries": 0,
                "host": "gpu-host-7",
                "targets": [
                    {
                        "name": "ops-slack",
                        "kind": "slack",
                        "url_env": "SLACK_WEBHOOK_URL",
                        "events": ["given-up", "fault"],
                    },
                    {"name": "pager", "kind": "webhook", "url": "http://127.0.0.1:9000/hook", "key": "message"},
                    {"name": "chat", "kind": "discord", "url": "https://discord.invalid/api/webhooks/1/x"},
                    {
                        "name": "h",
                        "kind": "webhook",
                        "url": "http://x.invalid",
                        "headers_env": {"Authorization": "AUTH"},
                    },
                ],
            }
        },
        env={"SLACK_WEBHOOK_URL": " https://hooks.invalid/x ", "AUTH": "Bearer abc"},
    ).notify
    assert (config.dedup_window, config.rate_limit_per_minute, config.timeout, config.retries) == (600.0, 4, 2.0, 0)
    slack, pager, chat, with_header = config.targets
    assert slack.url == "https://hooks.invalid/x" and slack.url_env == "SLACK_WEBHOOK_URL"
    assert slack.events == ("fault", "given-up") and pager.events == NOTIFY_EVENTS and pager.key == "message"
    assert chat.kind == "discord" and dict(with_header.headers) == {"Authorization": "Bearer abc"}
    assert config.host == "gpu-host-7"
    assert parse_config({"notify": None}).notify == NotifyConfig()


def one_target(**fields: Any) -> dict[str, Any]:
    return {"notify": {"targets": [{"name": "ops", **fields}]}}


@pytest.mark.parametrize(
    ("data", "env", "message"),
    [
        (
            one_target(kind="slack", url_env="SLACK_WEBHOOK_URL"),
            {},
            "notify.targets[0] (ops).url_env: environment variable SLACK_WEBHOOK_URL is not set",
        ),
        (one_target(kind="pager", url="http://x.invalid"), {}, "(ops).kind='pager': must be one of webhook, slack"),
        (one_target(kind="slack"), {}, "url_env: NAME (the variable holding the webhook URL) or url: is required"),
        (one_target(kind="slack", url="http://a.invalid", url_env="X"), {"X": "http://b"}, "both url and url_env"),
        (one_target(kind="slack", url=f"ftp://{SECRET}"), {}, "must be an http:// or https:// URL"),
        (one_target(kind="slack", url_env="X"), {"X": f"hooks/{SECRET}"}, "the value of $X must be an http://"),
        (one_target(kind="slack", url="http://a.invalid", events=["faults"]), {}, "(did you mean 'fault'?)"),
        (one_target(kind="slack", url="http://a.invalid", events=[]), {}, "must be a list of events"),
        (one_target(kind="slack", url="http://a.invalid", key="msg"), {}, "only webhook targets take a key"),
        (one_target(kind="webhook", url="http://a.invalid", key="event"), {}, "none of event, title"),
        (one_target(kind="webhook", url="http://a.invalid", header={"a": "b"}), {}, "(did you mean 'headers'?)"),
        (
            one_target(kind="webhook", url="http://a.invalid", headers_env={"X-Token": "TOKEN"}),
            {},
            "headers_env.X-Token: environment variable TOKEN is not set",
        ),
        (
            one_target(kind="webhook", url="http://a.invalid", headers={"X-Token": ["not", "text"]}),
            {},
            "headers.X-Token: must be a one-line string",
        ),
        ({"notify": {"targets": [{"kind": "slack", "url": "http://a.invalid"}]}}, {}, "each target needs a name"),
        (
            {"notify": {"targets": [{"name": "a", "kind": "slack", "url": "http://x.invalid"}] * 2}},
            {},
            "target name 'a' is used twice",
        ),
        ({"notify": {"targets": {"name": "a"}}}, {}, "notify.targets must be a list of targets"),
        ({"notify": {"rate_limit_per_minute": 0}}, {}, "notify.rate_limit_per_minute=0: must be a whole number >= 1"),
        ({"notify": {"dedup_window": "5 minutes"}}, {}, "notify.dedup_window='5 minutes'"),
        ({"notify": {"timeout": "2m"}}, {}, "notify.timeout='2m': must be at most 60 s"),
        ({"notify": {"retry": 2}}, {}, "unknown key 'notify.retry' (did you mean 'retries'?)"),
    ],
)
def test_bad_notify_config_is_one_line_naming_the_key(data: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, env=env)
    text = str(error.value)
    assert message in text and "\n" not in text and text.startswith("config: ")
    assert SECRET not in text, "a URL is never echoed back"


def test_an_apprise_target_without_the_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if not installed: it cannot be imported
    with pytest.raises(ConfigError) as error:
        parse_config(one_target(kind="apprise", url="json://127.0.0.1:9/x"))
    text = str(error.value)
    assert "notify.targets[0] (ops)" in text and "pip install apprise" in text and "\n" not in text
    with pytest.raises(ConfigError, match="apprise targets take headers in their URL"):
        parse_config(one_target(kind="apprise", url="json://h/x", headers={"a": "b"}))
    monkeypatch.undo()
    assert parse_config(one_target(kind="apprise", url="json://h/x")).notify.targets[0].kind == "apprise"


def test_commands_that_send_nothing_do_not_need_the_secrets() -> None:
    data = one_target(kind="slack", url_env="UNSET_HOOK", headers_env={"X-Token": "UNSET_TOKEN"})
    lenient = parse_config(data, env={}, secrets=False).notify.targets[0]
    assert lenient.url == "" and lenient.headers == ()
    with pytest.raises(ConfigError):
        parse_config(data, env={})


def cli(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_notify_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    none = cli(tmp_path, {}, "notify", "--test")
    assert none.returncode == 2 and "no notify targets configured" in none.stderr
    config = one_target(kind="webhook", url=f"http://127.0.0.1:9/{SECRET}")
    unknown = cli(tmp_path, config, "notify", "--test", "--target", "pagr")
    assert unknown.returncode == 2 and "no notify target named 'pagr'; configured: ops" in unknown.stderr
    unset = cli(tmp_path, one_target(kind="slack", url_env="UNSET_HOOK"), "notify", "--test")
    assert unset.returncode == 2 and "UNSET_HOOK is not set" in unset.stderr
    status = cli(
        tmp_path, {**one_target(kind="slack", url_env="UNSET_HOOK"), "state_dir": str(tmp_path)}, "healthcheck"
    )
    assert status.returncode == 1 and "no cycle" in status.stderr, "a command that sends nothing needs no secret"
    listed = cli(tmp_path, config, "notify")
    assert listed.returncode == 0 and listed.stdout.startswith("ops (webhook, url in the config file): events fault")
    assert SECRET not in listed.stdout + unknown.stderr
