"""What a run's samples and metric series say about its health, computed from numbers alone.

The seed's report judged a run only by its losses, and read them wrongly: it called a
mode-collapsed generator "Excellent". Everything here looks at something the losses cannot show
(the samples themselves, their distance to training images) or reads the losses under this
project's sign convention (docs/design.md): ``wasserstein_estimate = E[C(real)] - E[C(fake)]``
should be positive.

Image distance
--------------
Images are compared in one feature space, chosen so that "near-duplicate" means "the same
picture", not "similar brightness": each image is average-pooled to 8x8 (per channel), then
standardised per image (its own mean subtracted, divided by its own std, floored at
``STD_FLOOR``), and two images' distance is the RMS difference of those 192 numbers. Pooling makes
the distance indifferent to pixel noise and JPEG/texture detail that a 32x32 GAN does not
reproduce anyway; standardising makes a low-contrast or blurry but *diverse* set of samples (what
early GANs produce) look as diverse as it is, where raw pixel L2 would call every pair of
washed-out samples a duplicate. Checked on the CIFAR-10 horses: 256 held-out real images have 6%
of samples with a near-duplicate at the calibrated threshold; the same images at half contrast
6%, blurred with a 5x5 box 14%; 8 repeated images (with noise) 100%.

Indicators
----------
Measurements return plain dicts of numbers; each judgement of them is an :class:`Indicator`
(name, status, observation, rule, threshold, data) built by one ``*_indicator`` function here,
the one home of every indicator: the report (wgan.report.findings) only lists them and reads
their statuses into its verdict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wgan.run import columns

FEATURE_SIDE = 8
STD_FLOOR = 0.05  # in [-1, 1] pixel units: flatter images are treated as flat, not blown up
THRESHOLD_PERCENTILE = 5.0  # of real-vs-real nearest-neighbour distances
MAX_DUPLICATED_SHARE = 0.25  # reals sit near THRESHOLD_PERCENTILE / 100 by construction
MIN_DIVERSITY_RATIO = 0.5  # mean pairwise distance of fakes / of reals


# ----------------------------------------------------------------------------------------------
# indicators: what every judgement below returns
# ----------------------------------------------------------------------------------------------
PASS, WARN, FAIL, NOT_RUN = "PASS", "WARN", "FAIL", "NOT RUN"
INDICATOR_FIELDS = ("name", "status", "observation", "rule", "threshold")


@dataclass(frozen=True)
class Indicator:
    """One question about a run, answered: a row of the report's indicator table and an input of its verdict.

    Each indicator is built by one function in this module (``*_indicator``), so the report and
    anyone calling these diagnostics directly see the same judgement. ``data`` holds the numbers
    behind the observation that code acts on or shows in detail (e.g. ``first_nan_epoch``).
    """

    name: str
    status: str  # PASS, WARN, FAIL or NOT_RUN
    observation: str
    rule: str
    threshold: str
    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """A field or a ``data`` entry by name, as the dicts that indicators used to be were read."""
        return getattr(self, key) if key in INDICATOR_FIELDS else self.data[key]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Indicator:
        """An indicator from a dict with the field names as keys (missing fields empty, other keys as data)."""
        fields = {key: mapping.get(key, "") for key in INDICATOR_FIELDS}
        return cls(**fields, data={key: value for key, value in mapping.items() if key not in INDICATOR_FIELDS})


def not_run_indicator(name: str, why: str, needs: str) -> Indicator:
    """An indicator that could not be evaluated, saying why and what it would need."""
    return Indicator(name, NOT_RUN, f"not checked: {why}", needs, "–")


# ----------------------------------------------------------------------------------------------
# feature space
# ----------------------------------------------------------------------------------------------
def _check_images(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images, got {x.shape[0]}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [-1, 1], got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite pixels")
    return x.detach().float().cpu()


def image_features(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> [N, C*8*8]: pooled, per-image standardised (see module doc)."""
    x = _check_images(images, "images")
    if x.shape[-1] != FEATURE_SIDE or x.shape[-2] != FEATURE_SIDE:
        x = F.adaptive_avg_pool2d(x, FEATURE_SIDE)
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.std(1, keepdim=True).clamp_min(STD_FLOOR)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMS distance between feature rows; the non-matmul path keeps near-zero distances exact."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(a.shape[1])


def _nn_within(d: torch.Tensor) -> torch.Tensor:
    d = d.clone()
    d.fill_diagonal_(float("inf"))
    return d.min(1).values


def _mean_offdiag(d: torch.Tensor) -> float:
    n = d.shape[0]
    iu = torch.triu_indices(n, n, 1)
    return float(d[iu[0], iu[1]].mean())


def _components(adjacent: torch.Tensor) -> list[int]:
    """Connected-component label of each node of a boolean adjacency matrix (union-find)."""
    n = adjacent.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in torch.nonzero(torch.triu(adjacent, 1)).tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
    return [find(i) for i in range(n)]


def _pick(n_total: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n]


# ----------------------------------------------------------------------------------------------
# mode collapse
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollapseMeasurement:
    """What :func:`mode_collapse` measured on one set of samples, by name."""

    collapsed: bool
    reasons: tuple[str, ...]  # why it is collapsed (empty when not)
    n_samples: int
    n_real: int  # reals the threshold was calibrated on (as many as samples, at most)
    threshold: float  # near-duplicate distance: the threshold_percentile-th of real-real NN distances
    threshold_percentile: float
    duplicate_pairs: int
    duplicate_fraction: float  # of all sample pairs
    duplicated_sample_fraction: float  # share of samples with a near-duplicate
    real_duplicated_sample_fraction: float  # the same share among reals (about threshold_percentile %)
    n_clusters: int  # connected groups of near-duplicates, singletons included
    largest_cluster: int
    diversity_ratio: float  # mean pairwise feature distance, samples / reals
    pixel_diversity_ratio: float  # the same on raw pixels (sees low contrast)
    fake_nn_median: float
    real_nn_median: float
    max_duplicated_share: float  # the rules' limits, as applied
    min_diversity_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class CheckpointDiversity:
    """Mode collapse measured on one checkpoint's samples (the diversity-over-training series)."""

    epoch: int
    checkpoint: str  # relative to the run folder
    measured: CollapseMeasurement


def mode_collapse(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    percentile: float = THRESHOLD_PERCENTILE,
    max_duplicated_share: float = MAX_DUPLICATED_SHARE,
    min_diversity_ratio: float = MIN_DIVERSITY_RATIO,
    seed: int = 0,
) -> CollapseMeasurement:
    """Does ``fake`` repeat itself more than real images do?

    A near-duplicate threshold is calibrated on reals of the same count as the fakes (drawn with
    ``seed`` when there are more): the ``percentile``-th percentile of each real's distance to its
    nearest other real, so by construction about ``percentile`` % of reals have a "near-duplicate".
    The set is called collapsed when the share of fakes that have a near-duplicate exceeds
    ``max_duplicated_share`` (a few modes repeated), or when the mean pairwise distance of fakes is
    below ``min_diversity_ratio`` times that of reals (everything is one image). The first rule is
    what catches a partly collapsed set whose mean distance still looks normal.
    """
    fake_features = image_features(fake)
    real_pool = _check_images(real, "real")
    n = fake_features.shape[0]
    n_real = min(n, real_pool.shape[0])
    real_images = real_pool[_pick(real_pool.shape[0], n_real, seed)] if real_pool.shape[0] > n_real else real_pool
    real_features = image_features(real_images)

    real_distances = pairwise_distances(real_features, real_features)
    real_nearest = _nn_within(real_distances)
    threshold = float(np.percentile(real_nearest.numpy(), percentile))
    real_duplicated = float((real_nearest < threshold).float().mean())

    fake_distances = pairwise_distances(fake_features, fake_features)
    duplicate_pairs, duplicated_share, cluster_sizes = _near_duplicates(fake_distances, threshold)
    diversity_ratio = _mean_offdiag(fake_distances) / max(_mean_offdiag(real_distances), 1e-12)
    reasons = []
    if duplicated_share > max_duplicated_share:
        reasons.append(
            f"{duplicated_share:.0%} of samples have a near-duplicate "
            f"(reals: {real_duplicated:.0%}; limit {max_duplicated_share:.0%})"
        )
    if diversity_ratio < min_diversity_ratio:
        reasons.append(f"diversity ratio {diversity_ratio:.2f} < {min_diversity_ratio}")
    return CollapseMeasurement(
        collapsed=bool(reasons),
        reasons=tuple(reasons),
        n_samples=n,
        n_real=n_real,
        threshold=threshold,
        threshold_percentile=percentile,
        duplicate_pairs=duplicate_pairs,
        duplicate_fraction=duplicate_pairs / (n * (n - 1) // 2),
        duplicated_sample_fraction=duplicated_share,
        real_duplicated_sample_fraction=real_duplicated,
        n_clusters=len(cluster_sizes),
        largest_cluster=cluster_sizes[0],
        diversity_ratio=diversity_ratio,
        pixel_diversity_ratio=_pixel_diversity_ratio(fake, real_images),
        fake_nn_median=float(_nn_within(fake_distances).median()),
        real_nn_median=float(real_nearest.median()),
        max_duplicated_share=max_duplicated_share,
        min_diversity_ratio=min_diversity_ratio,
    )


def _near_duplicates(distances: torch.Tensor, threshold: float) -> tuple[int, float, list[int]]:
    """Pairs closer than ``threshold``: their count, the share of images in one, and cluster sizes (largest first).

    A cluster is a connected group of near-duplicates: a mode the generator repeats.
    """
    close = distances < threshold
    close.fill_diagonal_(False)
    duplicate_pairs = int(torch.triu(close, 1).sum())
    duplicated_share = float(close.any(1).float().mean())
    labels = _components(close)
    sizes = sorted(np.bincount(np.unique(labels, return_inverse=True)[1]).tolist(), reverse=True)
    return duplicate_pairs, duplicated_share, sizes


def _pixel_diversity_ratio(fake: torch.Tensor, real_images: torch.Tensor) -> float:
    """Mean pairwise raw-pixel distance of fakes / of reals: unlike the feature ratio, it sees low contrast."""
    raw_fake, raw_real = fake.detach().float().cpu().flatten(1), real_images.flatten(1)
    return _mean_offdiag(pairwise_distances(raw_fake, raw_fake)) / max(
        _mean_offdiag(pairwise_distances(raw_real, raw_real)), 1e-12
    )


def mode_collapse_indicator(
    measured: CollapseMeasurement | None,
    *,
    missing: str = "no samples",
    needs: str = "needs samples and reference images",
) -> Indicator:
    """Mode collapse from a :func:`mode_collapse` result (None: not measured, because of ``missing``)."""
    name = "Mode collapse (samples)"
    if measured is None:
        return not_run_indicator(name, missing, needs)
    observation = (
        f"{measured.duplicated_sample_fraction:.0%} of {measured.n_samples} samples have a near-duplicate "
        f"(reals: {measured.real_duplicated_sample_fraction:.0%}); {measured.n_clusters} distinct cluster(s); "
        f"diversity ratio {measured.diversity_ratio:.2f}"
    )
    rule = (
        f"share of samples with a near-duplicate (distance < {measured.threshold:.3f}, the "
        f"{measured.threshold_percentile:g}th percentile of real-real nearest-neighbour distances of "
        f"{measured.n_real} reals) <= {measured.max_duplicated_share:.0%}, and diversity ratio (mean pairwise "
        f"distance fakes / reals) >= {measured.min_diversity_ratio}"
    )
    threshold = f"<= {measured.max_duplicated_share:.0%} and >= {measured.min_diversity_ratio}"
    if measured.collapsed:
        return Indicator(name, FAIL, "COLLAPSED: " + observation, rule, threshold)
    return Indicator(name, PASS, observation, rule, threshold)


# ----------------------------------------------------------------------------------------------
# memorisation and fidelity
# ----------------------------------------------------------------------------------------------
MEMORISATION_RATIO = 0.5  # fake NN distance median / held-out NN distance median below this
FAR_RATIO = 1.5  # above this: samples are farther from every training image than reals are
COPY_SHARE = 0.25  # share of fakes closer to a training image than 95% of held-out reals are


def nearest_neighbours(
    fake: torch.Tensor, reference: torch.Tensor, *, held_out: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Nearest-training-image distances of samples, judged against those of held-out reals.

    ``reference`` is split (fixed ``seed``) into a pool and ``held_out`` reals not in it. A
    held-out real's distance to its nearest pool image is what a generator that draws *new*
    images from the data distribution would score; much closer means copies of the pool
    (memorisation), much farther means samples unlike any training image (low fidelity). Only
    memorisation of images in the pool can be seen: reference.npz holds a sample of the data.
    """
    fake_features = image_features(fake)
    ref = _check_images(reference, "reference")
    n_reference = ref.shape[0]
    if n_reference < 4:
        raise ValueError(f"reference needs at least 4 images for a held-out split, got {n_reference}")
    held_out = held_out or max(2, min(256, n_reference // 4))
    held_out = min(held_out, n_reference - 2)
    order = _pick(n_reference, n_reference, seed)
    held_out_index, pool_index = order[:held_out], order[held_out:]
    pool = image_features(ref[pool_index])
    fake_distance, fake_nearest = pairwise_distances(fake_features, pool).min(1)
    held_out_distance = pairwise_distances(image_features(ref[held_out_index]), pool).min(1).values
    copy_threshold = float(np.percentile(held_out_distance.numpy(), 5.0))
    ratio = float(fake_distance.median()) / max(float(held_out_distance.median()), 1e-12)
    copy_share = float((fake_distance < copy_threshold).float().mean())
    if ratio < MEMORISATION_RATIO or copy_share > COPY_SHARE:
        verdict = "memorising"
    elif ratio > FAR_RATIO:
        verdict = "far from data"
    else:
        verdict = "ok"
    return {
        "verdict": verdict,
        "fake_nn_median": float(fake_distance.median()),
        "held_out_nn_median": float(held_out_distance.median()),
        "ratio": ratio,
        "copy_threshold": copy_threshold,
        "copy_share": copy_share,
        "n_pool": int(pool_index.numel()),
        "n_held_out": int(held_out_index.numel()),
        "nearest_index": pool_index[fake_nearest].tolist(),  # index into ``reference`` per fake
        "held_out_index": held_out_index.tolist(),
        "nearest_distance": fake_distance.tolist(),
        "memorisation_ratio": MEMORISATION_RATIO,
        "far_ratio": FAR_RATIO,
        "max_copy_share": COPY_SHARE,
    }


NEAREST_VERDICT_TEXT = {
    "ok": "",
    "memorising": ": samples copy training images",
    "far from data": ": samples are unlike any training image",
}


def memorisation_indicator(
    measured: Mapping[str, Any] | None,
    *,
    missing: str = "no samples",
    needs: str = "needs samples and reference images",
) -> Indicator:
    """Memorisation (or samples far from the data) from a :func:`nearest_neighbours` result (None: not measured)."""
    name = "Memorisation / fidelity"
    if measured is None:
        return not_run_indicator(name, missing, needs)
    observation = (
        f"median nearest-training-image distance of samples {measured['fake_nn_median']:.3f} vs "
        f"{measured['held_out_nn_median']:.3f} for held-out reals (ratio {measured['ratio']:.2f}); "
        f"{measured['copy_share']:.0%} of samples closer than 95% of held-out reals"
        + NEAREST_VERDICT_TEXT[measured["verdict"]]
    )
    bounds = f"[{measured['memorisation_ratio']}, {measured['far_ratio']}]"
    rule = (
        f"ratio of median nearest-neighbour distances (samples / {measured['n_held_out']} held-out reals, "
        f"against {measured['n_pool']} reference images) in {bounds} "
        f"and near-copy share <= {measured['max_copy_share']:.0%}"
    )
    status = PASS if measured["verdict"] == "ok" else WARN
    threshold = f"{bounds}, <= {measured['max_copy_share']:.0%}"
    return Indicator(name, status, observation, rule, threshold, data={"verdict": measured["verdict"]})


# ----------------------------------------------------------------------------------------------
# fidelity: can a simple classifier tell samples from reals?
# ----------------------------------------------------------------------------------------------
FIDELITY_PASS = 0.75  # cross-validated accuracy at or below this: coarse statistics match
FIDELITY_FAIL = 0.9  # above this: samples are trivially told apart from real images
FIDELITY_MIN_SAMPLES = 64  # per side; with fewer, ~200 features make the accuracy a coin toss


def coarse_statistics(images: torch.Tensor) -> torch.Tensor:
    """8x8 average-pooled pixels plus per-channel mean and std: layout and colour, not texture.

    Texture (blur, noise) is left out on purpose: a blurry but otherwise right 32x32 GAN sample
    would be told apart by texture alone, which says little about whether it learnt the data.
    """
    x = _check_images(images, "images")
    pooled = F.adaptive_avg_pool2d(x, FEATURE_SIDE).flatten(1)
    return torch.cat([pooled, x.mean((2, 3)), x.std((2, 3))], 1)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression by Newton's method: exact, fast at ~200 features, no optimizer."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    penalty = torch.full((xb.shape[1],), 2 * weight_decay, dtype=x.dtype)
    penalty[-1] = 0.0  # the bias is not shrunk
    w = torch.zeros(xb.shape[1], dtype=x.dtype)
    for _ in range(100):
        p = torch.sigmoid(xb @ w)
        grad = xb.T @ (p - y) / len(y) + penalty * w
        hess = (xb.T * (p * (1 - p))) @ xb / len(y) + torch.diag(penalty) + 1e-9 * torch.eye(len(w), dtype=x.dtype)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-8:
            break
    return w[:-1], w[-1:]


def fidelity(
    fake: torch.Tensor, real: torch.Tensor, *, folds: int = 4, weight_decay: float = 1e-2, seed: int = 0
) -> dict[str, Any]:
    """Classifier two-sample test (Lopez-Paz & Oquab, 2017) on coarse statistics.

    An L2-regularised logistic regression learns to tell ``fake`` from as many ``real`` images,
    scored by ``folds``-fold cross-validated accuracy: about 0.5 when samples match the reals'
    coarse layout and colour, near 1.0 for samples that do not (an undertrained generator's
    coloured noise). Checked on CIFAR-10 horses (256 vs 256): held-out reals 0.49, reals blurred 5x5
    0.58, reals at half contrast 0.92, a generator after 30 epochs 0.94. Passing says nothing about fine detail:
    only FID (Inception features) measures that.
    """
    fake_images = _check_images(fake, "fake")
    real_pool = _check_images(real, "real")
    n_fake, n_real = fake_images.shape[0], min(fake_images.shape[0], real_pool.shape[0])
    if n_real < FIDELITY_MIN_SAMPLES:
        raise ValueError(
            f"the classifier test needs at least {FIDELITY_MIN_SAMPLES} fake and real images, "
            f"got {n_fake} and {real_pool.shape[0]}"
        )
    real_images = real_pool[_pick(real_pool.shape[0], n_real, seed + 1)]
    x = torch.cat([coarse_statistics(fake_images), coarse_statistics(real_images)]).double()
    y = torch.cat([torch.ones(n_fake), torch.zeros(n_real)]).double()  # 1: fake
    perm = _pick(len(x), len(x), seed)
    x, y = x[perm], y[perm]
    fold = torch.arange(len(x)) % folds
    correct = 0
    for k in range(folds):
        test = fold == k
        mu, sd = x[~test].mean(0), x[~test].std(0).clamp_min(1e-6)
        xtr, xte = (x[~test] - mu) / sd, (x[test] - mu) / sd
        w, b = _fit_logistic(xtr, y[~test], weight_decay)
        correct += int(((xte @ w + b > 0).double() == y[test]).sum())
    accuracy = correct / len(x)
    if accuracy <= FIDELITY_PASS:
        verdict = "match"
    else:
        verdict = "distinguishable" if accuracy <= FIDELITY_FAIL else "unlike data"
    return {
        "accuracy": accuracy,
        "verdict": verdict,
        "n_fake": int(n_fake),
        "n_real": n_real,
        "folds": folds,
        "pass_at_most": FIDELITY_PASS,
        "fail_above": FIDELITY_FAIL,
    }


FIDELITY_STATUS = {"match": PASS, "distinguishable": WARN, "unlike data": FAIL}


def fidelity_indicator(measured: Mapping[str, Any] | None, *, missing: str = "no samples") -> Indicator:
    """The classifier two-sample test from a :func:`fidelity` result (None: not run, because of ``missing``)."""
    name = "Fidelity (classifier test)"
    if measured is None:
        return not_run_indicator(name, missing, f"needs >= {FIDELITY_MIN_SAMPLES} samples and reference images")
    accuracy = measured["accuracy"]
    observation = (
        f"a linear classifier on coarse statistics tells {measured['n_fake']} samples from "
        f"{measured['n_real']} reals with {accuracy:.1%} cross-validated accuracy (50% = indistinguishable)"
    )
    rule = (
        f"{measured['folds']}-fold accuracy of logistic regression on {FEATURE_SIDE}x{FEATURE_SIDE} pooled pixels + "
        f"channel mean/std (texture left out, so blur alone does not fail)"
    )
    threshold = f"<= {FIDELITY_PASS:.0%} pass, > {FIDELITY_FAIL:.0%} fail"
    status = FIDELITY_STATUS.get(measured["verdict"], FAIL)
    return Indicator(name, status, observation, rule, threshold, data={"accuracy": accuracy})


# ----------------------------------------------------------------------------------------------
# critic health from the metric series
# ----------------------------------------------------------------------------------------------
CLIP_SATURATION_LIMIT = 0.5  # share of critic weights at +-clip
OSCILLATION_LIMIT = 1.0  # std / |mean| of D loss over the last 20% of epochs
DROP_RANGE_SHARE = 0.5  # a drop must exceed this share of the W estimate's robust range


def series_column(series: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """One metric of ``series`` as float64, all NaN when it was not logged."""
    return np.asarray(series.get(key, np.full(len(series["epoch"]), np.nan)), dtype=np.float64)


def wasserstein_estimate(series: Mapping[str, np.ndarray]) -> np.ndarray:
    """The logged W estimate; -D loss (the same quantity by definition) when none was logged."""
    w = series_column(series, "wasserstein_estimate")
    return w if np.isfinite(w).any() else -series_column(series, "d_loss")


def _tail(x: np.ndarray, share: float) -> np.ndarray:
    k = max(1, int(math.ceil(len(x) * share)))
    return x[-k:]


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values, ignoring NaN (NaN only where the window has none)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(len(x))
    lo = np.maximum(idx + 1 - window, 0)
    count = counts[idx + 1] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[idx + 1] - sums[lo]) / np.maximum(count, 1), np.nan)


def smoothing_window(n: int) -> int:
    return max(5, n // 200)


def w_drops(epochs: np.ndarray, w: np.ndarray) -> tuple[list[int], dict[str, float]]:
    """Epochs where the smoothed W estimate falls suddenly.

    The WassersteinGAN authors read a falling estimate as the critic losing its grip (not trained
    to optimality). A drop is a fall of the trailing mean over one window (0.5% of the run, at
    least 5 epochs) larger than both ``DROP_RANGE_SHARE`` of the estimate's robust range
    (5th-95th percentile of the smoothed curve) and 6 noise standard errors, so pure noise and
    slow trends do not count. Consecutive drop epochs are one event.
    """
    win = smoothing_window(len(w))
    smoothed = rolling_mean(w, win)
    finite = smoothed[np.isfinite(smoothed)]
    raw = w[np.isfinite(w)]
    if len(finite) < 2 * win or len(raw) < 3:
        return [], {"window": win, "min_drop": float("nan")}
    spread = float(np.percentile(finite, 95) - np.percentile(finite, 5))
    noise = float(np.median(np.abs(np.diff(raw) - np.median(np.diff(raw)))) * 1.4826 / math.sqrt(2))
    min_drop = max(DROP_RANGE_SHARE * spread, 6 * noise / math.sqrt(win), 1e-12)
    fall = np.full(len(smoothed), np.nan)
    fall[win:] = smoothed[:-win] - smoothed[win:]
    events: list[int] = []
    t = win
    while t < len(smoothed):
        if np.isfinite(fall[t]) and fall[t] > min_drop:
            events.append(int(epochs[t]))
            t += win
        else:
            t += 1
    return events, {"window": win, "min_drop": min_drop}


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _final_w(w: np.ndarray) -> float:
    """The W estimate at the end of the run: its mean over the last 10% of epochs."""
    return _finite_mean(_tail(w, 0.1))


def numerics_indicator(series: Mapping[str, np.ndarray]) -> Indicator:
    """NaN/Inf in any logged loss: from the first one on, nothing the run logs means anything."""
    epochs = np.asarray(series["epoch"])
    bad = np.zeros(len(epochs), dtype=bool)
    for key in columns.SIGNED:
        if key in series:
            bad |= ~np.isfinite(series_column(series, key))
    n_bad = int(bad.sum())
    first_bad = int(epochs[bad][0]) if n_bad else None
    return Indicator(
        name="Numerical health",
        status=FAIL if n_bad else PASS,
        observation=f"{n_bad} epoch(s) with NaN/Inf losses, first at epoch {first_bad}"
        if n_bad
        else "every logged loss is finite",
        rule="every logged loss finite",
        threshold="0 non-finite rows",
        data={"nan_rows": n_bad, "first_nan_epoch": first_bad},
    )


def w_sign_indicator(series: Mapping[str, np.ndarray]) -> Indicator:
    """Does the critic still score reals above fakes at the end? If not, its loss estimates no distance."""
    w = wasserstein_estimate(series)
    w_final = _final_w(w)
    negative_share = float((w[np.isfinite(w)] < 0).mean()) if np.isfinite(w).any() else float("nan")
    averages = f"W estimate over the last 10% of epochs averages {w_final:+.4g}: the critic"
    if not math.isfinite(w_final):
        status, observation = FAIL, "no finite W estimate in the last 10% of epochs"
    elif w_final > 0:
        status, observation = PASS, f"{averages} scores reals above fakes"
    else:
        status, observation = FAIL, f"{averages} scores fakes ABOVE reals ({negative_share:.0%} of all epochs negative)"
    return Indicator(
        name="Critic separates reals from fakes",
        status=status,
        observation=observation,
        rule="mean W estimate = E[C(real)] - E[C(fake)] over the last 10% of epochs",
        threshold="> 0",
        data={"final_w": w_final, "negative_share": negative_share},
    )


def _drops_text(drops: list[int]) -> str:
    if not drops:
        return "; no sudden drops"
    shown = ", ".join(map(str, drops[:8])) + ("..." if len(drops) > 8 else "")
    return f"; {len(drops)} sudden drop(s), at epoch(s) {shown}"


def w_trend_indicator(series: Mapping[str, np.ndarray]) -> Indicator:
    """Sudden drops of the W estimate (see :func:`w_drops`), with its trend for context."""
    epochs = np.asarray(series["epoch"])
    n = len(epochs)
    w = wasserstein_estimate(series)
    drops, drop_info = w_drops(epochs, w)
    second_half = (np.arange(n) >= n // 2) & np.isfinite(w)
    fit = second_half.sum() >= 3
    slope = float(np.polyfit(epochs[second_half], w[second_half], 1)[0]) * 1000 if fit else float("nan")
    w_start = _finite_mean(w[: max(1, n // 20)])
    observation = (
        f"W estimate {w_start:+.4g} (first 5%) -> {_final_w(w):+.4g} (last 10%), slope over the second half "
        f"{slope:+.3g} per 1000 epochs" + _drops_text(drops)
    )
    return Indicator(
        name="W estimate free of sudden drops",
        status=WARN if drops else PASS,
        observation=observation,
        rule=f"trailing-mean W estimate (window {drop_info['window']} epochs) never falls within one window by "
        f"more than {DROP_RANGE_SHARE:.0%} of its 5-95% range (or 6 noise standard errors)",
        threshold=f"0 drops (min drop {drop_info['min_drop']:.3g})",
        data={"drops": drops, "slope_per_1000": slope, "w_start": w_start},
    )


def clip_indicator(series: Mapping[str, np.ndarray], clip_threshold: float | None = None) -> Indicator:
    """How many critic weights sit at the clip: when most do, the clip rather than learning shapes the critic."""
    name, threshold = "Clip saturation", f"<= {CLIP_SATURATION_LIMIT:.0%}"
    clip = series_column(series, "clip_ratio")
    clip_final = _finite_mean(_tail(clip, 0.1))
    data = {"final_clip_ratio": clip_final}
    if not math.isfinite(clip_final):
        return Indicator(
            name, NOT_RUN, "no clip_ratio logged", "mean clip_ratio over the last 10% of epochs", threshold, data
        )
    saturated = clip_final > CLIP_SATURATION_LIMIT
    where = " of the critic's weights at " + (f"+-{clip_threshold:g}" if clip_threshold else "the clip")
    observation = f"{clip_final:.1%}{where} over the last 10% of epochs (max {np.nanmax(clip):.1%})" + (
        "; the clip, not learning, shapes the critic" if saturated else ""
    )
    rule = "mean clip_ratio (share of critic weights at +-clip) over the last 10% of epochs"
    return Indicator(name, WARN if saturated else PASS, observation, rule, threshold, data)


def oscillation_indicator(series: Mapping[str, np.ndarray]) -> Indicator:
    """Epoch-to-epoch swing of the D loss at the end of the run, against its mean (the critic's real/fake gap)."""
    name, rule, threshold = (
        "Loss oscillation",
        "std / |mean| of D loss over the last 20% of epochs",
        f"<= {OSCILLATION_LIMIT:g}",
    )
    d_tail = _tail(series_column(series, "d_loss"), 0.2)
    d_tail = d_tail[np.isfinite(d_tail)]
    if len(d_tail) < 3:
        observation = "fewer than 3 finite D losses in the last 20% of epochs"
        return Indicator(name, NOT_RUN, observation, rule, threshold, {"swing": float("nan")})
    mean, std = float(d_tail.mean()), float(d_tail.std())
    swing = std / max(abs(mean), 1e-12)
    observation = f"D loss over the last 20% of epochs: mean {mean:+.4g}, std {std:.4g} (swing {swing:.2f})" + (
        "; the epoch-to-epoch swing is larger than the critic's real/fake gap" if swing > OSCILLATION_LIMIT else ""
    )
    return Indicator(name, WARN if swing > OSCILLATION_LIMIT else PASS, observation, rule, threshold, {"swing": swing})


def critic_health(series: Mapping[str, np.ndarray], clip_threshold: float | None = None) -> dict[str, Indicator]:
    """The indicators read off metrics.jsonl alone, by report key, in the report's order.

    ``series`` maps metric names to equal-length arrays (NaN where missing), ``epoch`` included.
    A new series indicator is one more entry here; the report shows whatever this returns.
    """
    return {
        "numerics": numerics_indicator(series),
        "w_sign": w_sign_indicator(series),
        "w_trend": w_trend_indicator(series),
        "clip": clip_indicator(series, clip_threshold),
        "oscillation": oscillation_indicator(series),
    }
