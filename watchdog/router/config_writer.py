"""Writes the LiteLLM proxy's config: the template, the fleet's deployments and the plan's numbers.

The I/O edge of watchdog/router/litellm_config.py for the config file. `write_router_config` is the
one way the config is rendered and written, by the daemon (through `ConfigWriter`, each cycle) and by
`gpu-watchdog litellm render`. `ConfigWriter` re-reads the template only when it changes, renders only
when an input changed, and says a bad template or an unwritable file once (the last good template is
kept, the rotation goes on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from watchdog.config import Config
from watchdog.entries import EntryKind
from watchdog.files import write_if_changed
from watchdog.router.fallbacks import litellm_fallbacks
from watchdog.router.litellm_config import (
    CALLBACK_MODULE,
    ROTATION_FILE,
    RouterDeployment,
    RouterTemplate,
    TemplateError,
    api_bases_in,
    dump_config,
    parse_template,
    render_config,
)
from watchdog.router.problems import Problems
from watchdog.router.wanted_config import WantedConfig

CALLBACK_SOURCE = Path(__file__).resolve().parents[2] / "litellm" / f"{CALLBACK_MODULE}.py"
# The callback and the modules it imports from its own directory (the outlier book).
CALLBACK_FILES = (
    f"{CALLBACK_MODULE}.py",
    "gpu_watchdog_outliers.py",
    "gpu_watchdog_cluster.py",
    "gpu_watchdog_picks.py",
)


def write_router_config(wanted: WantedConfig, template: RouterTemplate, *, out_path: Path, template_path: Path) -> bool:
    """The proxy's config and, next to it, the callback module it loads; True when the config changed."""
    config = render_config(template, wanted.deployments, wanted.plan, fallbacks=litellm_fallbacks(wanted.fallbacks))
    text = dump_config(config, str(template_path), ROTATION_FILE)
    install_callback(out_path, template_path)
    return write_if_changed(out_path, text, keep_previous=True)


def install_callback(out_path: Path, template_path: Path) -> None:
    """LiteLLM loads `module.instance` callbacks from the directory of its config file."""
    for name in CALLBACK_FILES:
        target = out_path.with_name(name)
        source = template_path.with_name(name)
        if not source.is_file():
            source = CALLBACK_SOURCE.with_name(name)
        if source.resolve() != target.resolve():
            write_if_changed(target, source.read_text(encoding="utf-8"))


def api_bases_on_disk(out_path: Path) -> dict[str, str]:
    """Deployment id -> api_base in the config written earlier (empty when there is none to read)."""
    try:
        return api_bases_in(out_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def config_out_path(config: Config) -> Path:
    """The rendered config; the rotation file and the callback module lie next to it."""
    return Path(config.litellm.out)


class ConfigWriter:
    """The daemon's config file: template cached by stat, rendered when an input changes, problems said once."""

    def __init__(self, config: Config, problems: Problems) -> None:
        self.config = config
        self.problems = problems
        self._template: RouterTemplate | None = None
        self._template_key: tuple[int, int] | None = None
        self._api_bases: dict[str, str] | None = None  # deployment id -> api_base last seen (None: not read)
        self._rendered_key: tuple[Any, ...] | None = None  # inputs of the config last written or found unchanged

    def apply_config(self, config: Config) -> None:
        self.config = config
        self._template_key = None  # re-read: the path may have changed

    @property
    def out_path(self) -> Path:
        return config_out_path(self.config)

    def known_api_bases(self) -> dict[str, str]:
        """Deployment id -> the api_base last seen: the file on disk at first, then every cycle's deployments."""
        if self._api_bases is None:
            self._api_bases = api_bases_on_disk(self.out_path)
        return self._api_bases

    def remember(self, deployments: Sequence[RouterDeployment]) -> None:
        self.known_api_bases().update({d.id: d.api_base for d in deployments})

    def load_template(self) -> RouterTemplate | None:
        """Re-read when the file changes; a bad template is said once, the last good one kept."""
        path = Path(self.config.litellm.template)
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if key == self._template_key:
                return self._template
            self._template_key = key
            self._template = parse_template(path.read_text(encoding="utf-8"), str(path))
            self.problems.clear("template", f"litellm template {path} is valid again")
        except TemplateError as exc:
            self.problems.say(
                "template",
                f"{exc} (config not re-rendered; the rotation still works)",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        except (OSError, UnicodeDecodeError) as exc:
            self._template_key = None
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            self.problems.say(
                "template",
                f"cannot read litellm template {path} ({why}); set litellm.template (config not re-rendered)",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
        return self._template

    def write(self, wanted: WantedConfig) -> bool | None:
        """True when the config was rewritten, False when it already said this; None: no template or unwritable."""
        template = self.load_template()
        if template is None:
            return None
        parallel, routes = wanted.plan.global_max_parallel_requests, wanted.fallbacks.routes
        key = (self._template_key, wanted.deployments, parallel, routes, self._out_stat())
        if key == self._rendered_key:  # render and compare only when an input changed, not every cycle
            return False
        written = self._render(template, wanted)
        if written is not None:
            self._rendered_key = (*key[:4], self._out_stat())
        return written

    def _out_stat(self) -> tuple[int, int] | None:
        """Someone editing or removing the rendered file makes it be rewritten."""
        try:
            stat = self.out_path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _render(self, template: RouterTemplate, wanted: WantedConfig) -> bool | None:
        """Write the config if its text changed; None when it cannot be written (said once)."""
        if wanted.unreachable:
            self.problems.say(
                "unreachable",
                f"no URL for {', '.join(wanted.unreachable)}: not in the LiteLLM config; publish its port or set "
                f"the label {self.config.label_prefix}.api-base",
                level="WARNING",
            )
        else:
            self.problems.clear("unreachable")
        if wanted.fallbacks.problems:
            self.problems.say("fallbacks", "; ".join(wanted.fallbacks.problems), level="WARNING")
        else:
            self.problems.clear("fallbacks")
        try:
            written = write_router_config(
                wanted, template, out_path=self.out_path, template_path=Path(self.config.litellm.template)
            )
        except OSError as exc:
            self.problems.say(
                "config-write",
                f"cannot write the LiteLLM config {self.out_path} ({exc.strerror}); fix litellm.out",
                journal_kind=EntryKind.ROUTER_ERROR,
            )
            return None
        self.problems.clear("config-write")
        if written:
            logger.info("LiteLLM config {} rewritten ({} deployment(s))", self.out_path, len(wanted.deployments))
        return written
