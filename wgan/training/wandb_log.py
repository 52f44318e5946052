"""Weights & Biases logging that can never stop a training run.

The seed logged to W&B while swallowing every error silently. Here a failing W&B call warns
once on stderr, W&B is switched off for the rest of the run, and training carries on: the run
folder (metrics.jsonl, samples, checkpoints) is the record that must not depend on a service.

``auto`` goes online only when credentials exist (``WANDB_API_KEY`` or a netrc entry for the
W&B API host), else offline; offline and online runs keep their files under the run folder
(``RUN_DIR/wandb/``), so ``wandb sync RUN_DIR/wandb/offline-run-*`` can upload them later.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wgan.errors import one_line

log = logging.getLogger("wgan.wandb")

MODES = ("auto", "online", "offline", "disabled")
PROJECT = "wgan-horses"


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    candidates = [os.environ.get("NETRC"), os.path.expanduser("~/.netrc"), os.path.expanduser("~/_netrc")]
    for path in candidates:
        if not path or not os.path.isfile(path):
            continue
        try:
            if netrc.netrc(path).authenticators(host):
                return True
        except (netrc.NetrcParseError, OSError):
            continue
    return False


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


class WandbLogger:
    """A thin, fail-soft wrapper around one ``wandb`` run.

    Metrics are logged with ``epoch`` as the step metric (not wandb's own step counter), so a
    resumed run that re-logs epochs dropped after a crash does not trip wandb's monotonic-step
    rule.
    """

    def __init__(
        self,
        mode: str,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        run_id: str | None = None,
        notes: str = "",
        name: str | None = None,
        group: str | None = None,
    ) -> None:
        """``group``: the run is one member of a sweep (W&B groups them); several members' runs
        live in one process then (``reinit="create_new"``)."""
        self.mode = resolve_mode(mode)
        self.run: Any = None
        self._failed = False
        if self.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            self._fail_install()
            return
        try:
            self._wandb = wandb
            run_dir = Path(run_dir)
            settings = wandb.Settings(console="off", silent=True, init_timeout=60.0, disable_git=True)
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", PROJECT),
                dir=str(run_dir),
                mode=self.mode,
                id=run_id,
                resume="allow" if run_id else None,
                name=name or run_dir.name,
                notes=notes or None,
                config=config,
                allow_val_change=True,
                settings=settings,
                **({"group": group, "reinit": "create_new"} if group else {}),
            )
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
        except Exception as exc:  # a missing network or service must not stop training
            self._fail("init", exc)

    @property
    def active(self) -> bool:
        return self.run is not None and not self._failed

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None) if self.run is not None else None

    @property
    def url(self) -> str | None:
        if self.run is None or self.mode != "online":
            return None
        try:
            return self.run.url
        except Exception:
            return None

    def _fail_install(self) -> None:
        msg = (
            "W&B is not installed (pip install wandb, or the package's [wandb] extra): W&B logging is off, "
            "training continues"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        self._failed = True

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._failed:
            msg = (
                f"W&B {what} failed ({type(exc).__name__}: {one_line(exc)});"
                " W&B logging is off for the rest of this run, training continues"
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
        self._failed = True
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    def log_metrics(self, rows: list[dict[str, Any]]) -> None:
        self._call("log", lambda: [self.run.log(dict(row)) for row in rows])

    def log_image(self, key: str, path: str | Path, epoch: int, caption: str | None = None) -> None:
        self._call(
            "image log", lambda: self.run.log({key: self._wandb.Image(str(path), caption=caption), "epoch": epoch})
        )

    def update_config(self, values: dict[str, Any]) -> None:
        self._call("config update", lambda: self.run.config.update(values, allow_val_change=True))

    def log_summary(self, values: dict[str, Any]) -> None:
        """For the report (wgan.report) to add its headline figures to the run."""
        self._call("summary", lambda: self.run.summary.update(values))

    def _call(self, what: str, call: Callable[[], object]) -> None:
        """One W&B call while the run is active; a failure warns once (``_fail``) and training goes on."""
        if not self.active:
            return
        try:
            call()
        except Exception as exc:
            self._fail(what, exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            print(f"warning: W&B finish failed: {exc}", file=sys.stderr)
