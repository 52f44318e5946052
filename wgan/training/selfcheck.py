"""The self-check of a machine, section by section (what ``python -m wgan.check`` runs).


It prints the device, driver and versions, then checks and measures, on that device:

1. every kernel against its plain-PyTorch reference at the seed model's shapes (fp32, and bf16
   where the device has it), each against its op's rounding bound (:mod:`kernels.error_bounds`);
2. one epoch of the fused engine against the eager one from the same state, in float64
   (:func:`wgan.training.parity.same_state_parity`), replayed from CUDA graphs on CUDA (uncaptured on
   a CPU);
3. epoch times: eager vs fused (CUDA graph off and on) at each precision (fp32, TF32, bf16; a CPU:
   eager vs the fused path's reference ops, fp32 and bf16), ``cudnn.benchmark`` on as training sets
   it, medians over repeats;
4. only when asked (``--sections ...,compile``): ``torch.compile`` of the eager steps (a cold compile
   takes a minute or two, so the GPU check runs it last, in a stage of its own).

Sections run in that order of value. Any parity failure makes the exit status 1. ``--quick`` keeps
it under a minute on a CPU (small batches; the Triton kernels run in the interpreter there, as in
CI). ``--jsonl PATH`` appends every result as one JSON line, flushed the moment it exists (the
environment first), so a check stopped at its time budget keeps everything it measured; ``--json
PATH`` writes every figure at the end. On a CPU the interpreter is switched on before Triton is
imported, unless ``TRITON_INTERPRET`` is already set.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Result:
    """One line of the report: a parity check (``ok`` True/False) or a measurement (``ok`` None)."""

    section: str
    name: str
    ok: bool | None
    value: float | None = None
    unit: str = ""
    detail: str = ""


@dataclass
class Report:
    device: str
    environment: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    jsonl: Path | None = None  # every result appended here as one JSON line, at once

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.ok is False]

    def add(self, result: Result) -> Result:
        self.results.append(result)
        print(_line(result), flush=True)
        self.write_line({"section": result.section, **asdict(result)})
        return result

    def write_line(self, record: dict[str, Any]) -> None:
        """One JSON line, flushed and synced to the file now: a kill a moment later loses nothing before it."""
        if self.jsonl is None:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"device": self.device, "time": round(time.time(), 3), **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _line(r: Result) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "    "}[r.ok]
    value = "" if r.value is None else f"{r.value:.4g} {r.unit}".strip()
    return f"  {mark} {r.section:<8} {r.name:<52} {value:>18}  {r.detail}"


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    """What ran: device, driver, versions, whether Triton is compiled or interpreted."""
    import triton

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "device": str(device),
        "triton_interpreter": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=props.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=_driver_version(),
        )
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def _driver_version() -> str | None:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def half_types(device: torch.device) -> list[torch.dtype]:
    """The half type the kernels are checked in on this device: bf16, the training precision (the
    interpreter has none; fp16 is left to the kernel tests)."""
    if device.type != "cuda":
        return []
    return [torch.bfloat16] if torch.cuda.is_bf16_supported() else []


# --------------------------------------------------------------------------------------------
# 1. kernels vs their references
# --------------------------------------------------------------------------------------------


def _bounded(section: str, name: str, pairs: list[tuple[str, torch.Tensor, torch.Tensor, Any]]) -> Result:
    """One result for several (what, actual, expected, bound): the worst ratio of |diff| to bound."""
    from kernels.error_bounds import over_bound

    worst, where, bad = 0.0, "", 0
    for what, actual, expected, bound in pairs:
        n_bad, ratio, _ = over_bound(actual, expected, bound)
        bad += n_bad
        if ratio >= worst:
            worst, where = ratio, what
    detail = f"worst {where}" + (f"; {bad} elements over their bound" if bad else "")
    return Result(section, name, bad == 0, worst, "of bound", detail)


def check_bias_leaky_relu(device: torch.device, batch: int, dtype: torch.dtype, channels_last: bool) -> Result:
    import kernels
    from kernels.error_bounds import bias_leaky_relu_bounds, unit_roundoff
    from wgan.config import WGANConfig, conv_out_side

    config, pairs = WGANConfig(), []
    side = config.image_size
    for filters, stride in zip(config.critic_filters, config.critic_strides):
        side = conv_out_side(side, config.critic_kernel_size, stride)
        x = torch.randn(batch, filters, side, side, device=device).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bias = torch.randn(filters, device=device).to(dtype)
        grad = torch.randn_like(x)
        xa, ba = x.clone().requires_grad_(), bias.clone().requires_grad_()
        ya = kernels.bias_leaky_relu(xa, ba, config.critic_leaky_slope, impl="triton")
        ya.backward(grad)
        xr, br = x.double().requires_grad_(), bias.double().requires_grad_()
        yr = kernels.bias_leaky_relu_reference(xr, br, config.critic_leaky_slope)
        yr.backward(grad.double())
        y_b, gx_b, gb_b = bias_leaky_relu_bounds(x.float(), bias.float(), grad.float(), xr.grad.float())
        half = unit_roundoff(dtype) if dtype != torch.float32 else 0.0  # the result's one rounding
        pairs += [
            (f"y {tuple(x.shape)}", ya, yr, y_b + half * yr.abs()),
            (f"grad_x {tuple(x.shape)}", xa.grad, xr.grad, gx_b + half * xr.grad.abs()),
            (f"grad_bias {tuple(x.shape)}", ba.grad, br.grad, gb_b + half * br.grad.abs()),
        ]
    layout = "channels_last" if channels_last else "NCHW"
    return _bounded("kernel", f"bias_leaky_relu {str(dtype)[6:]} {layout} batch {batch}", pairs)


def check_wasserstein_head(device: torch.device, batch: int, dtype: torch.dtype) -> Result:
    import kernels
    from kernels.error_bounds import unit_roundoff, wasserstein_grad_bounds, wasserstein_loss_bounds

    features = torch.randn(2 * batch, 2048, device=device).to(dtype)
    weight = (torch.randn(1, 2048, device=device) * 0.02).to(dtype)
    bias = torch.randn(1, device=device).to(dtype)
    upstream = torch.randn(3)
    leaves = [t.clone().requires_grad_() for t in (features, weight, bias)]
    refs = [t.double().requires_grad_() for t in (features, weight, bias)]
    ours = torch.stack(kernels.wasserstein_critic_head(*leaves, batch, impl="triton"))
    theirs = torch.stack(kernels.wasserstein_critic_head_reference(*refs, batch))
    (ours.float() * upstream.to(device)).sum().backward()
    (theirs * upstream.to(device).double()).sum().backward()
    half = unit_roundoff(dtype) if dtype != torch.float32 else 0.0
    f32 = [t.float() for t in (features, weight, bias)]
    pairs = [("losses", ours, theirs, wasserstein_loss_bounds(*f32, batch) + half * theirs.abs())]
    for what, a, r, b in zip(
        ("grad_features", "grad_weight", "grad_bias"),
        leaves,
        refs,
        wasserstein_grad_bounds(f32[0], f32[1], batch, upstream),
    ):
        pairs.append((what, a.grad, r.grad, b + half * r.grad.abs()))
    return _bounded("kernel", f"wasserstein_critic_head {str(dtype)[6:]} [{2 * batch}, 2048]", pairs)


def check_rmsprop(device: torch.device) -> Result:
    """One FusedRMSprop step (the trainer's hyper-parameters, clip) on the seed critic's tensors."""
    from kernels.error_bounds import rmsprop_first_step_bound
    from kernels.rmsprop import FusedRMSprop
    from wgan.config import WGANConfig

    config = WGANConfig()
    gen = torch.Generator().manual_seed(0)
    shapes = config.critic_params_shapes
    start = [(torch.randn(s, generator=gen) * 0.01).to(device) for s in shapes]
    grads = [(torch.randn(s, generator=gen) * 1e-3).to(device) for s in shapes]
    ours = [p.clone().requires_grad_() for p in start]
    ref = [p.clone().requires_grad_() for p in start]
    kwargs = dict(lr=config.lr_critic, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps)
    fused, eager = (
        FusedRMSprop(ours, clip_value=config.clip_threshold, impl="triton", **kwargs),
        torch.optim.RMSprop(ref, foreach=False, **kwargs),
    )
    for p, q, g in zip(ours, ref, grads):
        p.grad, q.grad = g.clone(), g.clone()
    fused.step()
    eager.step()
    with torch.no_grad():
        for q in ref:
            q.clamp_(-config.clip_threshold, config.clip_threshold)
    pairs = [
        (f"param {tuple(p.shape)}", p, q, rmsprop_first_step_bound(p0, g, **kwargs))
        for p, q, p0, g in zip(ours, ref, start, grads)
    ]
    return _bounded("kernel", f"FusedRMSprop + clip, seed critic ({sum(p.numel() for p in start):,} values)", pairs)


def kernel_checks(report: Report, device: torch.device, quick: bool) -> None:
    batch = 2 if device.type == "cpu" else (64 if quick else 512)
    for dtype in [torch.float32] + half_types(device):
        for channels_last in (False, True):
            report.add(check_bias_leaky_relu(device, batch, dtype, channels_last))
        report.add(check_wasserstein_head(device, batch, dtype))
    report.add(check_rmsprop(device))


# --------------------------------------------------------------------------------------------
# 2. one epoch, fused vs eager, from the same state
# --------------------------------------------------------------------------------------------


def parity_config(device: torch.device, quick: bool):
    """The seed model (tiny on a CPU: float64 convolutions through the interpreter are slow)."""
    from wgan.config import WGANConfig

    if device.type == "cpu":
        return WGANConfig(
            image_size=16,
            generator_initial_size=4,
            generator_initial_channels=8,
            generator_filters=(8, 8, 3),
            generator_upsample=(2, 2, 1),
            critic_filters=(8, 16, 16),
            critic_strides=(2, 2, 1),
            critic_kernel_size=3,
            generator_kernel_size=3,
            z_dim=8,
            batch_size=8,
            precision="fp32",
        )
    return WGANConfig(batch_size=64 if quick else 512, precision="fp32")


def epoch_checks(report: Report, device: torch.device, quick: bool) -> None:
    from wgan.training.engine import build_engine
    from wgan.training.parity import same_state_parity

    config = parity_config(device, quick)
    images = (
        torch.rand(
            256, config.image_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)
        )
        * 2
        - 1
    )
    engine = build_engine(config, "cpu")  # the state is made on the CPU: only the comparison needs the device
    for _ in range(3):
        engine.run_epoch(images)
    state = engine.state_dict()
    for captured in [True] if device.type == "cuda" else [False]:  # the captured path covers the uncaptured
        t0 = time.perf_counter()
        parity = same_state_parity(state, images, device=device, captured=captured)
        name = f"fused vs eager, one epoch from the same state{' (CUDA graph)' if captured else ''}"
        report.add(
            Result(
                "epoch",
                name,
                parity.ok,
                parity.worst.relative,
                f"(bound {parity.bound:.0e})",
                f"float64, batch {config.batch_size}, worst {parity.worst.name}, {time.perf_counter() - t0:.1f} s",
            )
        )


# --------------------------------------------------------------------------------------------
# 3. timing
# --------------------------------------------------------------------------------------------


def _median_epoch_seconds(step: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first (compiles, warms caches) is not counted
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def timing_precisions(device: torch.device) -> list[str]:
    """TF32 exists on GPUs only."""
    return ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def timing_cases(device: torch.device, compiled: bool = False) -> dict[str, dict[str, Any]]:
    """name -> build_engine arguments; ``compiled``: the torch.compile case alone (CUDA: on a CPU its
    C++ build takes minutes and its speed is no claim of this project)."""
    if compiled:
        return {"torch.compile (eager)": dict(fused=False, compiled=True)} if device.type == "cuda" else {}
    if device.type == "cpu":  # the interpreter's time is no claim: the fused path's reference ops instead
        return {"eager": dict(fused=False), "fused (ref kernels)": dict(fused=True, impl="ref")}
    return {
        "eager": dict(fused=False),
        "fused, CUDA graph off": dict(fused=True, cuda_graph=False),
        "fused, CUDA graph on": dict(fused=True, cuda_graph=True),
    }


def _time_case(case: dict[str, Any], config: Any, device: torch.device, images: torch.Tensor, repeats: int) -> float:
    """Median seconds per epoch of one case, built as training builds it (cudnn.benchmark included)."""
    from wgan.training.cuda_graph import epoch_runner
    from wgan.training.engine import build_engine

    engine = build_engine(config, device, impl=case.get("impl"))
    data = engine.prepare_images(images)
    if case.get("compiled"):
        engine.critic_step = torch.compile(engine.critic_step)
        engine.generator_step = torch.compile(engine.generator_step)
    runner = epoch_runner(engine, data).run
    return _median_epoch_seconds(lambda: runner(data), device, repeats)


def timing_checks(report: Report, device: torch.device, quick: bool, compiled: bool = False) -> None:
    """Every case at every precision, each line written as soon as it is measured."""
    from wgan.config import WGANConfig

    batch = (8 if quick else 64) if device.type == "cpu" else 512
    repeats = (1 if quick else 3) if device.type == "cpu" else (5 if quick else 20)
    images = torch.rand(1024, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eager: dict[str, float] = {}
    for precision in timing_precisions(device):
        for name, case in timing_cases(device, compiled).items():
            config = WGANConfig(
                batch_size=batch, fused=case["fused"], cuda_graph=case.get("cuda_graph", False), precision=precision
            )
            median = _time_case(case, config, device, images, repeats)
            eager.setdefault(precision, median)  # the first case of a precision is eager (or compile alone)
            report.add(
                Result(
                    "compile" if compiled else "timing",
                    f"{name} {precision}, batch {batch}",
                    None,
                    median * 1e3,
                    "ms/epoch",
                    f"{eager[precision] / median:.2f}x eager {precision}; 12000 epochs ~ {median * 12000:.0f} s",
                )
            )


def compile_checks(report: Report, device: torch.device, quick: bool) -> None:
    """torch.compile of the eager steps at each precision (cold compiles: the GPU check's last stage)."""
    timing_checks(report, device, quick, compiled=True)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


SECTIONS: dict[str, Callable[[Report, torch.device, bool], None]] = {
    "kernels": kernel_checks,
    "epoch": epoch_checks,
    "timing": timing_checks,
    "compile": compile_checks,
}
DEFAULT_SECTIONS = ("kernels", "epoch", "timing")


def run_check(
    device: torch.device, quick: bool, sections: tuple[str, ...] = DEFAULT_SECTIONS, jsonl: Path | None = None
) -> Report:
    report = Report(str(device), environment(device), jsonl=jsonl)
    print("wgan.check: " + ", ".join(f"{k} {v}" for k, v in report.environment.items()), flush=True)
    report.write_line({"section": "environment", **report.environment})
    for title in sections:
        section = SECTIONS[title]
        t0 = time.perf_counter()
        try:
            section(report, device, quick)
        except Exception as exc:  # a section that crashes is a failed check, and the others still run
            report.add(Result(title, "section crashed", False, detail=f"{type(exc).__name__}: {exc}"))
        report.environment[f"seconds_{title}"] = round(time.perf_counter() - t0, 2)
    return report
