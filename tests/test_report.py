"""The Training Analysis Report from real run folders built here, as the trainer writes them.

Each folder holds what docs/design.md promises: config.json, metrics.jsonl written with
json.dumps, run.json, reference.npz, sample grids from wgan.run.images.save_grid and checkpoints
saved with torch.save in the documented format from a real Generator and Critic.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import DOCUMENTED_ROW, train_args
from PIL import Image
from test_diagnostics import structured_images

from wgan.config import WGANConfig
from wgan.models.eager import Critic, Generator
from wgan.report.__main__ import main
from wgan.report.evidence import read_series
from wgan.report.findings import phase_table, verdict
from wgan.report.render import critic_path_label
from wgan.report.writer import write_report
from wgan.run.folder import RunFolder
from wgan.run.images import save_grid, to_uint8

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = tuple(DOCUMENTED_ROW)


# ----------------------------------------------------------------------------------------------
# run-folder builder
# ----------------------------------------------------------------------------------------------
def seed_like_metrics(n: int = 12000, seed: int = 0) -> list[dict]:
    """The seed run's shape: D loss rising to about +5.5, G loss falling to about -115."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n + 1) / n
    d = -0.3 + 5.8 * t**0.8 + 0.08 * rng.standard_normal(n)
    g = -115.0 * t**1.1 + 0.5 * rng.standard_normal(n)
    fake_score = -g + 0.3 * rng.standard_normal(n)
    rows = []
    for i in range(n):
        rows.append(
            {
                "epoch": i + 1,
                "d_loss": float(d[i]),
                "d_loss_real": float(d[i] - fake_score[i]),
                "d_loss_fake": float(fake_score[i]),
                "g_loss": float(g[i]),
                "wasserstein_estimate": float(-d[i]),
                "clip_ratio": float(0.05 + 0.8 * t[i]),
                "critic_weight_mean": float(1e-4 * rng.standard_normal()),
                "critic_weight_std": float(0.004 + 0.005 * t[i]),
                "generator_weight_mean": float(1e-3 * t[i]),
                "generator_weight_std": float(0.02 + 0.03 * t[i]),
                "epoch_time": float(0.05 + 0.002 * rng.random()),
                "images_per_s": float(512 * 6 / 0.05),
            }
        )
    return rows


def checkpoint(gen: Generator, config: WGANConfig, epoch: int) -> dict:
    critic = Critic(config)
    opt_g = torch.optim.RMSprop(gen.parameters(), lr=config.lr_generator)
    opt_c = torch.optim.RMSprop(critic.parameters(), lr=config.lr_critic)
    return {
        "epoch": epoch,
        "config": config.to_dict(),
        "generator": gen.state_dict(),
        "critic": critic.state_dict(),
        "opt_generator": opt_g.state_dict(),
        "opt_critic": opt_c.state_dict(),
        "rng": {"cpu": torch.get_rng_state(), "cuda": [], "sampler": torch.Generator().manual_seed(1).get_state()},
        "fixed_z": torch.randn(25, config.z_dim),
    }


def collapse(gen: Generator) -> Generator:
    """A generator that ignores z: every sample is the same image."""
    with torch.no_grad():
        gen.stem[0].weight.zero_()
    return gen


def warm_batch_norm(gen: Generator, config: WGANConfig) -> None:
    """Give batch norm the running statistics training would leave (one pass with momentum 1)."""
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    gen.train()
    with torch.no_grad():
        gen(torch.randn(16, config.z_dim))
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    gen.eval()


def make_run(
    root: Path,
    *,
    rows: list[dict],
    epochs: int,
    status: str = "completed",
    collapsed: bool = False,
    ckpt_epochs: tuple[int, ...] = (),
    n_ref: int = 300,
    notes: str = "",
    wandb_url: str | None = None,
    with_checkpoint: bool = True,
) -> Path:
    run = root / "run"
    (run / "samples").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    config = WGANConfig(epochs=epochs, batch_size=512, notes=notes, data="/data/horses")
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    with open(run / "metrics.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    last = rows[-1]["epoch"]
    (run / "run.json").write_text(
        json.dumps(
            {
                "status": status,
                "epoch": last,
                "device": "cpu",
                "fused": True,
                "impl": {
                    "critic": "FusedCritic",
                    "optimizer": "kernels.FusedRMSprop[triton]",
                    "kernels": "triton",
                    "cuda_graph": "off",
                },
                "wandb_url": wandb_url,
                "torch": torch.__version__,
                "triton": "3.9.0",
                "started": "2025-01-01T00:00:00+00:00",
                "updated": "2025-01-01T01:00:00+00:00",
            }
        )
    )
    ref = structured_images(n_ref, seed=3)
    np.savez(run / "reference.npz", images=to_uint8(ref))
    save_grid(ref[:25], run / "samples" / "real.png", nrow=5)
    torch.manual_seed(0)
    z = torch.randn(25, config.z_dim)
    for e in sorted(set(ckpt_epochs) | {last}):
        torch.manual_seed(e)
        gen = Generator(config)
        if collapsed and e == last:
            collapse(gen)
        warm_batch_norm(gen, config)
        with torch.no_grad():
            save_grid(gen(z), run / "samples" / f"epoch_{e:05d}.png", nrow=5)
        if e in ckpt_epochs:
            torch.save(checkpoint(gen, config, e), run / "checkpoints" / f"epoch_{e:05d}.pt")
        if e == last and with_checkpoint:
            torch.save(checkpoint(gen, config, e), run / "checkpoints" / "last.pt")
    return run


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("seed")
    run = make_run(
        root,
        rows=seed_like_metrics(),
        epochs=12000,
        collapsed=True,
        ckpt_epochs=(6000,),
        notes="seed-like horse run",
        wandb_url="https://wandb.ai/me/wgan/runs/abc123",
    )
    return run, write_report(run)


def _section(text: str, title: str) -> str:
    start = text.index(title)
    nxt = re.search(r"^## ", text[start + len(title) :], flags=re.M)
    return text[start : start + len(title) + (nxt.start() if nxt else len(text))]


# ----------------------------------------------------------------------------------------------
# the seed-like run
# ----------------------------------------------------------------------------------------------
def test_seed_like_run_is_read_as_fakes_scored_above_reals(seed_run: tuple[Path, dict]) -> None:
    run, summary = seed_run
    text = (run / "analysis_report.md").read_text()
    assert summary["report"] == str(run / "analysis_report.md")
    assert "STABLE" not in summary["stability"].replace("UNSTABLE", "")
    assert "Excellent" not in summary["quality"]
    assert "UNSTABLE" in summary["stability"] and "fakes above reals" in summary["stability"]
    assert summary["indicators"]["w_sign"] == "FAIL"
    assert summary["final_wasserstein_estimate"] < -5
    assert summary["final_d_loss"] > 5 and summary["final_g_loss"] < -100
    assert "scores fakes above reals" in text
    assert "|G loss| is not a distance" in text
    verdict_sec = _section(text, "## Training Verdict")
    assert "❌ UNSTABLE" in verdict_sec and "Excellent" not in verdict_sec
    assert "raise n_critic (5 -> 10)" in summary["recommendation"]


def test_seed_like_run_flags_mode_collapse_from_samples(seed_run: tuple[Path, dict]) -> None:
    run, summary = seed_run
    mc = summary["mode_collapse"]
    assert mc["collapsed"] is True and mc["n_samples"] == 256
    assert mc["diversity_ratio"] < 0.1 and mc["n_clusters"] == 1
    assert summary["indicators"]["mode_collapse"] == "FAIL"
    assert summary["quality"].startswith("❌ Poor (mode collapse")
    # the periodic checkpoints (random, uncollapsed generators) are the one to fall back to
    assert summary["best_checkpoint"] == "checkpoints/epoch_06000.pt"
    assert "checkpoints/epoch_06000.pt" in summary["recommendation"]
    text = (run / "analysis_report.md").read_text()
    assert "**mode-collapsed**" in text
    details = _section(text, "## Full Details")
    assert re.search(r"\| 6000 \| `checkpoints/epoch_06000.pt` \| no \|", details)
    assert re.search(r"\| 12000 \| `checkpoints/last.pt` \| yes \|", details)


def test_seed_like_report_layout(seed_run: tuple[Path, dict]) -> None:
    run, summary = seed_run
    text = (run / "analysis_report.md").read_text()
    assert text.startswith("# Training Analysis Report: run\n")
    order = [
        "**Generated:**",
        "**Total Epochs:** 12000",
        "**Final D Loss:**",
        "**Final G Loss:**",
        "**W&B Run:** [https://wandb.ai/me/wgan/runs/abc123]",
        "## Training Verdict",
        "**Stability:**",
        "**Quality:**",
        "**Score:**",
        "**Recommendation:**",
        "## Configuration",
        "## Training Progression (Phase-wise Metrics)",
        "## Stability Indicators",
        "### Interpretation",
        "## Samples",
        "## Diagnostics",
        "## Performance",
        "## Notes",
        "seed-like horse run",
        "## Full Details",
    ]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    n_pass = sum(st == "PASS" for st in summary["indicators"].values())
    assert len(summary["indicators"]) == 9 and n_pass <= 6  # w_sign and mode_collapse fail; FID/KID not run
    assert f"**Score:** {n_pass}/8 indicators passed" in text
    indicators = _section(text, "## Stability Indicators")
    assert indicators.count("\n| ") == 1 + 9  # header and 9 indicators
    for rule in ("> 0", "<= 50%", "<= 1", "0 non-finite rows", "<= 25% and >= 0.5", "<= 75% pass, > 90% fail"):
        assert rule in indicators
    samples = _section(text, "## Samples")
    for link in (
        "samples/epoch_12000.png",
        "samples/real.png",
        "plots/generated.png",
        "plots/nearest_training_images.png",
    ):
        assert f"]({link})" in samples and (run / link).is_file()
    assert "FID/KID: not computed" in samples
    perf = _section(text, "## Performance")
    assert "fused (Triton kernels)" in perf and "| Device | cpu |" in perf and "ms |" in perf
    assert summary["wandb"]["report/collapsed"] is True
    assert all(isinstance(v, (str, int, float, bool)) for v in summary["wandb"].values())
    json.dumps(summary)  # the summary goes to W&B / JSON as is


def test_the_critic_path_label_is_what_ran() -> None:
    """A CPU run without the interpreter runs the kernels' PyTorch reference: the report says so."""
    cfg = WGANConfig()
    label = critic_path_label
    assert label({"fused": True, "impl": {"kernels": "ref"}}, cfg) == "fused (the kernels' plain-PyTorch reference)"
    assert label({"fused": True, "impl": {"kernels": "triton"}}, cfg) == "fused (Triton kernels)"
    assert label({"fused": False, "impl": {"kernels": "triton"}}, cfg) == "eager (PyTorch)"
    mixed = "bias_leaky_relu=ref,wasserstein_head=triton"
    assert label({"fused": True, "impl": {"kernels": mixed}}, cfg) == f"fused ({mixed})"


def test_phase_table_matches_the_series(seed_run: tuple[Path, dict]) -> None:
    run, _ = seed_run
    rows = {r["epoch"]: r for r in seed_like_metrics()}
    text = (run / "analysis_report.md").read_text()
    table = _section(text, "## Training Progression")
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| Phase")]
    assert [ln.split(" | ")[0][2:] for ln in lines] == ["Warmup", "Early", "Mid", "Late", "Final"]
    for line, (lo, hi) in zip(lines, [(0, 100), (100, 1000), (1000, 4000), (4000, 8000), (8000, 12000)]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        first, last = rows[lo + 1], rows[hi]
        assert cells[1] == f"{lo}-{hi}"
        assert cells[2] == f"{first['d_loss']:.4f} → {last['d_loss']:.4f}"
        assert cells[3] == f"{first['g_loss']:.4f} → {last['g_loss']:.4f}"
        assert printed_as(cells[4], (last["d_loss"] - first["d_loss"]) / (hi - lo - 1))
        assert printed_as(cells[5], (last["g_loss"] - first["g_loss"]) / (hi - lo - 1))


def printed_as(cell: str, value: float) -> bool:
    """``cell`` is ``value`` rounded to the digits it shows: within half a unit of its last digit."""
    mantissa, _, exponent = cell.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    half_unit = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(cell) - value) <= half_unit * (1 + 1e-12)


def test_phase_boundaries_scale_and_empty_phases_drop() -> None:
    epochs = np.arange(1, 301)
    d, g = np.linspace(0, 3, 300), np.linspace(0, -30, 300)
    table = phase_table(epochs, d, g, planned=300)  # bounds 0, 2.5->3, 25, 100, 200, 300
    assert [(p["phase"], p["start"], p["end"]) for p in table] == [
        ("Warmup", 0, 3),
        ("Early", 3, 25),
        ("Mid", 25, 100),
        ("Late", 100, 200),
        ("Final", 200, 300),
    ]
    assert table[1]["first_epoch"] == 4 and table[1]["last_epoch"] == 25
    assert table[1]["d_start"] == d[3] and table[1]["d_end"] == d[24]
    table = phase_table(np.arange(1, 31), d[:30], g[:30], planned=30)  # warmup (0, 0] is empty
    assert [p["phase"] for p in table] == ["Early", "Mid", "Late", "Final"]
    # an interrupted run only fills the phases it reached
    table = phase_table(np.arange(1, 5001), np.zeros(5000), np.zeros(5000), planned=12000)
    assert [p["phase"] for p in table] == ["Warmup", "Early", "Mid", "Late"]
    assert table[-1]["last_epoch"] == 5000


def test_every_plot_is_a_readable_png(seed_run: tuple[Path, dict]) -> None:
    run, summary = seed_run
    expected = {
        "losses",
        "wasserstein",
        "clip_ratio",
        "weights",
        "epoch_time",
        "diversity",
        "samples_over_training",
        "generated",
        "nearest",
    }
    assert set(summary["plots"]) == expected
    text = (run / "analysis_report.md").read_text()
    for name, path in summary["plots"].items():
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.width >= 200 and im.height >= 100, (name, im.size)
            pixels = np.asarray(im.convert("L"))
            assert pixels.std() > 5, f"{name} is blank"
        assert f"({Path(path).relative_to(run).as_posix()})" in text


def test_verdict_never_rates_a_collapsed_generator_stable_or_excellent() -> None:
    ok = {"name": "x", "status": "PASS"}
    inds = {
        k: dict(ok, name=k)
        for k in ("numerics", "w_sign", "w_trend", "clip", "oscillation", "memorisation", "fidelity")
    }
    good = verdict(dict(inds, mode_collapse={"name": "Mode collapse", "status": "PASS"}))
    assert good["stability"] == "✅ STABLE" and good["quality"].startswith("✅ Good")
    assert good["score"] == "8/8 indicators passed" and good["collapsed"] is False
    bad = verdict(dict(inds, mode_collapse={"name": "Mode collapse", "status": "FAIL"}))
    assert "STABLE" not in bad["stability"].replace("UNSTABLE", "") and "Excellent" not in bad["quality"]
    assert bad["quality"].startswith("❌ Poor (mode collapse")
    assert bad["score"] == "7/8 indicators passed" and bad["collapsed"] is True
    unknown = verdict(dict(inds, mode_collapse={"name": "Mode collapse", "status": "NOT RUN"}))
    assert unknown["quality"].startswith("❔ Not assessed")
    assert "7/7 indicators passed (1 not evaluated" in unknown["score"]
    # samples unlike the data spoil the quality, not the stability of the training
    unlike = verdict(
        dict(
            inds,
            mode_collapse={"name": "Mode collapse", "status": "PASS"},
            fidelity={"name": "Fidelity", "status": "FAIL"},
        )
    )
    assert unlike["stability"] == "✅ STABLE" and unlike["quality"].startswith("❌ Poor (samples are easy to tell")


# ----------------------------------------------------------------------------------------------
# interrupted, NaN and incomplete runs
# ----------------------------------------------------------------------------------------------
def test_interrupted_run_gets_a_report_that_says_so(tmp_path: Path) -> None:
    rows = seed_like_metrics(n=12000)[:900]
    run = make_run(tmp_path, rows=rows, epochs=12000, status="interrupted", ckpt_epochs=(500,))
    summary = write_report(run, n_samples=32)
    text = (run / "analysis_report.md").read_text()
    assert summary["interrupted"] is True and summary["epochs_completed"] == 900
    assert "**Total Epochs:** 900 of 12000 planned" in text
    assert "This run did not finish" in text and "status `interrupted`" in text
    assert "interrupted at epoch 900 of 12000" in summary["stability"]
    assert f"--resume {run}" in summary["recommendation"]
    phases = [
        ln.split(" | ")[0][2:]
        for ln in _section(text, "## Training Progression").splitlines()
        if ln.startswith("| ") and not ln.startswith("| Phase")
    ]
    assert phases == ["Warmup", "Early"]
    assert summary["mode_collapse"]["n_samples"] == 32 and summary["mode_collapse"]["collapsed"] is False


def test_nan_rows_are_handled_and_flagged(tmp_path: Path) -> None:
    rows = seed_like_metrics(n=400)
    for r in rows[350:]:
        for k in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "wasserstein_estimate"):
            r[k] = float("nan")
    rows = rows[:351]  # training stops on the first NaN row
    run = make_run(tmp_path, rows=rows, epochs=400, status="nan", with_checkpoint=False, ckpt_epochs=(300,))
    assert "NaN" in (run / "metrics.jsonl").read_text().splitlines()[-1]
    summary = write_report(run, n_samples=32)
    text = (run / "analysis_report.md").read_text()
    assert summary["indicators"]["numerics"] == "FAIL"
    assert "NaN/Inf losses" in summary["stability"]
    assert "first at epoch 351" in text
    assert summary["final_d_loss"] == rows[349]["d_loss"]  # the last finite value, as read back
    assert "Losses became NaN/Inf at epoch 351" in summary["recommendation"]
    # without last.pt the latest periodic checkpoint is sampled
    assert "checkpoints/epoch_00300.pt" in text and summary["mode_collapse"] is not None


def test_run_without_reference_or_checkpoint_is_not_rated(tmp_path: Path) -> None:
    run = make_run(tmp_path, rows=seed_like_metrics(n=200), epochs=200, with_checkpoint=False)
    (run / "reference.npz").unlink()
    summary = write_report(run)
    assert summary["indicators"]["mode_collapse"] == "NOT RUN"
    assert summary["quality"].startswith("❔ Not assessed")
    assert "not evaluated" in summary["score"]
    assert "diversity" not in summary["plots"]


def test_torn_last_line_is_ignored_but_a_broken_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    good = [json.dumps(r) for r in seed_like_metrics(n=5)]
    path.write_text("\n".join(good) + "\n" + good[0][:20])
    series, torn = read_series(RunFolder(tmp_path))
    assert torn and list(series["epoch"]) == [1, 2, 3, 4, 5]
    path.write_text("\n".join(good[:2] + ["{oops"] + good[2:]) + "\n")
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        read_series(RunFolder(tmp_path))


# ----------------------------------------------------------------------------------------------
# the CLI on bad folders
# ----------------------------------------------------------------------------------------------
def _broken(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nope"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(WGANConfig(epochs=20).to_dict()))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed_like_metrics(n=20)))
    if kind == "no-metrics":
        (run / "metrics.jsonl").unlink()
    elif kind == "broken-json":
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines[5] = lines[5][:-7]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    elif kind == "no-config":
        (run / "config.json").unlink()
    elif kind == "bad-config":
        (run / "config.json").write_text('{"epochs": "many"}')
    return run


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such run folder"),
        ("no-metrics", "has no metrics.jsonl"),
        ("broken-json", "line 6 is not valid JSON"),
        ("no-config", "has no config.json"),
        ("bad-config", "config field epochs has the wrong type"),
    ],
)
def test_cli_bad_run_folder_exits_2_with_one_line(tmp_path: Path, kind: str, message: str) -> None:
    run = _broken(tmp_path, kind)
    result = CliRunner().invoke(main, [str(run)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert not (run / "analysis_report.md").exists()


def test_cli_subprocess_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wgan.report", str(tmp_path / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such run folder"]


def test_cli_on_a_trained_run_and_fid_weights(trained_run: Path, tmp_path: Path) -> None:
    run = trained_run
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not really weights")
    res = CliRunner().invoke(main, [str(run), "--samples", "32", "--fid-weights", str(weights)])
    assert res.exit_code == 0, res.stderr
    assert (run / "analysis_report.md").is_file() and "indicators passed" in res.stdout
    # FID is never faked: without an Inception network the weights file is named and FID is "not computed"
    samples = _section((run / "analysis_report.md").read_text(), "## Samples")
    assert "FID/KID: not computed: " in samples and str(weights) in samples
    for bad in (["--samples", "3"], ["--fid-weights", str(tmp_path / "none.pth")]):
        res = CliRunner().invoke(main, [str(run), *bad])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr


# ----------------------------------------------------------------------------------------------
# a real run of the trainer
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) training run of ``python -m wgan.train`` on 64 structured images."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "images"
    data.mkdir()
    for i, img in enumerate(to_uint8(structured_images(64, seed=9))):
        Image.fromarray(img).save(data / f"{i:03d}.png")
    run = root / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wgan.train",
            *train_args(None, data, run, epochs=4, batch_size=8, sample_every=2, checkpoint_every=2, device="cpu"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_report_on_a_short_real_training_run(trained_run: Path) -> None:
    run = trained_run
    summary = write_report(run, n_samples=64)
    assert (run / "analysis_report.md").is_file()
    assert summary["epochs_completed"] == 4 and summary["status"] == "completed"
    assert summary["indicators"]["numerics"] == "PASS"
    mc = summary["mode_collapse"]
    assert mc is not None and mc["n_samples"] == 64
    assert isinstance(mc["collapsed"], bool)
    assert 0.0 <= mc["duplicate_fraction"] <= 1.0 and 0.0 <= mc["duplicated_sample_fraction"] <= 1.0
    assert 1 <= mc["n_clusters"] <= 64 and mc["diversity_ratio"] >= 0.0 and mc["threshold"] > 0
    # the same numbers as mode_collapse on the generator's samples directly
    from wgan.report.diagnostics import mode_collapse
    from wgan.report.evidence import load_reference, sample_checkpoint

    fake, loaded = sample_checkpoint(run / "checkpoints" / "last.pt", 64, torch.device("cpu"))
    assert loaded.epoch == 4 and fake.shape == (64, 3, 32, 32) and fake.abs().max() <= 1
    direct = mode_collapse(fake, load_reference(run / "reference.npz"))
    assert direct.collapsed == mc["collapsed"] and direct.diversity_ratio == mc["diversity_ratio"]
    # 4 epochs teach a generator nothing: the report must not call its samples good
    assert summary["indicators"]["fidelity"] in ("WARN", "FAIL") or mc["collapsed"]
    assert "Good" not in summary["quality"] and "Excellent" not in summary["quality"]
    assert {"diversity", "samples_over_training", "losses"} <= set(summary["plots"])


def test_the_advice_says_when_the_average_is_worse_than_the_raw_generator() -> None:
    """Without warm-up an EMA of decay 0.999 after 300 generator steps still holds 74% of the initial
    weights; with it, the average spans the last (300 + 10) / 9 ~ 34 steps."""
    from types import SimpleNamespace

    from wgan.report.findings import _ema_advice
    from wgan.report.quality import FINAL_EMA, FINAL_RAW, QualityEvidence, QualityPoint

    def point(role: str, kid: float) -> QualityPoint:
        generator = "EMA" if role == FINAL_EMA else "raw"
        return QualityPoint(role, 300, "checkpoints/last.pt", generator, kid, 0.005, 300.0, 500, "report")

    quality = QualityEvidence(points=[point(FINAL_EMA, 0.40), point(FINAL_RAW, 0.23)], n_fake=500)
    old_run = {"impl": {"generator_ema": "0.999"}}  # recorded before the warm-up existed
    evidence = SimpleNamespace(quality=quality, config=WGANConfig(g_ema=0.999), path=Path("run"), info=old_run)
    text = _ema_advice(evidence, None, None)
    assert "KID 0.4000 vs 0.2300" in text and "74% of the initial weights" in text and "--raw" in text
    evidence.info = {"impl": {"generator_ema": "0.999, warm-up (1+t)/(10+t)"}}
    text = _ema_advice(evidence, None, None)  # the warm-up forgets the start; the average lags by ~t/9 steps
    assert "KID 0.4000 vs 0.2300" in text and "initial weights are forgotten" in text and "last 34," in text
    assert "--raw" in text and "%" not in text
    quality.points[0] = point(FINAL_EMA, 0.235)  # within the two spreads: nothing to say
    assert _ema_advice(evidence, None, None) == ""
