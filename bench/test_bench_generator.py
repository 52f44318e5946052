"""Generator forward and forward + backward: FusedGenerator vs eager Generator vs torch.compile.

Two timed calls, both in training mode (batch statistics), on the seed configuration:

* ``fwd``: the generator under ``no_grad``, what each of the epoch's five critic steps runs to make
  its fakes;
* ``fwd+bwd``: gradients cleared, images generated, ``backward`` of a fixed random projection of
  them (the generator step's autograd work without the critic).

Every case then checks what it timed against the eager generator on the same weights and z run in
float64: images and every parameter gradient at least as accurate as eager float32's own
(``assert_parity`` says why not a fixed tolerance; tests/ hold 1e-5 at batch 2-3).

CPU: batch 64 and 512, the fused module with the plain-PyTorch epilogue (``impl='ref'``: the
polyphase convolutions, pixel shuffle, ``F.batch_norm``, ``F.leaky_relu``; what ``--fused`` runs on a
CPU without the Triton interpreter), in its default layout (NHWC inside on a CPU, NCHW images),
NCHW throughout and channels_last, vs eager in NCHW and in channels_last. ``torch.compile`` on a
CPU builds C++ for about a minute per shape here, so its CPU cases run only with
``WGAN_BENCH_COMPILE_CPU=1``. The Triton-interpreter case runs at batch 2 for parity only (its
time is no claim). CUDA: batch 512, the Triton epilogue, fp32 (TF32 off) with ``cudnn.benchmark``.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels._dispatch import triton_can_run
from wgan.config import WGANConfig
from wgan.models.eager import Generator
from wgan.models.fused_generator import FusedGenerator

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
CONFIG = WGANConfig()
RTOL = 1e-4
COMPILE_CPU = os.environ.get("WGAN_BENCH_COMPILE_CPU") == "1"
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA only")
cpu_only = pytest.mark.skipif(CUDA, reason="the CPU comparison; on a GPU the CUDA cases run instead")


pytestmark = pytest.mark.usefixtures("strict_fp32_benchmark")


def build(impl: str | None, channels_last: bool | None = None) -> tuple[Generator, FusedGenerator]:
    """(eager, fused) with the seed's initial weights; ``channels_last=True`` also puts the eager
    generator's weights in channels_last (what ``--channels-last`` does), so its convolutions run NHWC."""
    torch.manual_seed(0)
    eager = Generator(CONFIG).to(DEVICE).train()
    fused = FusedGenerator(CONFIG, impl=impl, channels_last=channels_last).to(DEVICE).train()
    fused.load_state_dict(eager.state_dict())
    if channels_last:
        eager.to(memory_format=torch.channels_last)
    return eager, fused


def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(n)
    z = torch.randn(n, CONFIG.z_dim, device=DEVICE, generator=g)
    proj = torch.randn(n, CONFIG.image_channels, CONFIG.image_size, CONFIG.image_size, device=DEVICE, generator=g)
    return z, proj


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def forward(model: nn.Module, z: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(z)
    _sync()
    return y


def forward_backward(model: nn.Module, z: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    for p in model.parameters():
        p.grad = None
    y = model(z)
    (y * proj).sum().backward()
    _sync()
    return y


STEPS = {"fwd": forward, "fwd+bwd": forward_backward}


@functools.cache
def _results(
    step: str, batch: int, dtype: torch.dtype, channels_last: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """(images, parameter gradients, magnitudes) of the eager generator at the benchmarks' weights,
    in ``dtype`` (and NHWC with ``channels_last``). The magnitudes are what each value sums: for a
    bias ``max over channels of sum |dL/d(layer output)|`` (its gradient is exactly zero where batch
    norm follows); for the images ``max of tanh'(z) * (|W| * |a| + |b|)`` over the last layer."""
    eager, _ = build("ref", channels_last)
    eager = eager.to(dtype)
    z, proj = inputs(batch)
    outputs: dict[str, torch.Tensor] = {}
    last_input: list[torch.Tensor] = []
    last = eager.body[-2]
    for name, m in eager.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:

            def hook(m, inp, out, name=name):
                if m is last:
                    last_input.append(inp[0].detach())
                if out.requires_grad:
                    out.retain_grad()
                    outputs[f"{name}.bias"] = out

            m.register_forward_hook(hook)
    images = STEPS[step](eager, z.to(dtype), proj.to(dtype)).double()
    with torch.no_grad():
        summed = F.conv_transpose2d(last_input[0].abs(), last.weight.abs(), last.bias.abs(), padding=last.padding)
        scales = {"images": ((1 - images.square()) * summed.double()).max().item()}
    if step == "fwd":
        return images, {}, scales
    grads = {name: p.grad.double() for name, p in eager.named_parameters()}
    scales.update(
        {
            name: out.grad.abs().sum([d for d in range(out.dim()) if d != 1]).max().item()
            for name, out in outputs.items()
        }
    )
    return images, grads, scales


def assert_parity(step: str, batch: int, timed: nn.Module, images: torch.Tensor) -> None:
    """The timed path is as accurate as the eager float32 generator, all measured against the eager
    generator in float64: ``err(timed) <= 2 * err(eager fp32) + 1e-5 * scale`` per tensor (max-abs),
    ``err(eager fp32)`` the larger of eager's NCHW and channels_last errors (two summation orders
    the trainer offers), ``scale`` the tensor's largest element or, if larger, the magnitude summed
    into it (``_results``).

    Why not a fixed tolerance against eager fp32: at the seed's initial weights several gradients
    are sums with heavy cancellation (batch norm's backward sums 64 x 1024 terms per channel of
    gradient 0.02-weight layers), so eager fp32 itself is off from float64 by up to 3e-3 of the
    largest element at batch 64, and two correct fp32 implementations differ by as much; and the
    images sum 800 terms of ~10x their own size into tanh, so NHWC and NCHW eager differ by 2e-5.
    """
    truth_images, truth_grads, scales = _results(step, batch, torch.float64)
    eager = [_results(step, batch, torch.float32, cl) for cl in (False, True)]
    pairs = [("images", images.double(), [e[0] for e in eager], truth_images)]
    if step == "fwd+bwd":
        for name, p in timed.named_parameters():
            name = name.removeprefix("_orig_mod.")  # a torch.compile'd module's parameter names
            pairs.append((name, p.grad.double(), [e[1][name] for e in eager], truth_grads[name]))
    for name, ours, eagers, truth in pairs:
        err = (ours - truth).abs().max().item()
        eager_err = max((e - truth).abs().max().item() for e in eagers)
        bound = 2 * eager_err + 1e-5 * max(truth.abs().max().item(), scales.get(name, 0.0))
        assert err <= bound, f"{name}: error {err:.3g} vs float64, eager fp32's {eager_err:.3g} (bound {bound:.3g})"


def run_case(benchmark, step: str, batch: int, case: str, model: nn.Module, rounds: int, device_name: str) -> None:
    if benchmark.disabled and batch > 64 and not CUDA:
        pytest.skip("CPU batch 512 is timed only with --benchmark-only (the same code as batch 64, 10x the time)")
    benchmark.group = f"generator {step}, {device_name} batch {batch}"
    benchmark.extra_info.update({"case": case, "batch": batch, "threads": torch.get_num_threads()})
    z, proj = inputs(batch)
    fn = STEPS[step]
    for _ in range(2 if CUDA else 1):  # warm-up: cuDNN autotuning, Triton compilation, allocator
        fn(model, z, proj)
    images = benchmark.pedantic(fn, args=(model, z, proj), rounds=rounds, iterations=1, warmup_rounds=0)
    assert_parity(step, batch, model, images)


CPU_ROUNDS = {64: 9, 512: 3}


# ------------------------------------------------------------------------------------------------
# CPU
# ------------------------------------------------------------------------------------------------
LAYOUTS = {"auto": None, "nchw": False, "channels_last": True}


@cpu_only
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("batch", [64, 512])
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cpu_eager(benchmark, step, batch, layout):
    """Eager Generator: NCHW (the default) and with --channels-last's NHWC weights."""
    eager, _ = build("ref", LAYOUTS[layout])
    run_case(
        benchmark,
        step,
        batch,
        "eager" if layout == "nchw" else "eager (channels_last)",
        eager,
        CPU_ROUNDS[batch],
        "CPU",
    )


@cpu_only
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch", [64, 512])
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cpu_fused_ref(benchmark, step, batch, layout):
    """The default (auto: NHWC inside on a CPU, NCHW images), NCHW throughout, and channels_last."""
    _, fused = build("ref", LAYOUTS[layout])
    case = "fused (ref)" if layout == "auto" else f"fused (ref, {layout})"
    run_case(benchmark, step, batch, case, fused, CPU_ROUNDS[batch], "CPU")


@cpu_only
@pytest.mark.skipif(
    not COMPILE_CPU, reason="set WGAN_BENCH_COMPILE_CPU=1: the C++ build takes about a minute per shape on this CPU"
)
@pytest.mark.parametrize("batch", [64, 512])
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cpu_torch_compile_eager(benchmark, step, batch):
    eager, _ = build("ref")
    run_case(benchmark, step, batch, "torch.compile", torch.compile(eager), CPU_ROUNDS[batch], "CPU")


@cpu_only
@pytest.mark.skipif(not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1 (bench/conftest.py sets it)")
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cpu_fused_triton_interpreter(benchmark, step):
    """Not a performance figure: the interpreter runs each Triton program in numpy."""
    _, fused = build("triton")
    benchmark.extra_info["interpreted"] = True
    run_case(benchmark, step, 2, "fused_triton", fused, 2, "CPU interpreter")


# ------------------------------------------------------------------------------------------------
# CUDA, batch 512
# ------------------------------------------------------------------------------------------------
@cuda_only
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cuda_eager(benchmark, step):
    eager, _ = build("triton")
    run_case(benchmark, step, 512, "eager", eager, 20, "CUDA")


@cuda_only
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cuda_fused(benchmark, step, channels_last):
    _, fused = build("triton", channels_last)
    run_case(benchmark, step, 512, "fused (channels_last)" if channels_last else "fused", fused, 20, "CUDA")


@cuda_only
@pytest.mark.parametrize("step", list(STEPS))
def test_generator_cuda_torch_compile_eager(benchmark, step):
    eager, _ = build("triton")
    run_case(benchmark, step, 512, "torch.compile", torch.compile(eager), 20, "CUDA")
