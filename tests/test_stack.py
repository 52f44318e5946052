"""Many runs, one process: the stacked engine, sweeps, the sweep folder and its report, torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, invoke, read_epoch_log, run_subprocess, subprocess_env, train_args
from test_resume import start_training, stop_when, wait_for
from torch.utils._python_dispatch import TorchDispatchMode

from wgan.config import WGANConfig
from wgan.data import load_images
from wgan.run.folder import RunFolder
from wgan.training.engine import DEVICE_METRICS, build_engine
from wgan.training.parity import BOUND
from wgan.training.stack import StackedEngine, StackedFusedRMSprop, stacked_parity

MEMBERS = [(5e-5, 0.01, 0.0), (1e-3, 0.05, 0.9), (2e-4, 0.02, 0.0)]  # per-member lr, clip and g_ema


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()  # --deterministic sets one thread in this process
    yield
    torch.set_num_threads(threads)


def trained_states(recipe: str, images: torch.Tensor) -> list[dict]:
    """Three members' states after 2 epochs (the optimizer state is not empty), each its own lr and clip."""
    states = []
    for seed, (lr, clip, ema) in enumerate(MEMBERS):
        values = dict(seed=seed, recipe=recipe, lr_critic=lr, lr_generator=2 * lr, clip_threshold=clip, g_ema=ema)
        engine = build_engine(WGANConfig.from_dict({**TINY, **values, "n_critic": 2}), "cpu")
        data = engine.prepare_images(images)
        for _ in range(2):
            engine.run_epoch(data)
        states.append(engine.state_dict())
    return states


@pytest.mark.parametrize("mode", ["vmap", "loop"])
@pytest.mark.parametrize("recipe", ["wgan", "book"])
def test_each_member_of_a_stack_is_its_single_run(recipe: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same-state parity in float64, member by member (wgan.training.parity's method and bound), with
    the members run as one vmapped (grouped) pass or one after another on the stacked tensors."""
    images = torch.rand(40, 3, 16, 16) * 2 - 1
    states = trained_states(recipe, images)
    reports = stacked_parity(states, images, mode=mode)
    for report in reports:
        assert report.ok, report.summary()
        assert report.bound == BOUND and len(report.differences) > 70
    print(*(r.summary() for r in reports), sep="\n")
    # not vacuous: a stack that forgets the clip fails it
    monkeypatch.setattr(StackedEngine, "_critic_update", lambda self, clip: self.opt_critic.step(self.active, True))
    assert not any(r.ok for r in stacked_parity(states, images, mode=mode))


@pytest.mark.parametrize("impl", ["triton", "ref"])
@pytest.mark.parametrize("recipe", ["wgan", "book"])
def test_each_member_of_a_fused_stack_is_its_single_fused_run(
    recipe: str, impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fused: each member's FusedCritic (one real+fake pass, the fused head) and FusedGenerator
    (polyphase kernels cached per member) run in turn, and ONE FusedRMSprop launch per model and
    step updates every member, reading its lr, clip and average decay from the per-member tables:
    member i equals its single fused run from the same state, in float64, within the parity bound
    (members with different lr and clip; member 1 averages its generator)."""
    from kernels import rmsprop

    images = torch.rand(40, 3, 16, 16) * 2 - 1
    states = trained_states(recipe, images)
    launches = []
    runner = rmsprop._RUNNERS[impl]
    monkeypatch.setitem(rmsprop._RUNNERS, impl, lambda *a: launches.append(1) or runner(*a))
    reports = stacked_parity(states, images, fused=True, impl=impl)
    for report in reports:
        assert report.ok, report.summary()
        assert report.bound == BOUND and len(report.differences) > 70
        assert report.reference == f"fused[{impl}] single run"
    print(*(r.summary() for r in reports), sep="\n")
    # per epoch: n_critic = 2 critic steps (the book's: 2 updates each) and one generator step, one
    # launch each, for the whole stack; then each single run its own
    per_epoch = 2 * (2 if recipe == "book" else 1) + 1
    assert len(launches) == (1 + len(states)) * per_epoch
    # not vacuous: a stack that forgets the clip fails it
    step = StackedFusedRMSprop.step
    monkeypatch.setattr(
        StackedFusedRMSprop, "step", lambda self, active, all_active=True, clip=False: step(self, active)
    )
    assert not any(r.ok for r in stacked_parity(states, images, fused=True, impl=impl))


class ConvolutionDtypes(TorchDispatchMode):
    """The dtypes every convolution (forward) ran in: the eager modules and the fused models alike."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.dtypes.add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("recipe", ["wgan", "book"])
def test_a_stack_runs_its_members_precision(recipe: str, fused: bool) -> None:
    """--precision bf16 with --seeds: the stack's convolutions run in bf16 (autocast), as each
    member's single run does, and its losses stay fp32; fp32 stays fp32."""
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    for precision, expected in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        configs = [
            WGANConfig.from_dict({**TINY, "seed": s, "recipe": recipe, "fused": fused, "precision": precision})
            for s in (0, 1)
        ]
        stack = StackedEngine([build_engine(c, "cpu", impl="ref") for c in configs], impl="ref")
        with ConvolutionDtypes() as seen:
            stats = stack.run_epoch(stack.members[0].prepare_images(images))
        assert seen.dtypes == {expected}, (precision, seen.dtypes)
        assert all(v.dtype == torch.float32 and v.shape == (2,) for v in stats.values())


def test_a_frozen_member_of_a_fused_stack_stays_as_it_was() -> None:
    """freeze(1): member 1's slices are left out of the launches (its weights, RMSprop state and
    average keep their values), while member 0 trains on."""
    images = torch.rand(40, 3, 16, 16) * 2 - 1
    configs = [WGANConfig.from_dict({**TINY, "seed": s, "fused": True, "g_ema": 0.9}) for s in (0, 1)]
    stack = StackedEngine([build_engine(c, "cpu", impl="ref") for c in configs], impl="ref")
    data = stack.members[0].prepare_images(images)
    stack.run_epoch(data)  # the optimizer state exists
    stack.freeze(1)
    tensors = lambda: [  # noqa: E731
        *stack.critic.params.values(),
        *stack.generator.params.values(),
        *stack.ema.values(),
        *(slot.square_avg for slot in stack.opt_critic.slots.values()),
        *(slot.square_avg for slot in stack.opt_generator.slots.values()),
    ]
    before = [t.detach().clone() for t in tensors()]
    stack.run_epoch(data)
    after = tensors()
    assert all(torch.equal(a[1], b[1]) for a, b in zip(after, before))
    assert sum(not torch.equal(a[0], b[0]) for a, b in zip(after, before)) > len(before) // 2


def test_a_stack_refuses_members_that_differ_in_a_shared_field() -> None:
    engines = [build_engine(WGANConfig.from_dict({**TINY, "batch_size": b}), "cpu") for b in (8, 16)]
    with pytest.raises(ValueError, match="batch_size differs between members"):
        StackedEngine(engines)


def sweep_args(cfg: Path, data: Path, out: Path, *extra: str, **options: object) -> list[str]:
    return train_args(cfg, data, out, *extra, "--no-report", **options)


def member_rows(sweep: Path) -> dict[str, list[tuple]]:
    out = {}
    for record in json.loads((sweep / "sweep.json").read_text())["members"]:
        out[record["name"]] = [
            (r["epoch"], *(r[k] for k in DEVICE_METRICS)) for r in read_epoch_log(sweep / record["name"])
        ]
    return out


def test_a_stack_killed_and_resumed_equals_the_unbroken_stack(tmp_path: Path, data: Path, cfg: Path) -> None:
    """--deterministic, 3 seeds: SIGTERM (a checkpoint of the last epoch), then --resume SWEEP_DIR."""
    broken = tmp_path / "broken"
    args = sweep_args(cfg, data, broken, "--seeds", "0-2", epochs=100000, log_every=1, checkpoint_every=100000)
    proc = start_training(tmp_path, args)
    first = broken / "000-seed0"
    three = lambda: (first / "metrics.jsonl").exists() and len(read_epoch_log(first)) >= 3  # noqa: E731
    _, stderr = stop_when(proc, three, "3 epochs", signal.SIGTERM)
    assert proc.returncode == 143, stderr
    assert f"--resume {broken}" in stderr and "Traceback" not in stderr
    k = read_epoch_log(first)[-1]["epoch"]
    for name in ("000-seed0", "001-seed1", "002-seed2"):
        assert torch.load(broken / name / "checkpoints" / "last.pt", weights_only=True)["epoch"] == k
        assert json.loads((broken / name / "run.json").read_text())["status"] == "interrupted"
    result = invoke(["--resume", str(broken), "--epochs", str(k + 2)])
    assert result.exit_code == 0, result.output
    unbroken = tmp_path / "unbroken"
    proc = run_subprocess(sweep_args(cfg, data, unbroken, "--seeds", "0-2", epochs=k + 2), tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = member_rows(unbroken)
    assert member_rows(broken) == expected and all(len(rows) == k + 2 for rows in expected.values())
    statuses = [m["status"] for m in json.loads((broken / "sweep.json").read_text())["members"]]
    assert statuses == ["completed"] * 3
    # a member is an ordinary run: the sampler takes it, and refuses the sweep folder with one line
    grid = tmp_path / "grid.png"
    proc = run_subprocess([str(broken / "001-seed1"), "--grid", str(grid)], tmp_path, module="wgan.sample")
    assert proc.returncode == 0 and grid.is_file(), proc.stderr
    proc = run_subprocess([str(broken), "--grid", str(grid)], tmp_path, module="wgan.sample")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(f"error: {broken} is a sweep folder") and "000-seed0" in proc.stderr


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_a_member_that_diverges_stops_alone(tmp_path: Path, data: Path, cfg: Path, fused: bool) -> None:
    """A sweep of two generator learning rates, one absurd: that member stops on NaN with its last
    good checkpoint, the other trains every epoch; the exit status says a member diverged. Fused:
    the frozen member's slices leave the one optimizer launch, and the good member still is its run."""
    out = tmp_path / "sweep"
    flags = ["--fused"] if fused else []
    args = sweep_args(cfg, data, out, *flags, "--lr-generator", "5e-5,1e30", epochs=8, log_every=1, checkpoint_every=1)
    result = invoke(args[: args.index("--wandb")] + args[args.index("--wandb") + 2 :] + ["--wandb", "offline"])
    assert result.exit_code == 3, result.output
    good, bad = out / "000-lr_generator=5e-05-seed0", out / "001-lr_generator=1e+30-seed0"
    assert [r["epoch"] for r in read_epoch_log(good)] == list(range(1, 9))
    assert json.loads((good / "run.json").read_text())["status"] == "completed"
    info = json.loads((bad / "run.json").read_text())
    rows = read_epoch_log(bad)
    assert info["status"] == "nan" and not all(math.isfinite(rows[-1][k]) for k in DEVICE_METRICS)
    state = torch.load(bad / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == info["checkpoint_epoch"] == rows[-1]["epoch"] - 1
    assert all(torch.isfinite(t).all() for t in state["generator"].values() if t.is_floating_point())
    # W&B: one offline run per member, grouped under the sweep folder's name
    ids = {json.loads((m / "run.json").read_text())["wandb_id"] for m in (good, bad)}
    assert len(ids) == 2 and None not in ids
    for member in (good, bad):
        files = list((member / "wandb").glob("offline-run-*/run-*.wandb"))
        # RunRecord.run_group (protobuf field 6, a string): tag 0x32, length, the folder's name
        assert len(files) == 1 and b"\x32\x05sweep" in files[0].read_bytes()
    # the good member is exactly the single run of its settings (all rows but timing, float32: to rounding)
    single = build_engine(WGANConfig.from_file(good / "config.json"), "cpu")
    images = single.prepare_images(load_images(str(data), image_size=16))
    for row in read_epoch_log(good)[:3]:
        stats = single.run_epoch(images)
        assert row["d_loss"] == pytest.approx(float(stats["d_loss"]), rel=1e-3, abs=1e-6), row["epoch"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", ","], "names no seed"),
        (["--seeds", "3-1"], "the range 3-1 is empty"),
        (["--seeds", "0-1", "--batch-size", "8,16"], "--batch-size is shared by a stack"),
        (["--seeds", "0-1", "--recipe", "wgan,book"], "split the sweep"),
        (["--seeds", "0-4000", "--batch-size", "512", "--critic-filters", "64,128,256"], "split the seeds"),
        (["--seeds", "0-1", "--seed", "3"], "--seed and --seeds both given"),
    ],
)
def test_bad_sweeps_get_one_error_line(tmp_path: Path, data: Path, cfg: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "sweep"
    result = invoke(train_args(cfg, data, out, *extra))
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_a_fused_sweep_trains_and_resumes(tmp_path: Path, data: Path, cfg: Path) -> None:
    """--fused --seeds 0-1: both member folders, each a fused run (run.json says so and what ran: the
    stack's one FusedRMSprop launch per model), then --resume of the sweep goes on."""
    out = tmp_path / "sweep"
    args = sweep_args(cfg, data, out, "--fused", "--seeds", "0-1", epochs=2)
    proc = run_subprocess(args, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 members stacked on cpu, fused" in proc.stderr and "one launch per model" in proc.stderr, proc.stderr
    info = json.loads((out / "sweep.json").read_text())
    names = [m["name"] for m in info["members"]]
    assert names == ["000-seed0", "001-seed1"] and [m["status"] for m in info["members"]] == ["completed"] * 2
    for name in names:
        run = json.loads((out / name / "run.json").read_text())
        assert run["fused"] is True and json.loads((out / name / "config.json").read_text())["fused"] is True
        assert run["impl"]["critic"] == "FusedCritic" and "one launch per model" in run["impl"]["optimizer"]
        assert [r["epoch"] for r in read_epoch_log(out / name)] == [1, 2]
    proc = run_subprocess(["--resume", str(out), "--epochs", "3", "--no-report"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in names:
        assert [r["epoch"] for r in read_epoch_log(out / name)] == [1, 2, 3]
        assert torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "wgan.train", *args]


def run_torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Two CPU ranks (gloo) of the trainer, to the end (5 minutes at most)."""
    return subprocess.run(torchrun(*args), cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_torchrun_splits_the_members_across_two_cpu_ranks(tmp_path: Path, data: Path, cfg: Path) -> None:
    """Two gloo ranks, 3 seeds: every member trained (rank 0 two, rank 1 one), the sweep report by rank 0."""
    out = tmp_path / "sweep"
    proc = run_torchrun(tmp_path, *train_args(cfg, data, out, "--seeds", "0-2", epochs=3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "sweep.json").read_text())
    assert info["assignment"] == [[0, 2], [1]]
    assert [m["status"] for m in info["members"]] == ["completed"] * 3
    for record in info["members"]:
        assert [r["epoch"] for r in read_epoch_log(out / record["name"])] == [1, 2, 3]
        assert (out / record["name"] / "analysis_report.md").is_file()
    report = (out / "sweep_report.md").read_text()
    assert all(m["name"] in report for m in info["members"]) and "Wilson" in report
    # the resume keeps the split: refused without torchrun, done with the same two ranks
    result = invoke(["--resume", str(out), "--epochs", "4"])
    assert result.exit_code == 2 and "split across 2 process(es)" in result.stderr, result.output
    proc = run_torchrun(tmp_path, "--resume", str(out), "--epochs", "4", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for record in info["members"]:
        assert [r["epoch"] for r in read_epoch_log(out / record["name"])] == [1, 2, 3, 4]


def test_a_rank_that_dies_leaves_every_member_resumable(tmp_path: Path, data: Path, cfg: Path) -> None:
    """Rank 1 killed (SIGKILL, as the OOM killer would): torchrun stops rank 0 with SIGTERM, whose
    members checkpoint and exit without waiting at the barrier for the dead rank; rank 1's member is
    reported stopped with its last checkpoint; the resume, on the same split, completes all."""
    out = tmp_path / "sweep"
    args = sweep_args(cfg, data, out, "--seeds", "0-2", epochs=100000, log_every=1, checkpoint_every=1)
    proc = subprocess.Popen(
        torchrun(*args), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = out / "001-seed1"  # rank 1's only member (round robin: [[0, 2], [1]])

    def rank1_checkpointed() -> bool:
        return (victim / "checkpoints" / "last.pt").is_file() and (out / "000-seed0" / "metrics.jsonl").is_file()

    try:
        wait_for(proc, rank1_checkpointed, "rank 1's first checkpoint", timeout=240)
        os.kill(json.loads((victim / "run.json").read_text())["pid"], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)  # no hang at the final barrier
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, stderr[-3000:]
    # torchrun names the rank that died; the only traceback is torchrun's own, none from our code
    assert "ChildFailedError" in stderr and "rank      : 1" in stderr and "SIGKILL" in stderr, stderr[-3000:]
    assert stderr.count("Traceback") == 1 and "/wgan/" not in stderr, stderr[-3000:]
    assert f"resume with: python -m wgan.train --resume {out}" in stderr, stderr[-3000:]
    statuses = {m["name"]: m["status"] for m in json.loads((out / "sweep.json").read_text())["members"]}
    assert statuses == {"000-seed0": "interrupted", "001-seed1": "stopped", "002-seed2": "interrupted"}, statuses
    epochs = {}
    for name in statuses:
        state = torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["critic"].values() if t.is_floating_point())
        epochs[name] = state["epoch"]
    assert epochs["000-seed0"] == epochs["002-seed2"] >= 1 and epochs["001-seed1"] >= 1
    target = max(epochs.values()) + 2
    proc = run_torchrun(tmp_path, "--resume", str(out), "--epochs", str(target), "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in statuses:
        assert [r["epoch"] for r in read_epoch_log(out / name)] == list(range(1, target + 1)), name
    assert [m["status"] for m in json.loads((out / "sweep.json").read_text())["members"]] == ["completed"] * 3


def test_a_rank_that_cannot_set_up_fails_alone(tmp_path: Path, data: Path, cfg: Path) -> None:
    """On resume, rank 1's member has a corrupt checkpoint: rank 1 says so and fails; rank 0's members
    train on, and rank 0 writes the statuses and the sweep report; the same command after a repair
    completes the last member."""
    out = tmp_path / "sweep"
    proc = run_torchrun(tmp_path, *train_args(cfg, data, out, "--seeds", "0-2", epochs=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = out / "001-seed1" / "checkpoints" / "last.pt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # a torn copy
    resume = ("--resume", str(out), "--epochs", "3")
    proc = run_torchrun(tmp_path, *resume)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1: ") and str(last) in errors[0], proc.stderr[-3000:]
    for name in ("000-seed0", "002-seed2"):
        assert [r["epoch"] for r in read_epoch_log(out / name)] == [1, 2, 3]
    assert [r["epoch"] for r in read_epoch_log(out / "001-seed1")] == [1, 2]
    assert "000-seed0" in (out / "sweep_report.md").read_text()
    last.write_bytes(good)
    proc = run_torchrun(tmp_path, *resume)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in read_epoch_log(out / "001-seed1")] == [1, 2, 3]


# --- the sweep report, from hand-made member folders -----------------------------------------


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out (not scipy's)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_sweep_report_counts_collapse_per_setting(tmp_path: Path, data: Path, cfg: Path) -> None:
    """A folder of run folders made by hand (no sweep.json): one trained tiny run copied 7 times, two
    settings of lr_critic written into config.json; a member is made 'not collapsed' by giving it a
    reference set of one repeated image (then no fake has a nearer neighbour than the reals' 0, and
    the fakes' spread is infinitely larger). Setting A: 1 of 3 collapsed, setting B: 3 of 4."""
    template = tmp_path / "template"
    assert invoke(train_args(cfg, data, template, "--no-report", epochs=6, checkpoint_every=1000)).exit_code == 0
    runs = tmp_path / "runs"
    plan = [("a", 5e-5, True), ("a", 5e-5, False), ("a", 5e-5, False)]
    plan += [("b", 1e-3, True), ("b", 1e-3, True), ("b", 1e-3, False), ("b", 1e-3, True)]
    reference = np.asarray(np.load(template / "reference.npz")["images"])
    for i, (_, lr, collapsed) in enumerate(plan):
        member = runs / f"run{i}"
        shutil.copytree(template, member)
        config = json.loads((member / "config.json").read_text())
        (member / "config.json").write_text(json.dumps({**config, "lr_critic": lr, "seed": i}))
        if not collapsed:
            RunFolder(member).write_reference(np.repeat(reference[:1], len(reference), axis=0))
    proc = run_subprocess([str(runs), "--samples", "16"], tmp_path, module="wgan.report", timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = (runs / "sweep_report.md").read_text()
    for setting, k, n in (("lr_critic=5e-05", 1, 3), ("lr_critic=0.001", 3, 4)):
        low, high = wilson(k, n)
        line = next(x for x in text.splitlines() if x.startswith(f"| {setting} |"))
        assert f"| {k} / {n} | {k / n:.0%} | [{low:.0%}, {high:.0%}] |" in line, line
    for i, (_, _, collapsed) in enumerate(plan):
        line = next(x for x in text.splitlines() if x.startswith(f"| run{i} |"))
        assert f"| {'yes' if collapsed else 'no'} |" in line, line
    assert (runs / "plots" / "sweep.png").is_file()


def test_fisher_exact_and_wilson_match_the_formulas() -> None:
    from wgan.report.sweep import SettingStats, compare_collapse, wilson_interval

    for k, n in ((0, 4), (1, 3), (3, 4), (7, 7)):
        assert wilson_interval(k, n) == pytest.approx(wilson(k, n), abs=1e-12)
    # 1 of 8 against 6 of 8: the two-sided p is the sum of the hypergeometric tables no likelier than it
    a, b = [SettingStats("a", 8, 1, 0, 0)], [SettingStats("b", 8, 6, 0, 0)]
    table = [math.comb(8, x) * math.comb(8, 7 - x) / math.comb(16, 7) for x in range(8)]
    expected = sum(p for p in table if p <= table[1] * (1 + 1e-7))
    assert compare_collapse(a, b)["p_value"] == pytest.approx(expected, rel=1e-9)
