"""A sweep invocation (``--seeds``, comma lists): members set up, trained stacked, reported.

Each process trains its share of the members (all of them, or under torchrun the round-robin share
of its rank: :func:`wgan.sweep.split`) as one :class:`~wgan.training.stack.StackedEngine`, each into
its own ordinary run folder of the sweep folder (:class:`wgan.run.sweep.SweepFolder`). The loop is
the single run's (wgan.training.loop: the same cadences, readbacks, signals and checkpoints), once
per member: a member whose values turn non-finite stops alone with its last good checkpoint (the
stack freezes it), the others go on. At the end, a barrier lets rank 0 write the sweep report.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from wgan.config import ConfigError, file_values, resolve_config
from wgan.devices import resolve_device
from wgan.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NAN,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    UsageError,
    UserError,
    one_line,
)
from wgan.run.folder import RunFolder, default_run_dir, this_process, utc_now
from wgan.run.lock import RunLock
from wgan.run.sweep import SweepFolder
from wgan.sweep import Member, SweepError, members, split
from wgan.training.engine import DEVICE_METRICS, Engine, build_engine
from wgan.training.loop import (
    EpochClock,
    Progress,
    StopRequest,
    _write_checkpoint,
    _write_sample,
    due_after,
    images_per_epoch,
)
from wgan.training.setup import _load_data, _resumed_config, _versions, start_run
from wgan.training.stack import StackedEngine
from wgan.training.wandb_log import WandbLogger

MEMORY_SHARE = 0.8  # of the memory available, what a stack may plan to use


# --- ranks (torchrun) ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def start(self, device: torch.device) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def share(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# --- the plan: members, folders, device ------------------------------------------------------


@dataclasses.dataclass
class MemberRun:
    """One member trained by this process: its folder, engine, logger and progress."""

    member: Member
    folder: RunFolder
    engine: Engine
    checkpoint_epoch: int | None = None
    logger: WandbLogger | None = None
    last_row: dict[str, Any] | None = None
    status: str | None = None  # None while training; then completed | interrupted | nan | failed
    message: str = ""
    lock: RunLock | None = None  # the member folder held for this process's life (one writer)


@dataclasses.dataclass
class Plan:
    sweep: SweepFolder
    members: list[Member]  # every member of the sweep
    mine: list[Member]  # the members this rank trains
    device: torch.device
    resuming: bool
    assignment: list[list[int]]


def _device(config: Any, ranks: Ranks) -> torch.device:
    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
    return device


def _check_sweep_options(config: Any) -> None:
    if config.eval_every:
        raise UsageError("--eval-every with a sweep: not supported yet; run the sweep, then python -m wgan.report")


def estimate_bytes(config: Any, n: int) -> int:
    """A generous estimate of what a stack of ``n`` members holds: per member, its parameters four
    times over (weights, gradients, RMSprop state, a spare copy) and its activations, kept for the
    backward pass, at the batch size."""
    from wgan.models.eager import Critic, Generator, count_trainable

    with torch.device("meta"):
        params = count_trainable(Critic(config)) + count_trainable(Generator(config))
    side, act = config.image_size, 0
    for filters in config.critic_filters:
        act += filters * side * side
    for filters in config.generator_filters:
        act += filters * side * side
    per_member = 4 * (6 * params + 3 * 4 * config.batch_size * act)
    return n * per_member


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(config: Any, n: int, device: torch.device) -> None:
    need, have = estimate_bytes(config, n), _available_bytes(device)
    if have is not None and need > MEMORY_SHARE * have:
        fit = max(1, int(MEMORY_SHARE * have // max(need // n, 1)))
        raise SweepError(
            f"a stack of {n} members needs about {need / 2**30:.1f} GiB on {device}, {have / 2**30:.1f} GiB is "
            f"available; split the seeds into stacks of at most {fit} (e.g. --seeds 0-{fit - 1}), "
            "or spread them over devices with torchrun"
        )


def _new_plan(config_file: str | None, out: str | None, seeds: str | None, explicit: dict[str, Any], ranks: Ranks):
    from_file = file_values(config_file) if config_file else {}
    all_members = members(seeds, from_file, explicit)
    _check_sweep_options(all_members[0].config)
    assignment = split(len(all_members), ranks.world)
    mine = [all_members[i] for i in assignment[ranks.rank]]
    device = _device(all_members[0].config, ranks)
    if mine:
        check_memory(mine[0].config, len(mine), device)
    sweep = SweepFolder(Path(out) if out else default_run_dir("runs"))
    return Plan(sweep, all_members, mine, device, False, assignment)


def _resumed_plan(config_file: str | None, resume: str, explicit: dict[str, Any], ranks: Ranks) -> Plan:
    sweep = SweepFolder(resume)
    info = sweep.read()
    from_file = file_values(config_file) if config_file else {}
    assignment = info.get("assignment") or split(len(info["members"]), 1)
    if len(assignment) != ranks.world:
        raise SweepError(
            f"the sweep in {sweep.path} was split across {len(assignment)} process(es); resume it with as many "
            f"(torchrun --nproc-per-node {len(assignment)}, or no torchrun for 1)"
        )
    all_members = []
    for index, record in enumerate(info["members"]):
        base = sweep.member(record["name"]).read_config()
        config = resolve_config(from_file, explicit, resumed=base)
        all_members.append(Member(index, dict(record["settings"]), config))
    _check_sweep_options(all_members[0].config)
    device = _device(all_members[0].config, ranks)
    return Plan(sweep, all_members, [all_members[i] for i in assignment[ranks.rank]], device, True, assignment)


def _sweep_record(plan: Plan, argv: list[str]) -> dict[str, Any]:
    shared = {k: v for k, v in plan.members[0].config.to_dict().items() if k not in plan.members[0].settings}
    rank_of = {index: rank for rank, indices in enumerate(plan.assignment) for index in indices}
    return {
        "created": utc_now(),
        "command": argv,
        "assignment": plan.assignment,
        "shared": shared,
        "members": [  # in member order (the assignment's indices)
            {"name": m.name, "settings": m.settings, "rank": rank_of[m.index], "status": "planned"}
            for m in plan.members
        ],
    }


# --- members: new or resumed -----------------------------------------------------------------


def _start_member(member: Member, plan: Plan, images: torch.Tensor) -> MemberRun:
    folder, _, lock = RunFolder.create(plan.sweep.path / member.name)
    engine = build_engine(member.config, plan.device)
    start_run(member.config, images, folder)
    return MemberRun(member, folder, engine, lock=lock)


def _resume_member(member: Member, plan: Plan, config_file: str | None, explicit: dict[str, Any]) -> MemberRun | None:
    """The member from its last checkpoint; None when it has nothing left to train (done, or
    stopped on NaN: it keeps its last good checkpoint)."""
    folder = RunFolder.open_existing(plan.sweep.path / member.name)
    lock = folder.lock()  # before anything of the member is read to be changed
    status = folder.read_run_info().get("status")
    if status == "nan":
        return None
    from_file = file_values(config_file) if config_file else {}
    try:
        config, checkpoint = _resumed_config(folder, from_file, explicit)
    except UsageError:
        if status == "completed":
            return None
        raise
    engine = build_engine(config, plan.device)
    if checkpoint is not None and not engine.load_state_dict(checkpoint):
        print(
            f"warning: {folder.path}: the sampler moved device; the draws differ from the unbroken run", file=sys.stderr
        )
    folder.truncate_epoch_log(engine.epoch)
    folder.write_config(config)
    resumed = engine.epoch if checkpoint is not None else None  # None: no checkpoint, restarted from epoch 0
    return MemberRun(dataclasses.replace(member, config=config), folder, engine, checkpoint_epoch=resumed, lock=lock)


def _record_start(run: MemberRun, plan: Plan, images: torch.Tensor, group: str, stack: dict[str, str]) -> None:
    """run.json and W&B: the member's own labels with what the stack runs instead (``stack``)."""
    config, folder = run.member.config, run.folder
    info = folder.read_run_info()
    run.logger = WandbLogger(
        config.wandb, folder.path, config.to_dict(), run_id=info.get("wandb_id"), notes=config.notes, group=group
    )
    folder.update_run_info(
        status="running",
        epoch=run.engine.epoch,
        checkpoint_epoch=run.checkpoint_epoch,
        device=str(plan.device),
        fused=run.engine.fused,
        impl={**run.engine.labels, **stack},
        wandb_url=run.logger.url,
        wandb_id=run.logger.run_id,
        wandb_mode=run.logger.mode if run.logger.active else "disabled",
        n_images=int(images.shape[0]),
        sweep=str(plan.sweep.path),
        message=None,
        **_versions(),
        **this_process(),
        **({} if plan.resuming else {"started": utc_now()}),
    )


# --- the loop --------------------------------------------------------------------------------


class StackProgress(Progress):
    """The single run's bar, counting the stack's epochs; its postfix the spread of the members."""

    def __init__(self, stack: StackedEngine, enabled: bool | None) -> None:
        super().__init__(stack, enabled)  # type: ignore[arg-type]  (reads .config and .epoch)
        self.bar.set_description(f"stack of {stack.n}")

    def show_stack(self, rows: list[dict[str, Any]], total: int) -> None:
        w = sorted(r["wasserstein_estimate"] for r in rows)
        self.bar.set_postfix(
            members=len(rows),
            W_min=f"{w[0]:.4g}",
            W_median=f"{w[len(w) // 2]:.4g}",
            W_max=f"{w[-1]:.4g}",
            refresh=False,
        )
        self.plain(
            lambda: (
                f"epoch {rows[0]['epoch']}/{total}: {len(rows)} members training, W estimate "
                f"{w[0]:.4g} .. {w[-1]:.4g} (median {w[len(w) // 2]:.4g})"
            )
        )


class StackLoop:
    """fit()'s loop for a stack: the same cadences (wgan.training.loop.due_after), one folder per member."""

    def __init__(self, stack: StackedEngine, runs: list[MemberRun], progress: bool | None) -> None:
        self.stack, self.runs, self.config = stack, runs, stack.config
        self.clock, self.bar = EpochClock(stack.device), StackProgress(stack, progress)
        self.pending: list[tuple[int, torch.Tensor, Any, Any]] = []
        self.last_checkpoint_at = time.monotonic()
        self.stop_code = EXIT_OK

    @property
    def training(self) -> list[tuple[int, MemberRun]]:
        return [(i, r) for i, r in enumerate(self.runs) if r.status is None]

    def run(self, images: torch.Tensor) -> None:
        with StopRequest() as stop:
            try:
                while self.stack.epoch < self.config.epochs and self.training:
                    start = self.clock.mark()
                    stats = self.stack.run_epoch(images)
                    values = torch.stack([stats[k] for k in DEVICE_METRICS])  # [metrics, members]
                    self.pending.append((self.stack.epoch, values, start, self.clock.mark()))
                    self.bar.advance()
                    minutes = (time.monotonic() - self.last_checkpoint_at) / 60
                    due, log_due = due_after(self.stack.epoch, self.config, stop, minutes)
                    if due.readback or log_due:
                        self.window(due)
                    if due.stop:
                        break
            except KeyboardInterrupt:  # a second signal: the epoch in flight is abandoned
                self._stop_all("interrupted", "interrupted; the epoch in flight was abandoned")
            finally:
                self.bar.close()
        self.stop_code = stop.exit_code
        if stop.requested:
            self._stop_all("interrupted", "interrupted; checkpoint written")
        self._stop_all("completed", f"trained to epoch {self.stack.epoch}")

    def _stop_all(self, status: str, message: str) -> None:
        for _, run in self.training:
            run.status = status
            resume = f"; resume with: python -m wgan.train --resume {run.folder.path.parent}"
            run.message = message + (resume if status == "interrupted" else "")

    def _rows(self) -> list[list[dict[str, Any]]]:
        """The window's rows, per member (the one host sync of a readback)."""
        values = torch.stack([p[1] for p in self.pending]).cpu().tolist()  # [epochs, metrics, members]
        out: list[list[dict[str, Any]]] = [[] for _ in self.runs]
        per_epoch = images_per_epoch(self.config)
        for (epoch, _, start, end), vals in zip(self.pending, values):
            seconds = self.clock.seconds(start, end)
            for i in range(len(self.runs)):
                row: dict[str, Any] = {"epoch": epoch, **{k: float(vals[m][i]) for m, k in enumerate(DEVICE_METRICS)}}
                row["epoch_time"] = seconds
                row["images_per_s"] = per_epoch / seconds if seconds > 0 else float("inf")
                out[i].append(row)
        self.pending.clear()
        return out

    def window(self, due: Any) -> None:
        rows = self._rows()
        for i, run in self.training:
            bad = next((j for j, r in enumerate(rows[i]) if not all(math.isfinite(r[k]) for k in DEVICE_METRICS)), None)
            self.record(run, rows[i] if bad is None else rows[i][: bad + 1])
            if bad is not None:
                self.diverged(i, run, rows[i][bad])
        live = self.training
        if not live:
            return
        epoch = rows[live[0][0]][-1]["epoch"]
        if due.sample or due.checkpoint:
            self.stack.sync_members()
        for _, run in live:
            if due.sample:
                _write_sample(run.engine, run.folder, run.logger, epoch)
            if due.checkpoint:
                _write_checkpoint(run.engine, run.folder, epoch, numbered=due.numbered)
                run.checkpoint_epoch = epoch
            run.folder.update_run_info(status="running", epoch=epoch, checkpoint_epoch=run.checkpoint_epoch)
        if due.checkpoint:
            self.last_checkpoint_at = time.monotonic()
        self.bar.show_stack([rows[i][-1] for i, _ in live], self.config.epochs)

    def record(self, run: MemberRun, rows: list[dict[str, Any]]) -> None:
        run.folder.append_epoch_log(rows)
        if run.logger is not None:
            run.logger.log_metrics(rows)
        run.last_row = rows[-1] if rows else run.last_row

    def diverged(self, index: int, run: MemberRun, row: dict[str, Any]) -> None:
        """The member stops alone: frozen in the stack, its last good checkpoint kept."""
        self.stack.freeze(index)
        bad = ", ".join(f"{k}={row[k]}" for k in DEVICE_METRICS if not math.isfinite(row[k]))
        keep = (
            f"its last good checkpoint (epoch {run.checkpoint_epoch}) is kept"
            if run.checkpoint_epoch
            else "no checkpoint had been written yet"
        )
        run.status, run.message = "nan", f"diverged at epoch {row['epoch']} ({bad}); stopped alone; {keep}"
        run.folder.update_run_info(status="nan", epoch=row["epoch"], checkpoint_epoch=run.checkpoint_epoch)
        print(f"{run.member.name}: {run.message}; the other members go on", file=sys.stderr)


# --- the invocation --------------------------------------------------------------------------


def _prepare(
    config_file: str | None,
    out: str | None,
    resume: str | None,
    seeds: str | None,
    explicit: dict[str, Any],
    ranks: Ranks,
) -> Plan:
    if resume:
        if seeds is not None:
            raise UsageError("--seeds with --resume: a resumed sweep keeps its members; drop --seeds")
        return _resumed_plan(config_file, resume, explicit, ranks)
    return _new_plan(config_file, out, seeds, explicit, ranks)


def _create_sweep_folder(plan: Plan, ranks: Ranks) -> None:
    """Rank 0 checks and writes sweep.json; every rank learns whether that worked."""
    failure = None
    if ranks.rank == 0:
        try:
            plan.sweep.check_new()
            plan.sweep.write(_sweep_record(plan, sys.argv))
        except (UserError, OSError) as exc:
            failure = one_line(exc)
    failure = ranks.share(failure)
    if failure:
        raise UsageError(failure)


def _member_runs(
    plan: Plan, images: torch.Tensor, config_file: str | None, explicit: dict[str, Any]
) -> list[MemberRun]:
    if not plan.resuming:
        return [_start_member(m, plan, images) for m in plan.mine]
    runs = [_resume_member(m, plan, config_file, explicit) for m in plan.mine]
    live = [r for r in runs if r is not None]
    epochs = {r.engine.epoch for r in live}
    if len(epochs) > 1:
        raise SweepError(
            f"the members to resume stopped at different epochs ({sorted(epochs)}); resume them one by one"
        )
    return live


def train_sweep(
    config_file: str | None, out: str | None, resume: str | None, seeds: str | None, explicit: dict[str, Any]
) -> int:
    """Everything the CLI does for a sweep after parsing; returns the exit code."""
    ranks = Ranks.from_env()
    try:  # what every rank decides alike (the same files, rank 0's verdict shared): all stop together
        plan = _prepare(config_file, out, resume, seeds, explicit, ranks)
        ranks.start(plan.device)
        if not plan.resuming:
            _create_sweep_folder(plan, ranks)
    except (UserError, OSError) as exc:
        if ranks.rank == 0 or not isinstance(exc, UserError):
            print(f"error: {one_line(exc)}", file=sys.stderr)
        ranks.close()
        return EXIT_USAGE
    where = f"rank {ranks.rank}: " if ranks.world > 1 else ""
    runs: list[MemberRun] = []
    try:
        images = _load_data(plan.members[0].config)
        runs = _member_runs(plan, images, config_file, explicit)
        failed = False
    except (UserError, OSError) as exc:
        print(f"error: {where}{one_line(exc)}", file=sys.stderr)
        if ranks.world == 1:
            return EXIT_USAGE
        failed = True  # this rank fails alone: it joins the final barrier, the others train on
    outcomes = ranks.gather((len(runs), failed))  # every rank, failed or not: a collective
    if not any(f for _, f in outcomes) and sum(n for n, _ in outcomes) == 0:
        if ranks.rank == 0:
            done = f"every member in {plan.sweep.path} has trained its epochs; pass --epochs N to train more"
            print(f"error: {done}", file=sys.stderr)
        ranks.close()
        return EXIT_USAGE
    code = EXIT_FAILED if failed else _train_runs(plan, runs, images, ranks)
    _end(plan, ranks, code)
    return code


def _end(plan: Plan, ranks: Ranks, code: int) -> None:
    """The final barrier, then rank 0's statuses and sweep report. A rank stopped by a signal
    (torchrun sends SIGTERM to every rank when one dies) skips the barrier, which a dead rank would
    never pass: its members are checkpointed and resumable, and no report is due."""
    stopped = code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
    if not stopped:
        ranks.barrier()
    if ranks.rank == 0:
        _finish_sweep(plan, report=plan.members[0].config.report and not stopped)
    ranks.close()


def _train_runs(plan: Plan, runs: list[MemberRun], images: torch.Tensor, ranks: Ranks) -> int:
    if not runs:
        return EXIT_OK
    group = plan.sweep.path.name
    stack = StackedEngine([r.engine for r in runs])
    for run in runs:
        _record_start(run, plan, images, group, stack.labels)
    data = runs[0].engine.prepare_images(images)
    where = f"rank {ranks.rank}: " if ranks.world > 1 else ""
    print(
        f"{where}sweep folder {plan.sweep.path}: {len(runs)} members stacked on {plan.device}, "
        f"{'fused' if stack.fused else 'eager'} ({stack.labels['optimizer']}; {stack.labels['stack']}), "
        f"from epoch {stack.epoch}",
        file=sys.stderr,
    )
    loop = StackLoop(stack, runs, None)
    try:
        loop.run(data)
    except Exception as exc:  # reported as this rank's failure; the other ranks' members go on
        for run in runs:
            if run.status is None:
                run.status, run.message = "failed", one_line(exc)
        _close_runs(runs)
        if not isinstance(exc, OSError):
            traceback.print_exc()
        print(f"error: {where}{one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    _close_runs(runs)
    statuses = {r.status for r in runs}
    if "interrupted" in statuses:
        return loop.stop_code
    return EXIT_NAN if "nan" in statuses else EXIT_OK


def _close_runs(runs: list[MemberRun]) -> None:
    for run in runs:
        run.folder.update_run_info(status=run.status or "failed", message=run.message)
        if run.logger is not None:
            run.logger.finish(EXIT_NAN if run.status == "nan" else EXIT_OK)


def _finish_sweep(plan: Plan, report: bool) -> None:
    """sweep.json's statuses, one line per member, and (``report``) the sweep report."""
    info = plan.sweep.refresh()
    for record in info["members"]:
        print(f"{record['name']}: {record['status']}", file=sys.stderr)
    if any(record["status"] in ("interrupted", "failed", "stopped", "running") for record in info["members"]):
        print(f"resume with: python -m wgan.train --resume {plan.sweep.path}", file=sys.stderr)
    if report:
        from wgan.report.sweep import write_sweep_report

        try:
            result = write_sweep_report([plan.sweep.path], device=str(plan.device))
            print(f"sweep report: {result['report']}", file=sys.stderr)
        except Exception as exc:  # the report is an add-on; the members' checkpoints are safe
            print(
                f"warning: the sweep report could not be written ({one_line(exc)}); "
                f"retry with: python -m wgan.report {plan.sweep.path}",
                file=sys.stderr,
            )
    print(f"sweep folder: {plan.sweep.path}")
