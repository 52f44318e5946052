"""Calibrate the report's FID/KID ratings (wgan.report.quality) on a run folder's real images.

``python bench/quality_calibration.py RUN_DIR [--n 500] [--json OUT]``

Measures, against the run's reference reals, at ``n`` images each (the counts the report uses):
the real-vs-real floor (held-out reals), held-out reals degraded in known ways (a slight and a
strong blur, a 2x down-and-up resize, JPEG at quality 20, additive noise), a collapsed set (10
held-out images repeated), and uniform noise. The FID of each as a multiple of the floor is the
scale the ratings are stated on: docs/metrics.md records the numbers and the thresholds chosen.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wgan.fid import scores as metrics  # noqa: E402

Degrade = Callable[[Image.Image], Image.Image]


def _jpeg(image: Image.Image, quality: int = 20) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _down_up(image: Image.Image) -> Image.Image:
    side = image.size[0]
    return image.resize((side // 2, side // 2), Image.BILINEAR).resize((side, side), Image.BILINEAR)


DEGRADATIONS: dict[str, Degrade] = {
    "blur 0.5 px": lambda im: im.filter(ImageFilter.GaussianBlur(0.5)),
    "blur 1 px": lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
    "2x down-up resize": _down_up,
    "JPEG quality 20": _jpeg,
}


def _as_images(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _degraded(uint8: np.ndarray, degrade: Degrade) -> torch.Tensor:
    return _as_images(np.stack([np.asarray(degrade(Image.fromarray(im))) for im in uint8]))


def calibrate(run_dir: Path, n: int) -> dict[str, dict[str, float]]:
    net = metrics.load_feature_network()
    reference = metrics.reference_features(run_dir, net)
    held_out = metrics.reference_features(run_dir, net, held_out=True)
    with np.load(run_dir / "held_out.npz") as npz:
        held_uint8 = npz["images"][:n]
    rng = np.random.default_rng(0)
    sets: dict[str, Callable[[], torch.Tensor]] = {
        **{name: (lambda d=d: _degraded(held_uint8, d)) for name, d in DEGRADATIONS.items()},
        "noise sigma 0.1": lambda: (_as_images(held_uint8) + 0.1 * torch.randn(n, 3, 32, 32)).clamp(-1, 1),
        "collapsed (10 images repeated)": lambda: _as_images(held_uint8[np.resize(np.arange(10), n)]),
        "uniform noise": lambda: torch.from_numpy(rng.uniform(-1, 1, (n, 3, 32, 32))).float(),
    }
    floor = metrics.real_vs_real(reference, held_out.features, n_fake=n)
    out = {"real-vs-real floor": {"fid": floor.fid, "kid": floor.kid_mean, "kid_std": floor.kid_std}}
    for name, make in sets.items():
        started = time.perf_counter()
        result = metrics.evaluate(make(), reference, net, "both")
        out[name] = {"fid": result.fid, "kid": result.kid_mean, "kid_std": result.kid_std}
        print(
            f"{name}: FID {result.fid:.1f} ({result.fid / floor.fid:.2f}x floor), KID {result.kid_mean:.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    for values in out.values():
        values["fid_ratio"] = values["fid"] / floor.fid
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n", type=int, default=500, help="images per set (the report's evaluation count)")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()
    result = calibrate(args.run_dir, args.n)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
