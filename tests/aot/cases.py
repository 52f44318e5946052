"""The launches to compile: the project's own launchers, called on ``meta`` tensors.

Each case calls a public launcher (``bias_leaky_relu_forward/backward``,
``wasserstein_head_forward/backward``, ``rmsprop_clip_step``, ``FusedRMSprop.step``) or runs the
seed model's fused critic and optimizers end to end, so Triton sees exactly the arguments, tiles,
``num_warps`` and constexprs those launchers pass on a GPU (``kernels._launch`` treats ``meta`` as
a GPU). Meta tensors have shapes and strides but no memory, so the deliberately huge inputs (up
to 2**31 elements and beyond) cost nothing.

Coverage: every accepted dtype (and the mixed-precision pairs the trainer produces), every flag
each launcher can set, NCHW / channels_last / 2-D layouts, the seed model's shapes at batch 1024,
odd shapes (arguments that are not multiples of 16 specialise differently), and shapes past the
32-bit and grid-axis limits.

Tiers, so that a CI run stays within minutes on 2 cores (one compile costs 0.2-0.6 CPU-seconds):

* ``all``: compiled for every arch. The seed model end to end; fp32 and bf16-autocast (bf16
  activations, fp32 parameters) at every seed shape with both slopes, and fp32 at the huge
  shapes; every other dtype pair at the first layer's / the critic head's seed shape; the
  rmsprop kernel in fp32 with every flag on alone, off alone, all on and all off, and in every
  dtype through ``rmsprop_clip_step``.
* ``primary``: compiled for sm_90 (the H200 the project targets) only: the whole rmsprop flag
  product (256 combinations) in fp32 and all flags on / all off in fp16 and bf16; every dtype
  pair at every seed shape with the trainer's slope, and with a negative slope at the first
  layer's; odd and 2-D shapes for fp32 and bf16-autocast.
* ``full``: only with ``--full``: the whole rmsprop flag product in fp16 and bf16 (the flags and
  the parameter dtype touch disjoint lines of the kernel: the update vs. the loads and stores),
  odd shapes and negative slopes in the remaining dtype pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels.bias_act import bias_leaky_relu_backward, bias_leaky_relu_forward
from kernels.bn_act import bn_leaky_relu_shuffle_apply, bn_leaky_relu_shuffle_backward, bn_shuffle_stats
from kernels.rmsprop import SUPPORTED_DTYPES, FusedRMSprop, SliceHParams, rmsprop_clip_step, state_dtype
from kernels.wasserstein import wasserstein_head_backward, wasserstein_head_forward
from wgan.config import WGANConfig
from wgan.models.eager import Critic, Generator
from wgan.models.fused_critic import FusedCritic
from wgan.models.fused_generator import FusedGenerator

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPE_NAMES = {F16: "fp16", BF16: "bf16", F32: "fp32", F64: "fp64"}
# (activation or features, bias or weight): every float type alone, plus the autocast pairs
# (half activations from a convolution, fp32 parameters)
DTYPE_PAIRS = ((F32, F32), (F16, F16), (BF16, BF16), (F64, F64), (F16, F32), (BF16, F32))
SEED_BATCH = 1024  # 512 real + 512 fake through the critic in one pass
SEED_ACTIVATIONS = ((SEED_BATCH, 32, 16, 16), (SEED_BATCH, 64, 8, 8), (SEED_BATCH, 128, 4, 4), (SEED_BATCH, 128, 4, 4))
SEED_FEATURES = 2048
LR = 5e-5  # the seed config's learning rates
CLIP = 0.01  # the seed config's clip threshold


@dataclass(frozen=True)
class Case:
    id: str
    group: str  # the cases of one group run in one worker task, so shared kernels compile once
    run: Callable[[], None]
    tier: str = "all"  # "all", "primary" or "full" (module docstring)


def _name(pair: tuple[torch.dtype, torch.dtype]) -> str:
    return f"{DTYPE_NAMES[pair[0]]}-{DTYPE_NAMES[pair[1]]}"


def meta(shape: tuple[int, ...], dtype: torch.dtype, layout: str = "contiguous") -> torch.Tensor:
    """An uninitialised tensor without memory; ``layout='channels_last'`` gives NHWC strides."""
    t = torch.empty(shape, dtype=dtype, device="meta")
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


# ---------------------------------------------------------------------------------------------
# bias + LeakyReLU: CHANNEL_ON_ROWS (NCHW) x SAVED_IS_INPUT (negative slope) x UPCAST (half types)
# ---------------------------------------------------------------------------------------------
_SEED_SHAPES = list(dict.fromkeys(SEED_ACTIVATIONS))  # the last two layers share a shape
BIAS_SHAPES = (
    [(s, "contiguous") for s in _SEED_SHAPES]
    + [(s, "channels_last") for s in _SEED_SHAPES]
    + [
        ((SEED_BATCH, 128), "contiguous"),  # 2-D [N, C]: channel on the columns
        ((3, 5, 7, 9), "contiguous"),
        ((3, 5, 7, 9), "channels_last"),  # nothing a multiple of 16
    ]
)
BIAS_HUGE = [
    ((1, 2, 2**15, 2**14 + 1), "contiguous"),  # NCHW, H*W = 2**29 + 2**15 > 2**28: 131,073 column tiles per row
    ((2, 2**28 + 16, 1, 2), "channels_last"),  # C > 2**28 on the columns: 65,537 column tiles
    ((2**17, 2**14 + 1, 1, 1), "contiguous"),  # NCHW, N*C = 2**31 + 2**17 rows of one element
    ((1, 1, 2**16, 2**15 + 1), "contiguous"),  # NCHW, H*W = 2**31 + 2**16 columns in one row
]


def _bias_case(shape: tuple[int, ...], layout: str, pair: tuple[torch.dtype, torch.dtype], slope: float) -> Callable:
    def run() -> None:
        x = meta(shape, pair[0], layout)
        bias = meta((shape[1],), pair[1])
        y = bias_leaky_relu_forward(x, bias, slope)
        saved_is_input = slope < 0  # what BiasLeakyReLUFunction saves
        bias_leaky_relu_backward(torch.empty_like(y), x if saved_is_input else y, bias, slope, saved_is_input)

    return run


MAIN_PAIRS = ((F32, F32), (BF16, F32))  # fp32 training, and bf16 autocast (bf16 activations, fp32 parameters)


def _bias_tier(shape: tuple[int, ...], pair: tuple[torch.dtype, torch.dtype], slope: float) -> str:
    """fp32 and bf16-autocast: every seed shape and both slopes everywhere (which gives the whole
    CHANNEL_ON_ROWS x SAVED_IS_INPUT x UPCAST product); other pairs: the first layer everywhere."""
    if shape in {s for s, _ in BIAS_HUGE}:
        return "all" if pair == (F32, F32) else "primary"
    if shape not in SEED_ACTIVATIONS:  # 2-D and odd shapes
        return "primary" if pair in MAIN_PAIRS else "full"
    if pair in MAIN_PAIRS or (shape == SEED_ACTIVATIONS[0] and slope > 0):
        return "all"
    return "primary" if shape == SEED_ACTIVATIONS[0] or slope > 0 else "full"


def bias_act_cases() -> list[Case]:
    cases = []
    for pair in DTYPE_PAIRS:
        shapes = BIAS_SHAPES + (BIAS_HUGE if pair in ((F32, F32), (BF16, F32)) else [])
        for (shape, layout), slope in itertools.product(shapes, (0.2, -0.2)):
            dims = "x".join(map(str, shape))
            tier = _bias_tier(shape, pair, slope)
            cases.append(
                Case(
                    f"bias_act/{_name(pair)}/{layout}/{dims}/slope={slope}",
                    f"bias_act/{_name(pair)}",
                    _bias_case(shape, layout, pair, slope),
                    tier,
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# Batch norm + LeakyReLU + pixel shuffle: S x CL x FROM_VAR x TRAINING x UPDATE_RUNNING
# ---------------------------------------------------------------------------------------------
SEED_GENERATOR_BATCH = 512  # the generator step's batch; a critic step generates as many fakes
# the seed generator's phase tensors [N, s*s*C, H, W] (scale 2): 128, 64 and 32 output channels
SEED_PHASES = (
    (SEED_GENERATOR_BATCH, 512, 4, 4),
    (SEED_GENERATOR_BATCH, 256, 8, 8),
    (SEED_GENERATOR_BATCH, 128, 16, 16),
)
BN_ODD = [  # (shape, scale): nothing a multiple of 16; no shuffle (after a ConvTranspose2d); scale 3
    ((3, 4 * 5, 7, 9), 2),
    ((3, 5, 7, 9), 1),
    ((2, 9 * 3, 5, 6), 3),
]
BN_HUGE = [  # past 2**31 elements, so every offset needs int64
    ((1, 4, 2**15, 2**14 + 1), 2, "contiguous"),  # one channel: 2**31 + 2**17 values in 4 rows
    ((2, 4, 2**14, 2**14 + 1), 2, "channels_last"),  # 2**29 rows of 4 phase channels
    ((2, 4 * (2**20 + 1), 16, 16), 2, "contiguous"),  # 2**20 + 1 channels: a wide merge grid
    ((2**19 + 1, 4 * 1024, 1, 1), 2, "contiguous"),  # NCHW, 2**31 + 4096 rows: int64 coordinates (WIDE)
    ((1, 4 * (2**29 + 1), 1, 1), 2, "channels_last"),  # NHWC, 2**31 + 4 phase-channel columns (WIDE)
]
BN_MOMENTUM, BN_EPS, BN_SLOPE = 0.2, 1e-3, 0.2  # the seed config's


def _bn_case(shape: tuple[int, ...], scale: int, layout: str, pair: tuple[torch.dtype, torch.dtype], mode: str):
    """mode: 'train' (batch statistics, running ones updated, with and without a left-out input
    bias), 'train-no-running' (batch statistics
    only) or 'eval' (the running statistics read); forward and backward each time."""

    def run() -> None:
        x = meta(shape, pair[0], layout)
        c = shape[1] // (scale * scale)
        weight, bias = meta((c,), pair[1]), meta((c,), pair[1])
        running_mean, running_var = (
            (None, None) if mode == "train-no-running" else (meta((c,), pair[1]), meta((c,), pair[1]))
        )
        training = mode != "eval"
        if training:
            mean, stat = bn_shuffle_stats(x, running_mean, running_var, scale, BN_MOMENTUM, BN_EPS)
            if running_mean is not None:  # the generator's: the convolution's bias folded into the running mean
                bn_shuffle_stats(x, running_mean, running_var, scale, BN_MOMENTUM, BN_EPS, meta((c,), pair[1]))
        else:
            mean, stat = running_mean, running_var
        args = (weight, bias, scale, BN_SLOPE, BN_EPS)
        y = bn_leaky_relu_shuffle_apply(x, mean, stat, *args, from_var=not training)
        bn_leaky_relu_shuffle_backward(torch.empty_like(y), x, mean, stat, *args, training, not training)

    return run


def _bn_tier(shape: tuple[int, ...], pair: tuple[torch.dtype, torch.dtype], mode: str) -> str:
    """fp32 and bf16-autocast at the seed shapes in both modes everywhere, fp32 past 2**31 everywhere;
    the other pairs at the first seed shape on sm_90; odd shapes of the main pairs on sm_90."""
    if shape in {s for s, _, _ in BN_HUGE}:
        return "all" if pair == (F32, F32) else "primary"
    if shape in SEED_PHASES:
        if pair in MAIN_PAIRS and mode != "train-no-running":
            return "all"
        return "primary" if shape == SEED_PHASES[0] or pair in MAIN_PAIRS else "full"
    return "primary" if pair in MAIN_PAIRS else "full"


def bn_act_cases() -> list[Case]:
    seed = [(s, 2, layout) for s in SEED_PHASES for layout in ("contiguous", "channels_last")]
    odd = [(s, scale, layout) for s, scale in BN_ODD for layout in ("contiguous", "channels_last")]
    cases = []
    for pair in DTYPE_PAIRS:
        shapes = seed + odd + (BN_HUGE if pair in MAIN_PAIRS else [])
        for (shape, scale, layout), mode in itertools.product(shapes, ("train", "eval", "train-no-running")):
            dims = "x".join(map(str, shape))
            cases.append(
                Case(
                    f"bn_act/{_name(pair)}/{layout}/{dims}/scale={scale}/{mode}",
                    f"bn_act/{_name(pair)}",
                    _bn_case(shape, scale, layout, pair, mode),
                    _bn_tier(shape, pair, mode),
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# Wasserstein head: HAS_FAKE (critic: n_real < N) or not (generator: every row counted as real)
# ---------------------------------------------------------------------------------------------
HEAD_SHAPES = [
    (SEED_BATCH, SEED_FEATURES, SEED_BATCH // 2),  # critic: 512 real + 512 fake
    (SEED_BATCH, SEED_FEATURES, SEED_BATCH),  # generator loss on 1024 fakes
    (SEED_BATCH // 2, SEED_FEATURES, SEED_BATCH // 2),  # generator loss at the seed batch of 512
    (1000, 1001, 500),
    (1000, 1001, 1000),  # nothing a multiple of 16
]
HEAD_HUGE = [
    (2, 8_388_496, 1),
    (2, 8_388_496, 2),  # F > 8,388,480 = 65535 * 128: 65,536 column tiles in the backward
    (2**21, 1024, 2**20),  # 2**31 feature values, 65,536 row tiles in the backward
    (2**31 + 64, 1, 2**30),  # N > 2**31 rows of one feature
]


def _head_case(n: int, f: int, n_real: int, pair: tuple[torch.dtype, torch.dtype]) -> Callable:
    def run() -> None:
        features, weight, bias = meta((n, f), pair[0]), meta((1, f), pair[1]), meta((1,), pair[1])
        out = wasserstein_head_forward(features, weight, bias, n_real)
        wasserstein_head_backward(torch.empty_like(out), features, weight, n_real, bias_dtype=bias.dtype)

    return run


def _head_tier(n: int, f: int, n_real: int, pair: tuple[torch.dtype, torch.dtype]) -> str:
    """fp32 everywhere; the other pairs at the critic's seed shape everywhere, elsewhere on sm_90."""
    if f == 1001:  # odd shapes
        return "primary" if pair in MAIN_PAIRS else "full"
    if pair == (F32, F32) or (n, f, n_real) == HEAD_SHAPES[0]:
        return "all"
    return "primary"


def wasserstein_cases() -> list[Case]:
    cases = []
    for pair in DTYPE_PAIRS:
        shapes = HEAD_SHAPES + (HEAD_HUGE if pair in ((F32, F32), (BF16, F32)) else [])
        for n, f, n_real in shapes:
            tier = _head_tier(n, f, n_real, pair)
            cases.append(
                Case(
                    f"wasserstein/{_name(pair)}/{n}x{f}/n_real={n_real}",
                    f"wasserstein/{_name(pair)}",
                    _head_case(n, f, n_real, pair),
                    tier,
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# RMSprop + clip: USE_TABLE x MOMENTUM x CENTERED x WEIGHT_DECAY x MAXIMIZE x CLIP x LR_FROM_PTR x WIDE
# ---------------------------------------------------------------------------------------------
RMSPROP_FLAGS = ("use_table", "momentum", "centered", "weight_decay", "maximize", "clip", "lr_from_ptr", "wide")
# flags added later (the book's eps placement, the generator's weight average): each compiled on and
# off against the all-off and all-on settings of the flags above, not in their whole product
EXTRA_FLAGS = ("eps_inside_sqrt", "ema")
WIDE_PARAMS = ((2**30,), (2**30 - 512,))  # padded total 2**31 - 512: offsets need int64 (wide_offsets)


def seed_critic_params(dtype: torch.dtype = F32) -> list[torch.nn.Parameter]:
    """The seed critic's parameters (10 tensors, 670,401 values) on the meta device."""
    with torch.device("meta"):
        return list(Critic(WGANConfig()).to(dtype).parameters())


def seed_generator_params() -> list[torch.nn.Parameter]:
    """The seed generator's parameters (18 tensors, 879,619 values) on the meta device."""
    with torch.device("meta"):
        return list(Generator(WGANConfig()).parameters())


def _set_hyperparameters(opt: FusedRMSprop, flags: dict[str, bool]) -> None:
    """The param group's hyper-parameters that set ``flags``, as a user may change them between steps.

    A tensor lr goes into the param group, as wgan/training/cuda_graph.py puts it there (the constructor
    reads a tensor lr's value to check it, which a meta tensor cannot give).
    """
    opt.param_groups[0].update(
        lr=torch.tensor(LR, device="meta") if flags["lr_from_ptr"] else LR,
        momentum=0.9 if flags["momentum"] else 0.0,
        centered=flags["centered"],
        weight_decay=1e-4 if flags["weight_decay"] else 0.0,
        maximize=flags["maximize"],
        clip_value=CLIP if flags["clip"] else None,
        eps_inside_sqrt=flags.get("eps_inside_sqrt", False),
        ema_decay=0.999 if flags.get("ema") else None,
    )


def _fused_step(opt: FusedRMSprop, flags: dict[str, bool], none_grad: bool) -> None:
    """One ``FusedRMSprop.step``; with ``none_grad`` the last parameter has no gradient, so the
    step runs the block table."""
    _set_hyperparameters(opt, flags)
    params = opt.param_groups[0]["params"]
    for i, p in enumerate(params):
        p.grad = None if none_grad and i == len(params) - 1 else torch.empty_like(p)
    opt.step()


_FLAG_OPTIMIZERS: dict[tuple[torch.dtype, bool], FusedRMSprop] = {}


def _flag_optimizer(dtype: torch.dtype, wide: bool) -> FusedRMSprop:
    """One optimizer per (dtype, wide) and process, reused across flag combinations: it caches its
    launch plan per pattern of present gradients, and the block table of a 2**31-element bucket
    takes its host ~3 s to build (2M rows), which 64 fresh optimizers would pay 64 times."""
    if (dtype, wide) not in _FLAG_OPTIMIZERS:
        params = [torch.nn.Parameter(meta(s, dtype)) for s in WIDE_PARAMS] if wide else seed_critic_params(dtype)
        _FLAG_OPTIMIZERS[(dtype, wide)] = FusedRMSprop(params, lr=LR, impl="triton")
    return _FLAG_OPTIMIZERS[(dtype, wide)]


def _rmsprop_flag_case(dtype: torch.dtype, flags: dict[str, bool]) -> Callable:
    def run() -> None:
        _fused_step(_flag_optimizer(dtype, flags["wide"]), flags, none_grad=flags["use_table"])

    return run


def _one_factor(values: tuple[bool, ...]) -> bool:
    """All off, all on, or exactly one flag different from the rest: each flag's code path alone."""
    return sum(values) in (0, 1, len(values) - 1, len(values))


def rmsprop_flag_cases() -> list[Case]:
    cases = []
    for dtype in SUPPORTED_DTYPES:
        for values in itertools.product((False, True), repeat=len(RMSPROP_FLAGS)):
            flags = dict(zip(RMSPROP_FLAGS, values))
            on = ",".join(k for k, v in flags.items() if v) or "none"
            group = f"rmsprop/{DTYPE_NAMES[dtype]}/table={flags['use_table']}/wide={flags['wide']}"
            if dtype == F32:
                tier = "all" if _one_factor(values) else "primary"
            else:  # the flags and the parameter dtype touch disjoint lines: loads/stores vs. the update
                tier = "primary" if len(set(values)) == 1 else "full"
            cases.append(Case(f"rmsprop/{DTYPE_NAMES[dtype]}/{on}", group, _rmsprop_flag_case(dtype, flags), tier))
        cases += _extra_flag_cases(dtype)
    return cases


def _extra_flag_cases(dtype: torch.dtype) -> list[Case]:
    """Each later flag on, with the original flags all off and all on (both table paths)."""
    cases = []
    for extra in EXTRA_FLAGS:
        for base in (False, True):
            flags = dict.fromkeys(RMSPROP_FLAGS, base) | dict.fromkeys(EXTRA_FLAGS, False) | {extra: True}
            flags["wide"] = False  # the wide bucket is covered by the product; its table build is slow
            on = ",".join(k for k, v in flags.items() if v)
            group = f"rmsprop/{DTYPE_NAMES[dtype]}/table={flags['use_table']}/wide=False"
            tier = "all" if dtype == F32 else "primary"
            cases.append(Case(f"rmsprop/{DTYPE_NAMES[dtype]}/{on}", group, _rmsprop_flag_case(dtype, flags), tier))
    return cases


def _functional_case(n: int, dtype: torch.dtype, n_steps: int | None, lr_tensor: bool) -> Callable:
    def run() -> None:
        p = meta((n,), dtype)
        step = meta((n_steps,), F32) if n_steps else None
        lr = torch.tensor(LR, device="meta") if lr_tensor else LR
        state = meta((n,), state_dtype(dtype))  # fp32, fp64 for fp64 parameters
        rmsprop_clip_step(p, torch.empty_like(p), state, step=step, lr=lr, clip_value=CLIP, impl="triton")

    return run


def rmsprop_functional_cases() -> list[Case]:
    """``rmsprop_clip_step`` on flat buffers of any length (the optimizer pads to 64; this does not)."""
    cases = []
    sizes = [(670_401, 10), (670_401, 1), (670_401, None)]  # seed critic total; 1 counter specialises to 1
    huge = [(2**31 - 1025, 1), (2**31 - 1024, 1), (2**31 + 7, 1)]  # last int32 size, first wide one, past 2**31
    for dtype in SUPPORTED_DTYPES:
        for (n, n_steps), lr_tensor in itertools.product(sizes + (huge if dtype == F32 else []), (False, True)):
            # every arch: fp32 (but the one-counter specialisation at the seed size) and each half type once
            everywhere = dtype == F32 and (n_steps != 1 or n > 670_401) or (n_steps == 10 and not lr_tensor)
            cases.append(
                Case(
                    f"rmsprop_clip_step/{DTYPE_NAMES[dtype]}/n={n}/steps={n_steps}/lr_tensor={lr_tensor}",
                    f"rmsprop_clip_step/{DTYPE_NAMES[dtype]}",
                    _functional_case(n, dtype, n_steps, lr_tensor),
                    "all" if everywhere else "primary",
                )
            )
    return cases


# ---------------------------------------------------------------------------------------------
# The seed model end to end: what `python -m wgan.train --fused` launches on a GPU
# ---------------------------------------------------------------------------------------------
def _seed_critic_case(channels_last: bool) -> Callable:
    def run() -> None:
        config = WGANConfig()
        with torch.device("meta"):
            critic = FusedCritic(config, impl="triton", channels_last=channels_last)
        layout = "channels_last" if channels_last else "contiguous"
        shape = (SEED_BATCH // 2, config.image_channels, config.image_size, config.image_size)
        real, fake = meta(shape, F32, layout), meta(shape, F32, layout).requires_grad_()
        d_loss, _, _ = critic.critic_losses(real, fake)
        d_loss.backward()
        critic.generator_loss(fake).backward()

    return run


def _seed_generator_case(channels_last: bool, training: bool) -> Callable:
    """The fused generator forward and backward, in training (a generator or critic step) and eval
    mode (sampling with the running statistics)."""

    def run() -> None:
        config = WGANConfig()
        with torch.device("meta"):
            generator = FusedGenerator(config, impl="triton", channels_last=channels_last)
        generator.train(training)
        images = generator(meta((SEED_GENERATOR_BATCH, config.z_dim), F32))
        images.backward(torch.empty_like(images))

    return run


def _seed_optimizer_case(which: str, lr_tensor: bool, recipe: str = "wgan") -> Callable:
    """The trainer's optimizers: the critic's clips, the generator's keeps its weight average
    (--g-ema); the book's recipe puts eps inside the root."""

    def run() -> None:
        params = seed_critic_params() if which == "critic" else seed_generator_params()
        flags = dict.fromkeys(RMSPROP_FLAGS, False) | {
            "clip": which == "critic",
            "lr_from_ptr": lr_tensor,
            "ema": which == "generator",
            "eps_inside_sqrt": recipe == "book",
        }
        opt = FusedRMSprop(params, lr=LR, clip_value=CLIP if which == "critic" else None, impl="triton")
        _fused_step(opt, flags, none_grad=False)

    return run


STACK = 8  # the GPU check's stack of seeds


def _stacked_optimizer_case(which: str, recipe: str) -> Callable:
    """A stack of 8 seed models' parameters ([8, ...] each), one launch with per-slice tables: what
    ``--fused --seeds 0-7`` launches (wgan.training.stack); the critic's clips, the generator averages."""

    def run() -> None:
        params = seed_critic_params() if which == "critic" else seed_generator_params()
        stacked = [torch.nn.Parameter(meta((STACK, *p.shape), F32)) for p in params]
        tables = [torch.empty(STACK, dtype=F64, device="meta") for _ in range(5)]
        critic = which == "critic"
        slices = SliceHParams(
            *tables[:3], clip_value=tables[3] if critic else None, ema_decay=None if critic else tables[4]
        )
        opt = FusedRMSprop(
            [{"params": stacked, "slices": slices}],
            lr=LR,
            clip_value=CLIP if critic else None,
            ema_decay=None if critic else 0.999,
            eps_inside_sqrt=recipe == "book",
            impl="triton",
        )
        for p in stacked:
            p.grad = torch.empty_like(p)
        opt.step()

    return run


def seed_model_cases() -> list[Case]:
    cases = [
        Case(f"seed/fused_critic/channels_last={cl}", "seed/critic", _seed_critic_case(cl)) for cl in (False, True)
    ]
    for cl, training in itertools.product((False, True), (True, False)):
        cases.append(
            Case(
                f"seed/fused_generator/channels_last={cl}/{'train' if training else 'eval'}",
                "seed/generator",
                _seed_generator_case(cl, training),
            )
        )
    for which, lr_tensor in itertools.product(("critic", "generator"), (False, True)):
        cases.append(
            Case(
                f"seed/FusedRMSprop/{which}/lr_tensor={lr_tensor}",
                "seed/optimizers",
                _seed_optimizer_case(which, lr_tensor),
            )
        )
        cases.append(
            Case(
                f"seed/FusedRMSprop/{which}/book/lr_tensor={lr_tensor}",
                "seed/optimizers",
                _seed_optimizer_case(which, lr_tensor, "book"),
            )
        )
    for which, recipe in itertools.product(("critic", "generator"), ("wgan", "book")):
        cases.append(
            Case(f"seed/FusedRMSprop/stack/{which}/{recipe}", "seed/optimizers", _stacked_optimizer_case(which, recipe))
        )
    return cases


def all_cases() -> list[Case]:
    cases = (
        seed_model_cases()
        + bias_act_cases()
        + bn_act_cases()
        + wasserstein_cases()
        + rmsprop_functional_cases()
        + rmsprop_flag_cases()
    )
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases
