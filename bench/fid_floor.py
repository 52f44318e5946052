"""What FID/KID read on real images: the floor (real vs real) and clearly wrong sets, plus the cost.

    python bench/fid_floor.py --train DIR --test DIR [--threads 2] [--features-cache DIR]

``--train``/``--test``: two disjoint sets of real images (any source ``wgan.data.load_images``
reads, e.g. the CIFAR-10 horses as JPEG folders). Prints one JSON object: seconds per image
through the network at 1 and 2 threads, then FID and KID (mean, std over 100 subsets) for

- train vs test at n = 500 and n = 1000 each (the floor a perfect generator would score),
- 1000 train vs 500 test (the counts of a 500-sample evaluation against a 1000-image reference),
- 1000 train vs 500 uniform-noise images, 500 flat random colours, and 500 "collapsed" test
  images (10 images repeated 50 times).

Features are cached in ``--features-cache`` (default /tmp/wgan-fid-floor) so a rerun only
redoes the maths. Not collected by pytest (no ``test_`` prefix): it takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wgan.data import load_images
from wgan.fid import scores as M


def seconds_per_image(net: M.FeatureNetwork, threads: int, n: int = 32) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(n, 3, 32, 32) * 2 - 1
        M.features(x[:4], net)  # warm-up (oneDNN picks its kernels)
        started = time.perf_counter()
        M.features(x, net, batch_size=n)
        return (time.perf_counter() - started) / n
    finally:
        torch.set_num_threads(before)


def draw(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def cached_features(name: str, images: torch.Tensor, net: M.FeatureNetwork, cache: Path) -> torch.Tensor:
    path = cache / f"{name}-{images.shape[0]}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    started = time.perf_counter()
    feats = M.features(images, net)
    print(f"{name}: {images.shape[0]} images in {time.perf_counter() - started:.0f} s", flush=True)
    torch.save(feats, path)
    return feats


def both(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    started = time.perf_counter()
    fid = M.fid_from_features(real, fake)
    t_fid = time.perf_counter() - started
    started = time.perf_counter()
    kid_mean, kid_std = M.kid_from_features(real, fake)
    return {
        "n_real": real.shape[0],
        "n_fake": fake.shape[0],
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "fid_seconds": t_fid,
        "kid_seconds": time.perf_counter() - started,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features-cache", default="/tmp/wgan-fid-floor")
    ap.add_argument("--weights", default=None, help="FID network file [default: the fetched one]")
    args = ap.parse_args()
    cache = Path(args.features_cache)
    cache.mkdir(parents=True, exist_ok=True)

    net = M.load_feature_network(args.weights)
    out: dict[str, object] = {
        "network": net.kind,
        "torch": torch.__version__,
        "seconds_per_image": {t: seconds_per_image(net, t) for t in (1, 2)},
    }
    print(json.dumps(out), flush=True)
    torch.set_num_threads(args.threads)

    train = draw(load_images(args.train), 1000, 0)
    test = draw(load_images(args.test), 1000, 1)
    g = torch.Generator().manual_seed(2)
    noise = torch.rand(500, 3, 32, 32, generator=g) * 2 - 1
    flat = (torch.rand(500, 3, 1, 1, generator=g) * 2 - 1).expand(-1, -1, 32, 32).contiguous()

    f_train = cached_features("train", train, net, cache)
    f_test = cached_features("test", test, net, cache)
    f_noise = cached_features("noise", noise, net, cache)
    f_flat = cached_features("flat", flat, net, cache)
    f_collapsed = f_test[:10].repeat(50, 1)  # the network is per-image: features of repeated images repeat

    rows = {}
    for n in (500, 1000):
        rows[f"train{n}_vs_test{n}"] = both(f_train[:n], f_test[:n])
    rows["train1000_vs_test500"] = both(f_train, f_test[:500])
    rows["train1000_vs_noise500"] = both(f_train, f_noise)
    rows["train1000_vs_flat500"] = both(f_train, f_flat)
    rows["train1000_vs_collapsed500"] = both(f_train, f_collapsed)
    out["results"] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
