"""KID or FID of the generator during training (``--eval-every N``), and the best checkpoint.

What makes it safe to run in the middle of a run: the samples come from a fixed z drawn once
from a CPU generator of its own (so every evaluation sees the same latents, and the training RNG
streams never move), the generator runs in inference mode (batch norm reads its running
statistics and changes no state), and KID's random subsets are drawn under ``fork_rng``. So a
run with evaluations trains exactly as one without, and resumes exactly.

Each evaluation epoch is also a checkpoint epoch: ``checkpoints/last.pt`` is written first, then
``checkpoints/best.pt`` when the metric improved (it carries its evaluation with it), so the best
checkpoint is never ahead of the run's last one, and a resume reads the best-so-far record back
from best.pt itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wgan.config import WGANConfig
from wgan.run.checkpoint import read_best_state
from wgan.run.generator import evaluation_z, generate_all
from wgan.training.engine import Engine


@dataclass(frozen=True)
class Best:
    """The best evaluation so far: what checkpoints/best.pt holds."""

    epoch: int
    metric: str  # "kid" or "fid": lower is better for both
    value: float


class Evaluator:
    """The feature network and reference features, loaded once per run; one call per evaluation."""

    def __init__(self, config: WGANConfig, net: Any, run_dir: Path) -> None:
        from wgan.fid.scores import reference_features

        self.metric = config.eval_metric
        self.samples = config.eval_samples
        self.batch_size = config.batch_size
        self.net = net  # wgan.fid.scores.FeatureNetwork, loaded once (wgan.fid.scores.load_feature_network)
        self.reference = reference_features(run_dir, self.net)
        self.z = evaluation_z(config)

    def images(self, engine: Engine) -> torch.Tensor:
        """The generator's images of the fixed z, in batches (inference mode: no state changes)."""
        return generate_all(engine.sample, self.z.to(dtype=engine.dtype), engine.device)

    def __call__(self, engine: Engine) -> dict[str, float]:
        """The values this evaluation adds to its epoch's metrics.jsonl row."""
        from wgan.fid.scores import evaluate

        started = time.perf_counter()
        # both metrics from the one feature pass (the maths costs ~1 s next to minutes of features on
        # a CPU); the configured one picks best.pt
        result = evaluate(self.images(engine), self.reference, self.net, "both")
        values = {"eval_seconds": time.perf_counter() - started}
        if result.kid_mean is not None:
            values.update(kid=result.kid_mean, kid_std=result.kid_std)
        if result.fid is not None:
            values["fid"] = result.fid
        return values

    def score(self, values: dict[str, float]) -> float:
        return values[self.metric]


def read_best(path: Path, up_to_epoch: int | None) -> Best | None:
    """The best record of ``best.pt``; None when there is none, or when it is ahead of the
    checkpoint a run resumes from (a crash between last.pt and best.pt: the run re-trains that)."""
    state = read_best_state(path)
    if state is None:
        return None
    record: dict[str, Any] = state.get("evaluation") or {}
    if up_to_epoch is not None and state["epoch"] > up_to_epoch or "metric" not in record:
        return None
    return Best(epoch=int(state["epoch"]), metric=record["metric"], value=float(record["value"]))


@dataclass
class Evaluation:
    """The evaluator of a run and its best-so-far record (what the training loop keeps)."""

    evaluator: Evaluator
    best: Best | None = None

    def keep_if_best(self, engine: Engine, folder: Any, row: dict[str, Any]) -> bool:
        """Write checkpoints/best.pt when ``row``'s evaluation beats the best so far (lower wins)."""
        from wgan.run.checkpoint import save_checkpoint

        score = self.evaluator.score(row)
        if self.best is not None and not score < self.best.value:
            return False
        metric = self.evaluator.metric
        record = {
            "metric": metric,
            "value": score,
            **{k: row[k] for k in ("kid", "kid_std", "fid") if k in row},
            "n_samples": self.evaluator.samples,
        }
        save_checkpoint({**engine.state_dict(), "evaluation": record}, folder.best_checkpoint)
        self.best = Best(epoch=row["epoch"], metric=metric, value=score)
        folder.update_run_info(best={"epoch": self.best.epoch, "metric": metric, "value": score})
        return True
