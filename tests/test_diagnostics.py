"""Mode collapse, memorisation and critic-health diagnostics on constructed data.

The images are structured (gradient backgrounds, soft blobs, a rectangle, each with its own
colours and places), not pixel noise: on white noise every pair of images is far apart and any
duplicate detector looks perfect.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wgan.report import diagnostics as dg


def structured_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """[n, 3, size, size] in [-1, 1]: a two-colour gradient, 3 Gaussian blobs and a rectangle each."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        angle = u(1) * 2 * math.pi
        t = torch.cos(angle) * xx + torch.sin(angle) * yy
        t = (t - t.min()) / (t.max() - t.min())
        c0, c1 = u(3, 1, 1) * 2 - 1, u(3, 1, 1) * 2 - 1
        img = c0 * (1 - t) + c1 * t
        for _ in range(3):
            cy, cx, r = u(1), u(1), 0.06 + 0.2 * u(1)
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
            img = img * (1 - blob) + (u(3, 1, 1) * 2 - 1) * blob
        y0, x0 = (u(2) * (size - 8)).long().tolist()
        h, w = (4 + u(2) * 10).long().tolist()
        img[:, y0 : y0 + h, x0 : x0 + w] = u(3, 1, 1) * 2 - 1
        out[i] = img
    return out.clamp(-1, 1)


def perturbed(base: torch.Tensor, idx: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = base[idx]
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)


@pytest.fixture(scope="module")
def reals() -> torch.Tensor:
    return structured_images(300, seed=1)


def test_structured_images_are_not_trivially_distinct(reals: torch.Tensor) -> None:
    # The data must be hard enough to matter: some real pairs are much closer than the average pair.
    f = dg.image_features(reals[:100])
    d = dg.pairwise_distances(f, f)
    d.fill_diagonal_(float("inf"))
    nn = d.min(1).values
    mean_pair = d[torch.isfinite(d)].mean()
    assert float(nn.min()) < 0.5 * float(mean_pair)


def test_distinct_images_are_not_collapsed(reals: torch.Tensor) -> None:
    fake = structured_images(25, seed=7)
    out = dg.mode_collapse(fake, reals)
    assert out.collapsed is False, out.reasons
    assert out.duplicated_sample_fraction <= 0.12
    assert out.n_clusters >= 23
    assert 0.8 < out.diversity_ratio < 1.25
    for key in ("duplicate_fraction", "diversity_ratio", "n_clusters", "threshold", "threshold_percentile"):
        assert key in out.to_dict()


def test_few_images_repeated_are_collapsed(reals: torch.Tensor) -> None:
    base = structured_images(5, seed=11)
    fake = perturbed(base, torch.arange(25) % 5, noise=0.04, seed=3)  # 5 images, 5 noisy copies each
    out = dg.mode_collapse(fake, reals)
    assert out.collapsed is True
    assert out.duplicated_sample_fraction == 1.0
    assert out.n_clusters == 5
    assert out.largest_cluster == 5
    assert out.duplicate_fraction == 5 * 10 / 300  # 5 groups x C(5,2) pairs of C(25,2): a count ratio


def test_partly_collapsed_set_is_flagged_although_mean_distance_looks_normal(reals: torch.Tensor) -> None:
    # 13 distinct images plus 3 images repeated 4 times each: the mean pairwise distance stays within
    # 15% of the reals', so a mean-distance rule alone would pass this set.
    distinct = structured_images(13, seed=21)
    repeated = perturbed(structured_images(3, seed=22), torch.arange(12) % 3, noise=0.04, seed=5)
    fake = torch.cat([distinct, repeated])[torch.randperm(25, generator=torch.Generator().manual_seed(0))]
    out = dg.mode_collapse(fake, reals)
    assert abs(out.diversity_ratio - 1) < 0.15, out.diversity_ratio
    assert out.diversity_ratio >= dg.MIN_DIVERSITY_RATIO  # the mean-distance rule does not fire...
    assert out.collapsed is True  # ...the near-duplicate count does
    # the 12 copies, plus at most a coincidental pair among the distinct ones (reals have ~5%)
    assert 12 / 25 <= out.duplicated_sample_fraction <= 14 / 25
    assert 13 + 3 - 1 <= out.n_clusters <= 13 + 3


def test_single_mode_is_collapsed_by_diversity(reals: torch.Tensor) -> None:
    fake = perturbed(structured_images(1, seed=31), torch.zeros(64, dtype=torch.long), noise=0.02, seed=1)
    out = dg.mode_collapse(fake, reals)
    assert out.collapsed is True
    assert out.diversity_ratio < 0.2
    assert out.n_clusters == 1


def test_low_contrast_diverse_set_is_not_collapsed(reals: torch.Tensor) -> None:
    # Early GAN samples are washed out; raw pixel L2 would call them all duplicates of one another.
    fake = 0.4 * structured_images(256, seed=41)
    out = dg.mode_collapse(fake, reals)
    assert out.collapsed is False, out.reasons
    assert out.pixel_diversity_ratio < 0.5  # the raw-pixel ratio does see the low contrast
    assert out.diversity_ratio > 0.85


def test_256_samples_calibrate_on_the_same_count(reals: torch.Tensor) -> None:
    fake = structured_images(256, seed=51)
    out = dg.mode_collapse(fake, reals)
    assert out.n_real == 256 and out.n_samples == 256
    assert out.collapsed is False
    # by construction about 5% of the calibration reals have a neighbour under the threshold
    assert 0.0 < out.real_duplicated_sample_fraction <= 0.07


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((4, 3, 8, 8), dtype=np.float32), TypeError),
        (torch.zeros(4, 8, 8), ValueError),
        (torch.zeros(1, 3, 8, 8), ValueError),
        (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), TypeError),
        (torch.full((4, 3, 8, 8), float("nan")), ValueError),
    ],
)
def test_mode_collapse_rejects_bad_input(bad, err, reals: torch.Tensor) -> None:
    with pytest.raises(err, match="fake|images"):
        dg.mode_collapse(bad, reals)


def test_nearest_neighbours_sees_copies_and_new_images(reals: torch.Tensor) -> None:
    new = dg.nearest_neighbours(structured_images(64, seed=61), reals)
    assert new["verdict"] == "ok", new
    assert 0.7 < new["ratio"] < 1.4
    copies = perturbed(reals, torch.arange(64), noise=0.02, seed=2)
    mem = dg.nearest_neighbours(copies, reals)
    assert mem["verdict"] == "memorising"
    assert mem["ratio"] < 0.5
    # a copy of a pool image finds that very image as its nearest neighbour
    in_pool = [i for i in range(64) if i not in set(mem["held_out_index"])]
    assert len(in_pool) > 30
    assert all(mem["nearest_index"][i] == i for i in in_pool)


def _series(n: int, w: np.ndarray, **extra: np.ndarray) -> dict[str, np.ndarray]:
    epochs = np.arange(1, n + 1)
    s = {
        "epoch": epochs,
        "wasserstein_estimate": w,
        "d_loss": -w,
        "g_loss": np.zeros(n),
        "d_loss_real": np.zeros(n),
        "d_loss_fake": np.zeros(n),
        "clip_ratio": np.full(n, 0.1),
    }
    s.update(extra)
    return s


def test_critic_health_on_a_healthy_series() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    w = 2.0 * np.exp(-np.arange(n) / 800) + 0.5 + 0.05 * rng.standard_normal(n)
    out = dg.critic_health(_series(n, w), clip_threshold=0.01)
    assert {k: v["status"] for k, v in out.items()} == {
        "numerics": "PASS",
        "w_sign": "PASS",
        "w_trend": "PASS",
        "clip": "PASS",
        "oscillation": "PASS",
    }
    assert out["w_sign"]["final_w"] == w[-200:].mean()  # the same numpy mean of the last 10%
    for ind in out.values():
        assert ind["rule"] and ind["threshold"] and ind["observation"]


def test_critic_health_flags_negative_w_drops_saturation_oscillation_and_nan() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    w = np.full(n, 1.5) + 0.02 * rng.standard_normal(n)
    w[1200:] = -0.4 + 0.02 * rng.standard_normal(n - 1200)  # sudden drop, then fakes above reals
    clip = np.linspace(0.1, 0.9, n)
    out = dg.critic_health(_series(n, w, clip_ratio=clip), clip_threshold=0.01)
    assert out["w_sign"]["status"] == "FAIL" and "ABOVE reals" in out["w_sign"]["observation"]
    assert out["w_trend"]["status"] == "WARN"
    assert len(out["w_trend"]["drops"]) == 1 and 1200 <= out["w_trend"]["drops"][0] <= 1220
    assert out["clip"]["status"] == "WARN"

    noisy = 0.1 + rng.standard_normal(n)
    assert dg.critic_health(_series(n, noisy))["oscillation"]["status"] == "WARN"
    assert dg.critic_health(_series(n, noisy))["w_trend"]["drops"] == []  # noise alone is no drop

    w_nan = w.copy()
    w_nan[1500] = np.nan
    s = _series(n, w_nan)
    s["d_loss"] = -w_nan
    out = dg.critic_health(s)
    assert out["numerics"]["status"] == "FAIL"
    assert out["numerics"]["first_nan_epoch"] == 1501 and out["numerics"]["nan_rows"] == 1


def test_slow_trend_is_not_a_sudden_drop() -> None:
    n = 12000
    w = np.linspace(0.0, -5.5, n) + 0.05 * np.random.default_rng(2).standard_normal(n)
    out = dg.critic_health(_series(n, w))
    assert out["w_trend"]["drops"] == []
    assert out["w_sign"]["status"] == "FAIL"


def test_rolling_mean_ignores_nan() -> None:
    x = np.array([1.0, np.nan, 3.0, 5.0, np.nan, np.nan, np.nan])
    got = dg.rolling_mean(x, 2)
    np.testing.assert_allclose(got[:5], [1.0, 1.0, 3.0, 4.0, 5.0])
    assert np.isnan(got[5]) and np.isnan(got[6])


def test_fidelity_classifier_matches_reals_and_rejects_blotches(reals: torch.Tensor) -> None:
    same = dg.fidelity(structured_images(200, seed=71), reals)
    assert same["verdict"] == "match" and same["accuracy"] <= dg.FIDELITY_PASS, same
    # what an undertrained generator draws: dark, low-contrast colour blotches and pixel noise
    g = torch.Generator().manual_seed(3)
    blotches = torch.nn.functional.interpolate(
        torch.randn(200, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False
    )
    undertrained = (-0.4 + 0.2 * blotches + 0.15 * torch.randn(200, 3, 32, 32, generator=g)).clamp(-1, 1)
    noise = dg.fidelity(undertrained, reals)
    assert noise["verdict"] == "unlike data" and noise["accuracy"] > dg.FIDELITY_FAIL, noise
    assert noise["n_fake"] == 200 and noise["n_real"] == 200


def test_fidelity_ignores_blur(reals: torch.Tensor) -> None:
    # texture is left out on purpose: a blurry sample of the right scene is not "unlike the data"
    x = structured_images(200, seed=81)
    k = torch.ones(3, 1, 5, 5) / 25
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=3)
    assert dg.fidelity(blurred, reals)["accuracy"] <= dg.FIDELITY_PASS
