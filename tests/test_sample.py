"""The sampler (wgan.sample): which checkpoint, which z, the images and grids, the export and the
README's loading snippet, EMA weights, the latent walk, and bad input.

One short real training (module fixture) makes the checkpoints; best.pt and the EMA checkpoint are
real checkpoints of it with an evaluation record or ``generator_ema`` added, saved with torch.save.
Most cases run the CLI in-process (click's runner); the ones about the process itself (no
traceback, the README snippet, safetensors missing) run real subprocesses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, invoke, run_subprocess, snapshot, subprocess_env, train_args, write_config, write_images
from PIL import Image

from wgan.config import WGANConfig
from wgan.models.eager import Generator
from wgan.run.images import tile, to_uint8
from wgan.sample import EXPORT_FORMAT, cli, seed_z, slerp

SIDE, Z_DIM = 16, 8  # tests/tiny.py
CELL = SIDE + 2  # an image and the grid's 2-pixel padding


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-epoch run with checkpoints at epochs 2 and 4 (generator lr 1e-3, so the two differ clearly)."""
    root = tmp_path_factory.mktemp("sample")
    data, config = write_images(root / "imgs", n=40), write_config(root / "tiny.json", lr_generator=1e-3)
    out = root / "run"
    result = invoke(train_args(config, data, out, "--no-report", epochs=4, checkpoint_every=2))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def run_with_best(run: Path) -> Path:
    """A copy of the run whose checkpoints/best.pt is its epoch-2 checkpoint with an evaluation record."""
    copy = run.parent / "run_with_best"
    shutil.copytree(run, copy)
    state = torch.load(copy / "checkpoints" / "epoch_00002.pt", weights_only=True)
    torch.save(
        {**state, "evaluation": {"metric": "kid", "value": 0.05, "kid": 0.05, "kid_std": 0.01, "n_samples": 100}},
        copy / "checkpoints" / "best.pt",
    )
    return copy


@pytest.fixture(scope="module")
def ema_checkpoint(run: Path) -> Path:
    """last.pt plus a ``generator_ema``: the parameters perturbed, the batch-norm buffers copied."""
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    names = {name for name, _ in Generator(WGANConfig.from_dict(state["config"])).named_parameters()}
    noise = torch.Generator().manual_seed(7)
    state["generator_ema"] = {
        k: v + 0.05 * torch.randn(v.shape, generator=noise) if k in names else v.clone()
        for k, v in state["generator"].items()
    }
    path = run.parent / "ema.pt"
    torch.save(state, path)
    return path


def sample(*args: object) -> None:
    """The sampler in-process; it must succeed."""
    result = invoke([str(a) for a in args], command=cli)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def stacked(folder: Path) -> np.ndarray:
    return np.stack(list(pngs(folder).values()))


def generated(checkpoint: Path, z: torch.Tensor, key: str = "generator") -> np.ndarray:
    """What the images must be, computed here: the checkpoint's generator in eval mode on ``z``."""
    state = torch.load(checkpoint, weights_only=True)
    generator = Generator(WGANConfig.from_dict(state["config"]))
    generator.load_state_dict(state[key])
    generator.eval()
    with torch.no_grad():
        return to_uint8(generator(z))


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal pixels, up to the float rounding of another batch size or process.

    The generator's kernels may sum in another order at another batch size or thread count (here
    ~1e-8, see README); a pixel = round(127.5 (x + 1)) moves by one level only when its value sits
    within 127.5 x 1e-8 of a rounding boundary, so one level on a few pixels in 10,000 at most.
    """
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= max(1, a.size // 10_000), (diff.max(), np.count_nonzero(diff))


def assert_different_images(a: np.ndarray, b: np.ndarray) -> None:
    """Clearly other images: on average more than one level apart (not rounding)."""
    assert np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() > 1.0


# --- images and grids ----------------------------------------------------------------------------


def test_grid_and_images_in_a_real_process(tmp_path: Path, run: Path) -> None:
    proc = run_subprocess(
        [
            str(run),
            "--n",
            "10",
            "--seed",
            "1",
            "--grid",
            "grid.png",
            "--scale",
            "3",
            "--out",
            "imgs",
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        module="wgan.sample",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines() == ["images: imgs (10 PNGs)", "grid: grid.png (10 images)"]
    images = stacked(tmp_path / "imgs")
    assert sorted(pngs(tmp_path / "imgs")) == [f"image_{i:05d}" for i in range(10)]
    assert images.shape == (10, SIDE, SIDE, 3) and images.dtype == np.uint8
    assert_same_images(images, generated(run / "checkpoints" / "last.pt", seed_z(1, 10, Z_DIM)))
    assert images.min() < 100 and images.max() > 155  # tanh's [-1, 1] spread over the 8 bits, not squashed
    with Image.open(tmp_path / "grid.png") as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (3 * (4 * CELL + 2), 3 * (3 * CELL + 2))  # 10 images: 4 per row, 3 rows; scale 3
        grid = np.asarray(img)
    expected = tile(images).repeat(3, axis=0).repeat(3, axis=1)  # the same images, white padding
    assert np.array_equal(grid, expected)


def test_default_grid_is_5x5_and_nrow_sets_the_columns(tmp_path: Path, run: Path) -> None:
    sample(run, "--grid", tmp_path / "default.png")
    sample(run, "--n", 5, "--nrow", 2, "--scale", 1, "--grid", tmp_path / "narrow.png")
    assert Image.open(tmp_path / "default.png").size == (2 * (5 * CELL + 2),) * 2
    assert Image.open(tmp_path / "narrow.png").size == (2 * CELL + 2, 3 * CELL + 2)


def test_the_same_seeds_give_the_same_images(tmp_path: Path, run: Path) -> None:
    for batch_size in (2, 64):
        sample(run, "--seeds", "3-7", "--batch-size", batch_size, "--out", tmp_path / f"seeds_b{batch_size}")
        sample(run, "--n", 10, "--seed", 5, "--batch-size", batch_size, "--out", tmp_path / f"batch_b{batch_size}")
    sample(run, "--seeds", "4-4", "--out", tmp_path / "four")
    seeds = pngs(tmp_path / "seeds_b2")
    assert sorted(seeds) == [f"seed_{s:05d}" for s in range(3, 8)]
    assert_same_images(stacked(tmp_path / "seeds_b2"), stacked(tmp_path / "seeds_b64"))
    assert_same_images(stacked(tmp_path / "batch_b2"), stacked(tmp_path / "batch_b64"))
    assert_same_images(pngs(tmp_path / "four")["seed_00004"], seeds["seed_00004"])
    assert_same_images(seeds["seed_00004"], generated(run / "checkpoints" / "last.pt", seed_z(4, 1, Z_DIM))[0])
    assert_different_images(seeds["seed_00003"], seeds["seed_00004"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_s_images(tmp_path: Path, run: Path) -> None:
    """z is drawn on the CPU whatever the device; the generator runs in fp32 (no TF32) on CUDA."""
    for device in ("cpu", "cuda"):
        sample(run, "--seeds", "0-7", "--device", device, "--out", tmp_path / device)
    assert_same_images(stacked(tmp_path / "cpu"), stacked(tmp_path / "cuda"))


def test_checkpoint_picks_last_best_or_an_epoch(tmp_path: Path, run_with_best: Path) -> None:
    checkpoints = run_with_best / "checkpoints"
    picks = {
        "default": [],
        "last": ["--checkpoint", "last"],
        "4": ["--checkpoint", "4"],
        "2": ["--checkpoint", "2"],
        "best": ["--checkpoint", "best"],
    }
    for name, args in picks.items():
        sample(run_with_best, *args, "--seeds", "0-3", "--out", tmp_path / name)
    for name, path in (("file_last", checkpoints / "last.pt"), ("file_2", checkpoints / "epoch_00002.pt")):
        sample(path, "--seeds", "0-3", "--out", tmp_path / name)
    images = {name: stacked(tmp_path / name) for name in [*picks, "file_last", "file_2"]}
    for same in ("default", "4", "file_last"):
        assert np.array_equal(images[same], images["last"]), same
    for same in ("best", "file_2"):
        assert np.array_equal(images[same], images["2"]), same
    assert_different_images(images["last"], images["2"])
    assert_same_images(
        images["2"], generated(checkpoints / "epoch_00002.pt", torch.cat([seed_z(s, 1, Z_DIM) for s in range(4)]))
    )


# --- export and the README snippets -------------------------------------------------------------


def readme_block(heading: str) -> str:
    """The first ```python block after the README heading ``heading``."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match, heading
    return match[1]


def test_exports_load_with_the_readme_snippets_and_give_the_sampler_s_images(tmp_path: Path, run: Path) -> None:
    sample(run, "--export", tmp_path / "generator.pt", "--n", 16, "--seed", 0, "--out", tmp_path / "sampled")
    sample(run, "--export", tmp_path / "generator.safetensors")
    export = torch.load(tmp_path / "generator.pt", weights_only=True)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert set(export) == {"format", "config", "state_dict", "ema", "epoch"}
    assert export["format"] == EXPORT_FORMAT and export["ema"] is False and export["epoch"] == 4
    assert export["config"] == state["config"]
    assert export["state_dict"].keys() == state["generator"].keys()
    assert all(torch.equal(export["state_dict"][k], v) for k, v in state["generator"].items())

    script = "\n".join(
        [
            readme_block("### Loading an exported generator"),
            "torch.save(images, 'pt_images.pt')",
            readme_block("### Loading an exported generator from safetensors"),
            "torch.save(images, 'st_images.pt')",
            "print(metadata['format'], metadata['ema'])",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [EXPORT_FORMAT, "false"]
    sampled = stacked(tmp_path / "sampled")
    for name in ("pt_images.pt", "st_images.pt"):
        images = torch.load(tmp_path / name, weights_only=True)
        assert images.shape == (16, 3, SIDE, SIDE)
        assert_same_images(to_uint8(images), sampled)


# --- EMA ----------------------------------------------------------------------------------------


def test_ema_weights_by_default_and_raw_on_request(tmp_path: Path, run: Path, ema_checkpoint: Path) -> None:
    for name, args in {"default": [], "ema": ["--ema"], "raw": ["--raw"]}.items():
        sample(ema_checkpoint, *args, "--seeds", "0-3", "--out", tmp_path / name)
    sample(run, "--seeds", "0-3", "--out", tmp_path / "plain")
    sample(ema_checkpoint, "--export", tmp_path / "ema.pt")
    images = {name: stacked(tmp_path / name) for name in ("default", "ema", "raw", "plain")}
    z = torch.cat([seed_z(s, 1, Z_DIM) for s in range(4)])
    assert np.array_equal(images["default"], images["ema"])
    assert_same_images(images["ema"], generated(ema_checkpoint, z, key="generator_ema"))
    assert_different_images(images["ema"], images["raw"])
    assert np.array_equal(images["raw"], images["plain"])  # --raw is the checkpoint's trained generator
    export = torch.load(tmp_path / "ema.pt", weights_only=True)
    ema = torch.load(ema_checkpoint, weights_only=True)["generator_ema"]
    assert export["ema"] is True and all(torch.equal(export["state_dict"][k], v) for k, v in ema.items())


# --- interpolation ------------------------------------------------------------------------------


def test_interpolation_rows_run_from_seed_to_seed(tmp_path: Path, run: Path) -> None:
    sample(
        run,
        "--seeds",
        "2-4",
        "--interpolate",
        "--steps",
        5,
        "--out",
        tmp_path / "walk",
        "--grid",
        tmp_path / "walk.png",
        "--scale",
        1,
    )
    sample(run, "--seeds", "2-4", "--out", tmp_path / "seeds")
    walk, seeds = pngs(tmp_path / "walk"), pngs(tmp_path / "seeds")
    assert sorted(walk) == [f"slerp_{a:05d}_{a + 1:05d}_{j:03d}" for a in (2, 3) for j in range(5)]
    for a in (2, 3):
        assert_same_images(walk[f"slerp_{a:05d}_{a + 1:05d}_000"], seeds[f"seed_{a:05d}"])
        assert_same_images(walk[f"slerp_{a:05d}_{a + 1:05d}_004"], seeds[f"seed_{a + 1:05d}"])
        assert_different_images(walk[f"slerp_{a:05d}_{a + 1:05d}_002"], seeds[f"seed_{a:05d}"])
    assert Image.open(tmp_path / "walk.png").size == (5 * CELL + 2, 2 * CELL + 2)  # a row per pair, --steps columns


def test_slerp_keeps_its_endpoints_exactly_and_stays_on_the_sphere() -> None:
    a, b = seed_z(0, 1, 100)[0], seed_z(1, 1, 100)[0]
    b = b * (a.norm() / b.norm())
    t = torch.arange(9, dtype=torch.float64) / 8
    path = slerp(a, b, t)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(9), rtol=1e-6, atol=0)
    assert torch.equal(slerp(a, a, t)[4], a)  # parallel: the straight line, which stays at a


# --- bad input ----------------------------------------------------------------------------------


def _bad_cases(tmp: Path, run: Path, ema: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (arguments, expected text in the one-line error)."""
    (tmp / "corrupt.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    torch.save({"generator": {}}, tmp / "foreign.pt")
    state = torch.load(ema, weights_only=True)
    torch.save({**state, "generator_ema": {"stem.0.weight": torch.zeros(2)}}, tmp / "bad_ema.pt")
    (tmp / "empty_run").mkdir()
    (tmp / "a_file").write_text("x")
    grid = ["--grid", tmp / "g.png"]
    return {
        "missing source": ([tmp / "nowhere", *grid], "no run folder or checkpoint file at"),
        "corrupt checkpoint": ([tmp / "corrupt.pt", *grid], "cannot read checkpoint"),
        "foreign checkpoint": ([tmp / "foreign.pt", *grid], "is not a WGAN checkpoint"),
        "ema weights that do not fit": ([tmp / "bad_ema.pt", *grid], "generator_ema weights do not fit"),
        "run without checkpoint": ([tmp / "empty_run", *grid], "no checkpoint at"),
        "no best.pt": ([run, "--checkpoint", "best", *grid], "has no checkpoints/best.pt"),
        "epoch without checkpoint": ([run, "--checkpoint", "3", *grid], "epochs with one: 2, 4"),
        "bad --checkpoint": ([run, "--checkpoint", "first", *grid], "must be last, best or an epoch"),
        "--checkpoint with a file": (
            [run / "checkpoints" / "last.pt", "--checkpoint", "2", *grid],
            "is a checkpoint file already",
        ),
        "seeds reversed": ([run, "--seeds", "5-2", *grid], "the range is empty"),
        "seeds not a number": ([run, "--seeds", "x", *grid], "--seeds must be A-B"),
        "seeds negative": ([run, "--seeds", "-3", *grid], "--seeds must be A-B"),
        "n 0": ([run, "--n", "0", *grid], "'--n': 0 is not in the range"),
        "seed negative": ([run, "--seed", "-1", *grid], "'--seed'"),
        "seeds with n": ([run, "--seeds", "1-3", "--n", "4", *grid], "exclusive"),
        "grid unwritable": ([run, "--grid", tmp / "a_file" / "g.png"], "cannot write --grid"),
        "grid not png": ([run, "--grid", tmp / "g.jpg"], "ending in .png"),
        "out unwritable": ([run, "--out", tmp / "a_file" / "imgs"], "cannot write --out"),
        "out is a file": ([run, "--out", tmp / "a_file"], "is not a folder"),
        "export unwritable": ([run, "--export", tmp / "a_file" / "g.pt"], "cannot write --export"),
        "ema without ema weights": ([run, "--ema", *grid], "holds no EMA weights"),
        "interpolate without seeds": ([run, "--interpolate", *grid], "at least 2 seeds"),
        "interpolate with one seed": ([run, "--interpolate", "--seeds", "4-4", *grid], "at least 2 seeds"),
        "steps without interpolate": ([run, "--steps", "4", *grid], "only with --interpolate"),
        "nothing to write": ([run], "nothing to write"),
        "bad device": ([run, "--device", "tpu", *grid], "--device"),
        "no source": ([], "Missing argument"),
    }


BAD_NAMES = [
    "missing source",
    "corrupt checkpoint",
    "foreign checkpoint",
    "ema weights that do not fit",
    "run without checkpoint",
    "no best.pt",
    "epoch without checkpoint",
    "bad --checkpoint",
    "--checkpoint with a file",
    "seeds reversed",
    "seeds not a number",
    "seeds negative",
    "n 0",
    "seed negative",
    "seeds with n",
    "grid unwritable",
    "grid not png",
    "out unwritable",
    "out is a file",
    "export unwritable",
    "ema without ema weights",
    "interpolate without seeds",
    "interpolate with one seed",
    "steps without interpolate",
    "nothing to write",
    "bad device",
    "no source",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, run: Path, ema_checkpoint: Path, name: str
) -> None:
    args, expected = _bad_cases(tmp_path, run, ema_checkpoint)[name]
    before, run_before = snapshot(tmp_path), snapshot(run)
    result = invoke([str(a) for a in args], command=cli)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert snapshot(tmp_path) == before and snapshot(run) == run_before


def test_every_bad_case_is_tested(tmp_path: Path, run: Path, ema_checkpoint: Path) -> None:
    assert sorted(BAD_NAMES) == sorted(_bad_cases(tmp_path, run, ema_checkpoint))


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path, run: Path) -> None:
    proc = run_subprocess([str(run), "--checkpoint", "7", "--grid", "g.png"], cwd=tmp_path, module="wgan.sample")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {run} has no checkpoint of epoch 7 (epoch_00007.pt); epochs with one: 2, 4")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_export_without_the_package_says_how_to_install(tmp_path: Path, run: Path) -> None:
    """A real process in which ``import safetensors`` fails (``sys.modules`` entry None)."""
    code = "import sys; sys.modules['safetensors'] = None; from wgan.sample import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run), "--export", "g.safetensors"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install safetensors" in lines[0]
    assert list(tmp_path.iterdir()) == []
