"""Command line: `gpu-watchdog --daemon`, `run --once`, `status`, `reset NAME`.

Exit codes: 0 ok, 1 runtime failure (engine unreachable, lock held), 2 usage
or configuration error. Every error is one line naming the culprit and the fix.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import click
import docker
from loguru import logger

from watchdog import __version__
from watchdog.config import Config, ConfigError, NotifyConfig, load_config
from watchdog.containers.engine import ENGINE_ERRORS, DockerProbe, EngineUnavailable
from watchdog.daemon.lock import InstanceLock, LockHeld
from watchdog.daemon.loop import CycleResult, Watchdog
from watchdog.entries import EntryKind
from watchdog.journal import Journal
from watchdog.logs import configure
from watchdog.ops.notify import Notifier as Webhooks
from watchdog.ops.operator_actions import NotFound, release_gpu, reset_container
from watchdog.ops.status import build_status, render_table
from watchdog.ops.systemd import Notifier

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
SENDING_COMMANDS = ("run", "notify")  # they need the notify targets' secrets (url_env, headers_env)
RESET_ERRORS: tuple[type[BaseException], ...] = (EngineUnavailable, *ENGINE_ERRORS)


@dataclass
class Context:
    config_path: str | None
    config: Config


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"gpu-watchdog: {message}", err=True)
    sys.exit(code)


def docker_client() -> docker.DockerClient:
    """The engine the usual way (DOCKER_HOST, else the default socket); API version negotiated."""
    return docker.from_env(timeout=30)


def open_journal(config: Config) -> Journal:
    state_dir = config.resolved_state_dir()
    try:
        return Journal.in_dir(state_dir)
    except (OSError, Exception) as exc:  # sqlite3.Error or a permission problem
        fail(f"cannot open the journal in {state_dir}: {exc}; set state_dir or GPU_WATCHDOG_STATE_DIR", EXIT_RUNTIME)


def _daemon_journal(config: Config) -> Journal:
    """The daemon heals even when its journal cannot be opened (full or read-only disk): in memory, said loudly."""
    state_dir = config.resolved_state_dir()
    try:
        return Journal.in_dir(state_dir)
    except Exception as exc:  # sqlite3.Error or OSError: the disk, not the fleet
        logger.critical(
            "cannot open the journal in {} ({}): healing WITHOUT a persistent record (kept in memory, lost at exit);"
            " free space or fix the disk, then restart gpu-watchdog",
            state_dir,
            exc,
        )
        return Journal.in_dir(state_dir, in_memory=True)


def _load(config_path: str | None, overrides: dict[str, Any], secrets: bool = True) -> Config:
    try:
        config = load_config(config_path, secrets=secrets)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="GPU_WATCHDOG_CONFIG",
    help="YAML config file (env GPU_WATCHDOG_CONFIG).",
)
@click.option("--daemon", is_flag=True, help="Run the healing loop until SIGTERM/SIGINT (SIGHUP reloads the config).")
@click.option(
    "--dry-run", is_flag=True, default=None, help="Detect and decide, but change nothing; log what would be done."
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Where the journal lives (env GPU_WATCHDOG_STATE_DIR)."
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), default=None
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="/metrics, /healthz, /status (default 127.0.0.1:9108; off).",
)
@click.version_option(__version__, prog_name="gpu-watchdog")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    daemon: bool,
    dry_run: bool | None,
    state_dir: str | None,
    log_level: str | None,
    log_format: str | None,
    http: str | None,
) -> None:
    """Heal a Docker fleet of GPU inference containers that opted in with the label gpu-watchdog.enable=true."""
    overrides = {
        "dry_run": dry_run,
        "state_dir": state_dir,
        "log_level": log_level.upper() if log_level else None,
        "log_format": log_format,
        "http": _http_option(http),
    }
    # Notify secrets (url_env) must be set for the commands that send; `status` and the like work without.
    config = _load(config_path, overrides, secrets=daemon or ctx.invoked_subcommand in SENDING_COMMANDS)
    configure(config.log_level, config.log_format)
    ctx.obj = Context(config_path, config)
    ctx.meta["overrides"] = overrides
    if daemon:
        if ctx.invoked_subcommand is not None:
            fail("--daemon runs the loop; do not combine it with a subcommand", EXIT_USAGE)
        sys.exit(run_daemon(ctx.obj, overrides))
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("run")
@click.option("--once", is_flag=True, help="Run one cycle, wait for the restarts it issues, and exit.")
@click.pass_obj
def run_command(obj: Context, once: bool) -> None:
    """Run the healing loop (same as --daemon), or a single cycle with --once."""
    overrides = click.get_current_context().parent.meta["overrides"]  # type: ignore[union-attr]
    sys.exit(run_once(obj.config) if once else run_daemon(obj, overrides))


def _http_option(value: str | None) -> str | None:
    from watchdog.config import parse_listen

    if value is None:
        return None
    try:
        parse_listen(value)
    except ValueError as exc:
        fail(f"--http {exc}", EXIT_USAGE)
    return value


def _fleet_snapshot(config: Config) -> list[Any]:
    """The labelled containers now, through a client of its own (closed after)."""
    client = docker_client()
    try:
        return DockerProbe(client, config.label_prefix).snapshot()
    finally:
        client.close()


def _start_http(watchdog: Watchdog, journal: Journal) -> Any:
    """The metrics server; a port already taken is said once and the daemon runs on without it."""
    import os
    from http import HTTPStatus

    from watchdog.config import parse_listen
    from watchdog.ops.metrics import TOKEN_ENV, HttpServer, recent

    config = watchdog.config
    listen = parse_listen(config.http)
    if listen is None:
        return None

    def status_doc() -> dict[str, Any]:
        containers = _fleet_snapshot(config)  # the HTTP thread's own connection; the loop's client stays the loop's
        return build_status(containers, journal, watchdog.config, time.time(), config.resolved_state_dir())

    def healthy() -> tuple[bool, str]:
        return recent(watchdog.last_cycle_at, max(3 * watchdog.config.poll_interval, 15.0))

    def control(action: str, name: str) -> tuple[int, str]:
        """What `gpu-watchdog reset` / `gpu release` do, through a connection of its own (the loop sees it)."""
        own = Journal.in_dir(config.resolved_state_dir())
        try:
            if action == "reset":
                managed = [c.name for c in _fleet_snapshot(config) if c.managed]
                text = reset_container(own, name, managed, "POST /reset", time.time())
            else:
                text = release_gpu(own, name, "POST /gpu/release", time.time())
        except NotFound as exc:
            return HTTPStatus.NOT_FOUND, str(exc)
        finally:
            own.close()
        watchdog.wake.set()
        return HTTPStatus.OK, text

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    try:
        server = HttpServer(listen, watchdog.metrics, healthy, status_doc, control, token)
    except OSError as exc:
        logger.error("http {}: cannot listen ({}); metrics off, healing goes on. Set http: or --http", config.http, exc)
        return None
    server.start()
    logger.info(
        "http: /metrics, /healthz, /status on http://{}; POST /reset/NAME, /gpu/release/UUID {}",
        server.address,
        "with the token" if token else f"off (no {TOKEN_ENV})",
    )
    return server


def _connect() -> docker.DockerClient:
    try:
        client = docker_client()
        client.ping()
        return client
    except ENGINE_ERRORS as exc:
        fail(f"Docker engine unreachable ({_short(exc)}); start it or set DOCKER_HOST", EXIT_RUNTIME)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _print_effective(config: Config) -> None:
    logger.info(
        "gpu-watchdog {} starting: poll {} s, probe timeout {} s, failures {}, max concurrent restarts {}, "
        "breaker {} in {} s (backoff {}-{} s, cooldown {} s), RAM preflight {} (x{} + {} B), label prefix '{}', "
        "events {}, dry-run {}, state {}",
        __version__,
        config.poll_interval,
        config.probe_timeout,
        config.failure_threshold,
        config.max_concurrent_restarts,
        config.breaker.max_restarts,
        config.breaker.window,
        config.breaker.backoff_initial,
        config.breaker.backoff_max,
        config.breaker.cooldown,
        "on" if config.ram_preflight.enabled else "off",
        config.ram_preflight.factor,
        config.ram_preflight.reserve,
        config.label_prefix,
        "on" if config.events else "off",
        config.dry_run,
        config.resolved_state_dir(),
    )


def run_once(config: Config) -> int:
    client = _connect()
    journal = open_journal(config)
    lock = InstanceLock(config.resolved_state_dir())
    try:
        lock.acquire()
    except LockHeld as exc:
        fail(f"{exc}; a daemon is already healing this fleet", EXIT_RUNTIME)
    watchdog = Watchdog(config, journal, lambda: client)
    try:
        watchdog.reconcile()
        watchdog.replay_events()
        watchdog.start_gpu()
        watchdog.gpu.wait_first_reading(config.gpu.deadline + 1.0)
        watchdog.gpu.drain_pending_xids()
        result = watchdog.cycle()
        if not result.engine_up:
            fail("Docker engine became unreachable during the cycle", EXIT_RUNTIME)
        managed = sum(1 for c in result.containers if c.managed)
        click.echo(
            f"cycle: {managed} managed, {len(result.diagnosis.faults)} fault(s), {result.duration * 1000:.0f} ms"
        )
        for decision in result.decisions:
            click.echo(f"  {decision.fault.container}: {decision.verdict.value}: {decision.reason}")
    finally:
        watchdog.shutdown()
        lock.release()
        journal.close()
    return EXIT_OK


def _webhooks(config: NotifyConfig) -> Webhooks | None:
    """The notifier for the configured targets, not started; None when there are none. ConfigError: unusable."""
    return Webhooks(config) if config.targets else None


def _attach_webhooks(webhooks: Webhooks, watchdog: Watchdog, journal: Journal) -> None:
    webhooks.on_outcome = watchdog.metrics.notification
    journal.subscribe(webhooks.observe)
    webhooks.start()
    logger.info(
        "notifications on state transitions to {}", ", ".join(t.describe() for t in webhooks.targets) or "no target"
    )


def _reload_webhooks(
    webhooks: Webhooks | None, fresh: NotifyConfig, watchdog: Watchdog, journal: Journal
) -> Webhooks | None:
    """SIGHUP: the new targets replace the old (ConfigError, nothing changed, when one is unusable)."""
    if fresh == watchdog.config.notify:
        return webhooks
    if webhooks is None:
        created = _webhooks(fresh)
        if created is not None:
            _attach_webhooks(created, watchdog, journal)
        return created
    webhooks.reconfigure(fresh)
    logger.info(
        "SIGHUP: notification targets now {}", ", ".join(t.describe() for t in webhooks.targets) or "none (off)"
    )
    return webhooks


def run_daemon(obj: Context, overrides: dict[str, Any]) -> int:
    config = obj.config
    try:
        webhooks = _webhooks(config.notify)  # a target apprise refuses is a config error before anything starts
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    stopping = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        logger.info("received {}: finishing the current cycle and stopping", signal.Signals(signum).name)
        stopping.set()
        watchdog_ref[0] and watchdog_ref[0].wake.set()  # type: ignore[func-returns-value]

    def on_hup(_signum: int, _frame: object) -> None:
        reload_requested.set()
        watchdog_ref[0] and watchdog_ref[0].wake.set()  # type: ignore[func-returns-value]

    watchdog_ref: list[Watchdog | None] = [None]
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    _print_effective(config)

    lock = InstanceLock(config.resolved_state_dir())
    said = False
    while not stopping.is_set():
        try:
            lock.acquire()
            break
        except LockHeld as exc:
            if not said:
                logger.warning("{}; waiting for it to exit (two watchdogs must not fight over one fleet)", exc)
                said = True
            stopping.wait(config.poll_interval)
    if stopping.is_set():
        return EXIT_OK

    journal = _daemon_journal(config)
    client: docker.DockerClient | None = None
    said = False
    while client is None and not stopping.is_set():
        try:
            client = docker_client()
            client.ping()
        except ENGINE_ERRORS as exc:
            client = None
            if not said:
                logger.error("Docker engine unreachable ({}); retrying until it answers", _short(exc))
                said = True
            stopping.wait(2.0)
    if client is None:
        lock.release()
        return EXIT_OK

    watchdog = Watchdog(config, journal, docker_client)
    watchdog_ref[0] = watchdog
    journal.record(
        EntryKind.DAEMON_START, f"gpu-watchdog {__version__} started (dry-run {config.dry_run})", ts=time.time()
    )
    watchdog.reconcile()
    watchdog.start_events()
    watchdog.start_gpu()
    http_server = _start_http(watchdog, journal)
    if webhooks is not None:
        _attach_webhooks(webhooks, watchdog, journal)

    notifier = Notifier()

    def after_cycle(result: CycleResult) -> None:
        managed = sum(1 for c in result.containers if c.managed)
        if watchdog.cycles == 1:
            logger.info(
                "healing loop running: {} managed container(s), {} fault(s), events {}",
                managed,
                len(result.diagnosis.faults),
                "on" if config.events else "off (polling only)",
            )
            notifier.ready(f"watching {managed} container(s)")
        notifier.heartbeat(f"{managed} container(s), {len(result.diagnosis.faults)} fault(s)")
        if reload_requested.is_set():
            reload_requested.clear()
            notifier.reloading()
            nonlocal webhooks
            try:
                fresh = replace(load_config(obj.config_path), **{k: v for k, v in overrides.items() if v is not None})
                webhooks = _reload_webhooks(webhooks, fresh.notify, watchdog, journal)
            except ConfigError as exc:
                logger.error("SIGHUP: config not reloaded, keeping the running one: {}", exc)
                notifier.ready("config reload refused; running config kept")
                return
            watchdog.apply_config(fresh)
            notifier.ready("config reloaded")
            logger.info("SIGHUP: config reloaded")
            _print_effective(watchdog.config)

    try:
        watchdog.run_forever(stopping, on_cycle=after_cycle)
    finally:
        notifier.stopping()
        if http_server is not None:
            http_server.stop()
        watchdog.shutdown()
        if webhooks is not None:
            webhooks.stop()  # what is queued gets a few seconds
            journal.unsubscribe(webhooks.observe)
        journal.record(EntryKind.DAEMON_STOP, "gpu-watchdog stopped", ts=time.time())
        journal.close()
        lock.release()
    logger.info("stopped")
    return EXIT_OK


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Every managed container: GPU(s), state, health, last fault, restarts in the last hour, breaker."""
    client = _connect()
    journal = open_journal(obj.config)
    try:
        containers = DockerProbe(client, obj.config.label_prefix).snapshot()
    except EngineUnavailable as exc:
        fail(f"Docker engine unreachable ({_short(exc)}); start it or set DOCKER_HOST", EXIT_RUNTIME)
    doc = build_status(containers, journal, obj.config, time.time(), obj.config.resolved_state_dir())
    click.echo(json.dumps(doc, indent=2) if as_json else render_table(doc))


@cli.command()
@click.argument("name")
@click.pass_obj
def reset(obj: Context, name: str) -> None:
    """Re-arm the crash-loop breaker of NAME and forget that it was stopped on purpose: it is healed again."""
    journal = open_journal(obj.config)
    try:
        containers = _fleet_snapshot(obj.config)
    except RESET_ERRORS as exc:
        logger.warning("engine unreachable ({}): resetting {} without checking that it exists", _short(exc), name)
        containers = None
    managed = None if containers is None else [c.name for c in containers if c.managed]
    try:
        click.echo(reset_container(journal, name, managed, "`gpu-watchdog reset`", time.time()))
    except NotFound as exc:
        fail(str(exc), EXIT_USAGE)


@cli.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plan_command(obj: Context, as_json: bool) -> None:
    """The capacity plan for the fleet in service: rpm, parallel limits, memory limits, and the verdict."""
    from watchdog.containers.host import mem_total
    from watchdog.ops.status import read_daemon_view
    from watchdog.router.capacity import members_from_fleet, plan_capacity, render

    config = obj.config
    containers, journal, given_up = _fleet_now(config)
    now = time.time()
    view = read_daemon_view(config.resolved_state_dir(), now, max_age=max(3 * config.poll_interval, 15.0)) or {}
    faulty = {cid for cid, seen in (view.get("containers") or {}).items() if seen.get("fault")}
    members = members_from_fleet(containers, faulty, journal.gpu_marks(), given_up)
    journal.close()
    result = plan_capacity(members, config.capacity, mem_total())
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else render(result))
    sys.exit(EXIT_OK if result.memory.fits else EXIT_RUNTIME)


def _fleet_now(config: Config) -> tuple[list[Any], Journal, set[str]]:
    """Managed containers now, the journal, and the names the crash-loop breaker has given up on."""
    from watchdog.containers.breaker import BreakerState, evaluate

    client = _connect()
    journal = open_journal(config)
    try:
        containers = DockerProbe(client, config.label_prefix).snapshot()
    except EngineUnavailable as exc:
        fail(f"Docker engine unreachable ({_short(exc)}); start it or set DOCKER_HOST", EXIT_RUNTIME)
    now = time.time()
    given_up = {
        c.name
        for c in containers
        if c.spec is not None
        and evaluate(
            journal.breaker_history(c.name, since=now - config.breaker.window - config.breaker.cooldown),
            config.breaker,
            now,
            c.spec.max_restarts,
        ).state
        == BreakerState.OPEN
    }
    return containers, journal, given_up


@cli.command()
@click.option("--since", default="24h", show_default=True, help="How far back, e.g. 24h, 7d, 90m.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown", "html"]), default="table")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to FILE (atomically) instead.")
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Restarts in an hour above which a container is UNSTABLE.",
)
@click.pass_obj
def report(obj: Context, since: str, fmt: str, out: str | None, threshold: int) -> None:
    """Restarts per container and GPU from the journal: rate, causes, time to recover, availability."""
    from watchdog.files import write_atomic
    from watchdog.reports.restart_rates import Window, build, render
    from watchdog.units import parse_duration

    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        fail(f"--since {since!r}: {exc}; e.g. 24h, 7d, 90m", EXIT_USAGE)
    if seconds <= 0:
        fail(f"--since {since!r}: must be more than 0, e.g. 24h", EXIT_USAGE)
    now = time.time()
    window = Window(now - seconds, now)
    journal = open_journal(obj.config)
    try:
        # Entries from a day earlier too: an episode open when the window starts counts as downtime.
        entries = journal.entries(since=window.start - 86400)
        actions = journal.actions(since=window.start)
    finally:
        journal.close()
    result = build(entries, actions, window, threshold)
    if fmt == "html":
        from watchdog.reports.html import render_html
        from watchdog.reports.timeline import build_timeline

        text = render_html(result, build_timeline(entries, actions, window), generated_at=now)
    else:
        text = render(result, fmt)
    if out is None:
        click.echo(text)
        return
    try:
        write_atomic(out, text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        fail(f"cannot write {out} ({exc.strerror}); pass --out FILE in a writable directory", EXIT_RUNTIME)
    click.echo(f"{out}: {len(result.containers)} container(s), {result.fleet.restarts} restart(s)")


@cli.command()
@click.pass_obj
def healthcheck(obj: Context) -> None:
    """Exit 0 if this state dir's daemon finished a cycle recently (for a container HEALTHCHECK), else 1.

    It reads the status file the loop rewrites every cycle: a hung loop, not just a dead
    process, turns the check red. No engine call, no journal lock.
    """
    from watchdog.ops.status import STATUS_FILE, read_daemon_view

    config = obj.config
    state_dir = config.resolved_state_dir()
    max_age = max(3 * config.poll_interval, 15.0)
    view = read_daemon_view(state_dir, time.time(), max_age)
    if view is None:
        fail(
            f"no cycle in the last {max_age:g} s ({state_dir / STATUS_FILE} missing or stale): loop down or hung",
            EXIT_RUNTIME,
        )
    click.echo(f"ok: last cycle {time.time() - float(view['written_at']):.1f} s ago")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def doctor(obj: Context, as_json: bool) -> None:
    """Check the host and the fleet: one line per finding with the fix; exit 0 only when all is well."""
    from watchdog.ops.doctor import all_well, collect

    findings = collect(obj.config)
    if as_json:
        click.echo(json.dumps([vars(f) | {"level": f.level.value} for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(finding.line())
    sys.exit(EXIT_OK if all_well(findings) else EXIT_RUNTIME)


@cli.group()
def litellm() -> None:
    """The LiteLLM proxy's config, rendered from litellm/config.template.yaml, the fleet and the plan."""


@litellm.command("render")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the config (default: litellm.out, litellm/config.yaml).",
)
@click.option("--template", type=click.Path(dir_okay=False), default=None, help="Default: litellm.template.")
@click.pass_obj
def litellm_render(obj: Context, out: str | None, template: str | None) -> None:
    """Write the proxy config (atomically; not rewritten when unchanged) and the callback module next to it."""

    from watchdog.containers.host import mem_total
    from watchdog.router.config_writer import api_bases_on_disk, write_router_config
    from watchdog.router.litellm_config import TemplateError, parse_template
    from watchdog.router.wanted_config import wanted_config

    config = obj.config
    out_path = Path(out or config.litellm.out)
    template_path = Path(template or config.litellm.template)
    try:
        text = template_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        fail(f"cannot read the LiteLLM template {template_path} ({why}); pass --template FILE", EXIT_USAGE)
    try:
        parsed = parse_template(text, str(template_path))
    except TemplateError as exc:
        fail(str(exc), EXIT_USAGE)
    containers, journal, given_up = _fleet_now(config)
    marks = journal.gpu_marks()
    journal.close()
    # What the daemon writes, the same way: a stopped container keeps the URL the file on disk has.
    wanted = wanted_config(
        containers, marks, given_up, policy=config.capacity, host_total=mem_total(), known=api_bases_on_disk(out_path)
    )
    try:
        changed = write_router_config(wanted, parsed, out_path=out_path, template_path=template_path)
    except OSError as exc:
        fail(f"cannot write {out_path} ({exc.strerror}); pass --out FILE in a writable directory", EXIT_RUNTIME)
    for name in wanted.unreachable:
        click.echo(
            f"gpu-watchdog: warning: no URL for {name}: left out; publish its port or set the label "
            f"{config.label_prefix}.api-base",
            err=True,
        )
    state = "written" if changed else "unchanged"
    click.echo(f"{out_path}: {state}, {len(wanted.deployments)} deployment(s); {wanted.plan.text}")


@cli.group()
def gpu() -> None:
    """The GPUs as NVML shows them, and their quarantine marks."""


@gpu.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def gpu_list(obj: Context, as_json: bool) -> None:
    """Every GPU (read now, under the NVML deadline) with its mark, if any."""
    from watchdog.gpu.nvml import GpuProbe, NvmlState

    journal = open_journal(obj.config)
    marks = journal.gpu_marks()
    reading = GpuProbe(obj.config.gpu.deadline).read()
    doc: dict[str, Any] = {
        "nvml": reading.state.value,
        "detail": reading.detail,
        "driver": reading.driver_version,
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "health": g.health.value,
                "memory_used": g.memory_used,
                "memory_total": g.memory_total,
                "temperature": g.temperature,
                "mark": marks[g.uuid].condition.value if g.uuid in marks else None,
            }
            for g in reading.gpus
        ],
        "marks": {u: {"condition": m.condition.value, "reason": m.reason, "since": m.since} for u, m in marks.items()},
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"NVML: {reading.state.value}{' (' + reading.detail + ')' if reading.detail else ''}")
        for row in doc["gpus"]:
            used, total = row["memory_used"], row["memory_total"]
            memory = f"{used // 2**20}/{total // 2**20} MiB" if used is not None and total is not None else "-"
            click.echo(
                f"  {row['index']}  {row['uuid'] or '-'}  {row['name'] or '-'}  {row['health']}  {memory}"
                f"{'  ' + str(row['mark']).upper() if row['mark'] else ''}"
            )
        for uuid, mark in marks.items():
            click.echo(f"  mark: {uuid}: {mark.condition.value} since {time.ctime(mark.since)}: {mark.reason}")
    journal.close()
    sys.exit(EXIT_OK if reading.state in (NvmlState.OK, NvmlState.NO_DRIVER) else EXIT_RUNTIME)


@gpu.command("release")
@click.argument("uuid")
@click.pass_obj
def gpu_release(obj: Context, uuid: str) -> None:
    """Put a quarantined or drained GPU back in service (after a reboot or reset)."""
    journal = open_journal(obj.config)
    try:
        click.echo(release_gpu(journal, uuid, "`gpu-watchdog gpu release`", time.time()))
    except NotFound as exc:
        fail(str(exc), EXIT_USAGE)
    finally:
        journal.close()


@cli.command("notify")
@click.option("--test", "send", is_flag=True, help="Send one test message to each target now; exit 1 if any fails.")
@click.option("--target", default=None, metavar="NAME", help="Only the target of this name.")
@click.pass_obj
def notify_command(obj: Context, send: bool, target: str | None) -> None:
    """The notification targets (name, kind, events; never their URLs), or with --test a test message to each."""
    from watchdog.ops.notify import send_test

    config = obj.config.notify
    if not config.targets:
        fail("no notify targets configured; add notify.targets to the config file (see the README)", EXIT_USAGE)
    names = [t.name for t in config.targets]
    if target is not None and target not in names:
        fail(f"no notify target named {target!r}; configured: {', '.join(names)}", EXIT_USAGE)
    if not send:
        for item in config.targets:
            if target is None or item.name == target:
                click.echo(f"{item.describe()}: events {', '.join(item.events)}")
        return
    try:
        results = send_test(config, target)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    for item, why in results:
        click.echo(f"OK {item.name} ({item.kind})" if why is None else f"FAIL {item.name} ({item.kind}): {why}")
    sys.exit(EXIT_OK if all(why is None for _, why in results) else EXIT_RUNTIME)


def main() -> None:
    cli(prog_name="gpu-watchdog")


if __name__ == "__main__":  # pragma: no cover
    main()
