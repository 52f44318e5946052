"""What a run records for each epoch: the one declaration of the names, for every module.

The engine computes :data:`DEVICE` on the device, in this order; the trainer adds :data:`HOST`
and writes :data:`ROW` to metrics.jsonl (and W&B); the report, the plots and the diagnostics
read them back by these names.
"""

from __future__ import annotations

LOSSES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")
DEVICE = LOSSES + (
    "wasserstein_estimate",
    "clip_ratio",
    "critic_weight_mean",
    "critic_weight_std",
    "generator_weight_mean",
    "generator_weight_std",
)
HOST = ("epoch_time", "images_per_s")
ROW = ("epoch",) + DEVICE + HOST  # one metrics.jsonl line
SIGNED = LOSSES + ("wasserstein_estimate",)  # the values whose sign the report reads (docs/design.md)
# Sample-quality evaluations (wgan.training.evaluation, --eval-every): only in the rows of the evaluated epochs.
EVALUATION = ("kid", "kid_std", "fid", "eval_seconds")
