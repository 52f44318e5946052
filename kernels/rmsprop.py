"""RMSprop followed by weight clipping, every parameter of a param group in ONE Triton launch.

Why: a WGAN critic step ends with an RMSprop update of every critic tensor and a clamp of every
tensor to ``[-c, c]``. Eager PyTorch spends a handful of small kernels per tensor (or eight
multi-tensor launches with ``foreach``); ``torch.optim.RMSprop`` has no fused implementation.

Design (flat buffers):

* Per param group and parameter dtype (a "bucket"), the optimizer owns contiguous flat buffers for
  the parameters, their gradients and each piece of state (``square_avg``, ``momentum_buffer``,
  ``grad_avg``; fp32 for fp32/fp16/bf16 parameters, fp64 for fp64 ones) plus one fp32 ``step``
  counter per parameter.
  At construction every ``p.data`` is re-pointed at its slice of the parameter buffer (its memory
  layout, e.g. channels_last, is kept), and every per-parameter state tensor in ``self.state`` is a
  view into the state buffers. One 1-D launch therefore covers all parameters of the bucket.
* Each parameter's slice starts at a multiple of 64 elements (256 bytes) and its padded length is a
  multiple of 64, so cuDNN and vectorised kernels see aligned weights and the buffer length is a
  multiple of 16 (Triton then vectorises the masked loads). The padding belongs to no parameter;
  the kernel may rewrite it.
* Gradients: if ``p.grad`` is the view of the flat gradient buffer the optimizer handed out,
  nothing is copied. Otherwise the gradients are gathered into the buffer (one ``_foreach_copy_``)
  and ``p.grad`` is re-pointed at the view. ``zero_grad(set_to_none=True)`` (torch's default) thus
  costs one copy per step; ``set_to_none=False`` copies nothing but costs a ``zero_`` per view and
  autograd's accumulating ``add_`` per gradient, so the trainer sets gradients to None.
* When every parameter has a gradient, the kernel runs without a table: program ``i`` updates
  elements ``[i*BLOCK, (i+1)*BLOCK)``. Parameters whose ``.grad`` is None are skipped exactly as
  torch skips them (no update, no state, no step count): a small ``(start, end, update_end)``
  block table, built from the runs of consecutive parameters with gradients, tells each program
  what to do. It is cached per pattern of present gradients, so it is built and copied to the
  device (pinned, asynchronously) once per pattern.
* ``clip_value`` clamps EVERY parameter of the group, with or without a gradient: the drop-in
  target is ``opt.step(); for p in params: p.clamp_(-c, c)`` (the WGAN recipe), which clamps all of
  them. With a clip, the table also carries "clamp only" blocks for the parameters without grad.
* ``step`` counters are incremented inside the same launch: program ``i`` increments the counter
  of the ``i``-th parameter being updated (a second small table when some gradients are None).
* Per-slice hyper-parameters (a param group's ``slices``, :class:`SliceHParams`): the parameters
  are N copies of one model stacked into ``[N, ...]`` tensors, and copy i's lr, alpha, eps, clip and
  average decay are row i of float64 tables on the device. The block table then cuts every
  parameter into its slices (a block never straddles two), and a second small table gives each
  block its row, so one launch still updates every copy with its own values (and the plain-PyTorch
  reference runs torch's update per slice with that slice's values).
* ``lr`` may be a 0-d tensor on the parameters' device, read inside the kernel, so a step can be
  captured in a CUDA graph and the learning rate changed between replays. A CPU tensor lr with CUDA
  parameters is read on the host (no device synchronisation, but frozen in a captured graph).
* ``step()`` never synchronises with the device: hyper-parameters are validated on the host from
  Python numbers, and every check runs before anything is written, so a failing step leaves every
  parameter and state untouched.
* ``load_state_dict`` copies the loaded state INTO the flat buffers (torch's version replaces the
  tensors, which would break the views). ``state_dict()`` returns references, like torch's: deep
  copy it before loading it into another optimizer that keeps running beside this one.
* If ``p.data`` is replaced after construction (``module.load_state_dict(..., assign=True)``), the
  new values are copied into the flat buffer and ``p`` is re-pointed; if the replacement has another
  device, dtype or shape (``model.to('cuda')``, ``model.half()`` after building the optimizer), the
  step raises a ``ValueError`` instead of updating stale memory.

* Numerics: the kernel follows torch's operation order and fused multiply-adds (the CPU and CUDA
  ``addcdiv_`` round differently; ``CPU_ORDER`` picks the interpreter's), with correctly rounded
  sqrt and division. It is not bitwise equal to torch on CPU, whose vectorised sqrt is not correctly
  rounded; tests/test_rmsprop.py states the tolerance.

The plain-PyTorch reference (``impl='ref'``) runs torch's own ops, in torch's order, on the same flat
buffers: a handful of whole-buffer ops per step (on a CPU in 64 Ki-element chunks that stay in cache),
so on a CPU it is faster than torch's per-tensor loop (1.3x on the critic, 1.8x on 50M values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from kernels._dispatch import log_once, resolve_impl, triton_importable
from kernels._launch import INTERPRETER_TILE, int64_indices, interpreted, launch

if triton_importable():
    import triton
    import triton.language as tl
else:  # pragma: no cover - the reference path still works without triton
    triton = None
    tl = None

__all__ = ["FusedRMSprop", "SliceHParams", "rmsprop_clip_step", "rmsprop_clip_step_ref", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def state_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """Optimizer state (and the update's arithmetic): fp32, or fp64 for fp64 parameters."""
    return torch.float64 if param_dtype == torch.float64 else torch.float32


_ALIGN = 64  # elements: each parameter's slice starts and ends on a 256-byte boundary (fp32)
_GPU_BLOCK = 1024
_REF_CPU_CHUNK = 1 << 16  # the reference's chunk on a CPU: its working set stays in cache


def _block_size(total: int, device: torch.device) -> int:
    if not interpreted(device):
        return _GPU_BLOCK
    block = 64  # the interpreter's numpy work scales with BLOCK, masked lanes included
    while block < total and block < INTERPRETER_TILE:
        block *= 2
    return block


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _sqrt(x, F64: tl.constexpr):
        """Correctly rounded square root: fp32 needs ``sqrt_rn`` (the default is approximate on a
        GPU); fp64's ``sqrt`` already is. (if/else, not an early return: the compiler wants one.)"""
        if F64:
            root = tl.sqrt(x)
        else:
            root = tl.sqrt_rn(x)
        return root

    @triton.jit
    def _div(a, b, F64: tl.constexpr):
        """Correctly rounded division (as ``_sqrt``)."""
        if F64:
            quotient = a / b
        else:
            quotient = tl.div_rn(a, b)
        return quotient

    @triton.jit
    def _rmsprop_clip_kernel(  # noqa: C901  (each branch is a compile-time flag of torch's RMSprop options)
        p_ptr,
        g_ptr,
        sq_ptr,
        buf_ptr,
        gavg_ptr,
        step_ptr,
        table_ptr,
        step_idx_ptr,
        lr_ptr,
        ema_ptr,
        ema_decay_ptr,
        slice_ptr,
        lr_table,
        alpha_table,
        eps_table,
        clip_table,
        ema_decay_table,
        n_elements,
        n_blocks,
        n_steps,
        lr,
        alpha,
        one_minus_alpha,
        eps,
        weight_decay,
        momentum,
        clip,
        USE_TABLE: tl.constexpr,
        LR_FROM_PTR: tl.constexpr,
        MOMENTUM: tl.constexpr,
        CENTERED: tl.constexpr,
        WEIGHT_DECAY: tl.constexpr,
        MAXIMIZE: tl.constexpr,
        CLIP: tl.constexpr,
        EPS_INSIDE_SQRT: tl.constexpr,
        EMA: tl.constexpr,
        SLICED: tl.constexpr,
        WIDE: tl.constexpr,
        CPU_ORDER: tl.constexpr,
        F64: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        if WIDE:
            pid = pid.to(tl.int64)
        # Which elements this program owns, and whether they get the update or only the clamp.
        if USE_TABLE:
            has_block = pid < n_blocks
            start = tl.load(table_ptr + 3 * pid, mask=has_block, other=0)
            end = tl.load(table_ptr + 3 * pid + 1, mask=has_block, other=0)
            update_end = tl.load(table_ptr + 3 * pid + 2, mask=has_block, other=0)  # == start: clamp only
            if WIDE:  # the table is int64 then (_build_plan); start + arange must not wrap in int32
                start = start.to(tl.int64)
            has_step = pid < n_steps
            step_idx = tl.load(step_idx_ptr + pid, mask=has_step, other=0)
        else:
            start = pid * BLOCK
            end = n_elements
            has_step = pid < n_steps
            step_idx = pid
        step = tl.load(step_ptr + step_idx, mask=has_step, other=0.0)
        tl.store(step_ptr + step_idx, step + 1.0, mask=has_step)

        offs = start + tl.arange(0, BLOCK)
        mask = offs < end
        if USE_TABLE:
            umask = offs < update_end
        else:
            umask = mask
        if LR_FROM_PTR:
            lr = tl.load(lr_ptr).to(sq_ptr.dtype.element_ty)
        if SLICED:  # this block's slice reads its own row of the fp64 tables (SliceHParams)
            row = tl.load(slice_ptr + pid, mask=has_block, other=0)
            lr = tl.load(lr_table + row).to(sq_ptr.dtype.element_ty)
            alpha64 = tl.load(alpha_table + row)
            alpha = alpha64.to(sq_ptr.dtype.element_ty)
            one_minus_alpha = (1.0 - alpha64).to(sq_ptr.dtype.element_ty)  # as the host's 1 - alpha in double
            eps = tl.load(eps_table + row).to(sq_ptr.dtype.element_ty)
            if CLIP:
                clip = tl.load(clip_table + row).to(sq_ptr.dtype.element_ty)

        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(sq_ptr.dtype.element_ty)  # state dtype
        g = tl.load(g_ptr + offs, mask=umask, other=0.0).to(sq_ptr.dtype.element_ty)
        sq = tl.load(sq_ptr + offs, mask=umask, other=0.0)
        # Operation order and fused multiply-adds as torch's kernels round them (see _ref_update),
        # correctly rounded sqrt and division (the GPU defaults are approximate, torch's are not).
        if MAXIMIZE:
            g = -g
        if WEIGHT_DECAY:
            g = tl.fma(weight_decay, p, g)  # grad.add(param, alpha=wd)
        sq = tl.fma(one_minus_alpha * g, g, sq * alpha)  # sq.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if CENTERED:
            gavg = tl.load(gavg_ptr + offs, mask=umask, other=0.0)
            # grad_avg.lerp_(g, w): small weights step from the start, large ones back from the end.
            small = tl.abs(one_minus_alpha) < 0.5
            gavg = tl.fma(tl.where(small, one_minus_alpha, one_minus_alpha - 1.0), g - gavg, tl.where(small, gavg, g))
            var = tl.fma(-gavg, gavg, sq)  # sq.addcmul(ga, ga, value=-1)
        else:
            var = sq
        if EPS_INSIDE_SQRT:  # Keras / TensorFlow: sqrt(v + eps)
            avg = _sqrt(var + eps, F64)
        else:  # torch: sqrt(v) + eps
            avg = _sqrt(var, F64) + eps
        if MOMENTUM:
            buf = tl.load(buf_ptr + offs, mask=umask, other=0.0)
            buf = buf * momentum + _div(g, avg, F64)  # buf.mul_(momentum).addcdiv_(g, avg)
            new_p = tl.fma(-lr, buf, p)  # param.add_(buf, alpha=-lr)
        elif CPU_ORDER:
            new_p = p + _div(-lr * g, avg, F64)  # CPU addcdiv_: self + (value * t1) / t2
        else:
            new_p = tl.fma(-lr, _div(g, avg, F64), p)  # CUDA addcdiv_: self + value * (t1 / t2)
        if USE_TABLE:
            new_p = tl.where(umask, new_p, p)
        if CLIP:
            new_p = tl.clamp(new_p, -clip, clip, propagate_nan=tl.PropagateNan.ALL)

        new_p = new_p.to(p_ptr.dtype.element_ty)
        tl.store(p_ptr + offs, new_p, mask=mask)
        if EMA:  # ema.lerp_(param, 1 - decay): the stored (rounded, clipped) parameter, every element
            # the decay is a device scalar read here (a warm-up schedule moves it between captured steps);
            # lerp as torch rounds it: small weights step from the start, large ones back from the end
            if SLICED:
                ema_w = 1.0 - tl.load(ema_decay_table + row).to(sq_ptr.dtype.element_ty)
            else:
                ema_w = 1.0 - tl.load(ema_decay_ptr).to(sq_ptr.dtype.element_ty)
            ema = tl.load(ema_ptr + offs, mask=mask, other=0.0)
            target = new_p.to(ema.dtype)
            small_w = tl.abs(ema_w) < 0.5
            ema = tl.fma(tl.where(small_w, ema_w, ema_w - 1.0), target - ema, tl.where(small_w, ema, target))
            tl.store(ema_ptr + offs, ema, mask=mask)
        tl.store(sq_ptr + offs, sq, mask=umask)
        if CENTERED:
            tl.store(gavg_ptr + offs, gavg, mask=umask)
        if MOMENTUM:
            tl.store(buf_ptr + offs, buf, mask=umask)


# --------------------------------------------------------------------------------------------
# Hyper-parameters (host side, Python numbers only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HParams:
    lr: float | torch.Tensor
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool
    clip_value: float | None
    eps_inside_sqrt: bool = False
    ema_decay: float | torch.Tensor | None = None  # a 0-d tensor on the parameters' device: read in the launch
    slices: SliceHParams | None = None  # per-slice lr, alpha, eps, clip and decay (stacked parameters)

    @property
    def touches_all(self) -> bool:
        """Every parameter is visited each step, with a gradient or not: to clamp it, or to move its
        average toward it."""
        return self.clip_value is not None or self.ema_decay is not None


@dataclass(frozen=True)
class SliceHParams:
    """Per-slice hyper-parameters for a param group whose parameters all have ``count`` slices along
    their first dimension (N copies of one model stacked into ``[N, ...]`` tensors: slice s of every
    parameter belongs to copy s), so that one launch updates every copy with its own values.

    Slice s is updated with ``lr[s]``, ``alpha[s]`` and ``eps[s]``, clamped to ``[-clip_value[s],
    clip_value[s]]`` and averaged with decay ``ema_decay[s]``. The tables are float64 tensors of
    ``count`` values on the parameters' device (float64: each value rounds to the state dtype as the
    Python float of a plain group does), read inside the launch, so they may change in place between
    steps (a warm-up schedule, a learning rate set to 0) without a host synchronisation; the
    reference implementation reads them on the host. The group's ``clip_value`` and ``ema_decay``
    still say whether a step clamps and averages (None: it does not); their numbers are not used,
    and the group's ``lr``, ``alpha`` and ``eps`` neither. Momentum, centering, weight decay,
    maximize and the eps placement stay the group's.

    ``skip``: slices left out of the launch entirely (no update, no state written, no clamp, no
    average; a copy that diverged, say). A different ``skip`` is a new launch plan, built once.
    """

    lr: torch.Tensor
    alpha: torch.Tensor
    eps: torch.Tensor
    clip_value: torch.Tensor | None = None
    ema_decay: torch.Tensor | None = None
    skip: frozenset[int] = frozenset()

    @property
    def count(self) -> int:
        return self.lr.numel()

    def tables(self) -> dict[str, torch.Tensor]:
        names = ("lr", "alpha", "eps", "clip_value", "ema_decay")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def check(self, device: torch.device, check_values: bool) -> None:
        """Shapes, dtype and device (and, with ``check_values``, a host read: construction only)."""
        for name, table in self.tables().items():
            if not isinstance(table, torch.Tensor) or table.dtype != torch.float64 or table.shape != (self.count,):
                raise ValueError(
                    f"SliceHParams.{name} must be a float64 tensor of {self.count} values (one per slice), "
                    f"got {getattr(table, 'dtype', type(table).__name__)} {tuple(getattr(table, 'shape', ()))}"
                )
            if table.device != device:
                raise ValueError(f"SliceHParams.{name} is on {table.device} but the parameters are on {device}")
        if not all(0 <= s < self.count for s in self.skip):
            raise ValueError(f"SliceHParams.skip names slices outside 0..{self.count - 1}: {sorted(self.skip)}")
        if check_values and device.type != "meta":
            values = {name: table.detach().cpu() for name, table in self.tables().items()}
            bad = [name for name in ("lr", "alpha", "eps") if not bool((values[name] >= 0).all())]
            bad += ["clip_value"] if "clip_value" in values and not bool((values["clip_value"] > 0).all()) else []
            decay = values.get("ema_decay")
            bad += ["ema_decay"] if decay is not None and not bool(((decay >= 0) & (decay < 1)).all()) else []
            if bad:
                raise ValueError(
                    f"SliceHParams: {', '.join(bad)} out of range (lr, alpha, eps >= 0, clip > 0, decay in [0, 1))"
                )

    def check_group(self, hp: _HParams, shapes: Sequence[tuple[int, ...]]) -> None:
        """The group's parameters have ``count`` slices, and a table is there for each switch that is on."""
        for i, shape in enumerate(shapes):
            if len(shape) == 0 or shape[0] != self.count:
                raise ValueError(
                    f"with SliceHParams of {self.count} slices every parameter's first dimension must be "
                    f"{self.count}, got shape {shape} at position {i}"
                )
        for name in ("clip_value", "ema_decay"):
            if getattr(hp, name) is not None and getattr(self, name) is None:
                raise ValueError(f"{name} is on for the group but SliceHParams has no {name} table")


HPARAM_KEYS = (
    "lr",
    "alpha",
    "eps",
    "weight_decay",
    "momentum",
    "centered",
    "maximize",
    "clip_value",
    "eps_inside_sqrt",
    "ema_decay",
)


def _nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _check_lr(lr: Any, *, check_value: bool) -> float | torch.Tensor:
    """A float lr is checked on the host; a tensor lr's value only when ``check_value`` (construction)."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:  # torch.optim.RMSprop's class and words
            raise ValueError(f"Tensor lr must be 1-element, got shape {tuple(lr.shape)}")
        if lr.is_complex():
            raise TypeError(f"lr tensor must be real, got {lr.dtype}")
        if check_value and not bool(lr.detach().reshape(()).cpu() >= 0):
            raise ValueError(f"lr must be >= 0, got {lr.detach().reshape(()).item()!r}")
        return lr
    return _nonneg("lr", lr)


def _check_ema_decay(ema_decay: Any, *, check_value: bool) -> float | torch.Tensor:
    """A number in [0, 1), or a one-element floating tensor (its value checked only when
    ``check_value``, at construction: reading it later would synchronise with the device)."""
    if isinstance(ema_decay, torch.Tensor):
        if ema_decay.numel() != 1 or not ema_decay.is_floating_point():
            raise ValueError(
                f"a tensor ema_decay must be one floating-point value, got {ema_decay.dtype} {tuple(ema_decay.shape)}"
            )
        value = float(ema_decay.detach().reshape(()).cpu()) if check_value and ema_decay.device.type != "meta" else 0.0
    elif isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)):
        raise TypeError(f"ema_decay must be a number, a tensor or None, got {type(ema_decay).__name__}")
    else:
        value = ema_decay = float(ema_decay)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (or None for no average), got {value!r}")
    return ema_decay


def _ema_decay_tensor(hp: _HParams, ema: torch.Tensor) -> torch.Tensor:
    """The decay as a 0-d tensor in the average's dtype on its device: a tensor given is used as it is
    (no copy when it already matches, so a captured step follows its later values)."""
    decay = hp.ema_decay
    if isinstance(decay, torch.Tensor):
        if decay.device != ema.device:
            raise ValueError(f"ema_decay tensor is on {decay.device} but the parameters are on {ema.device}")
        return decay.reshape(()) if decay.dtype == ema.dtype else decay.reshape(()).to(ema.dtype)
    return torch.full((), decay, dtype=ema.dtype, device=ema.device)


def _hparams(
    lr: Any,
    alpha: Any,
    eps: Any,
    weight_decay: Any,
    momentum: Any,
    centered: Any,
    maximize: Any,
    clip_value: Any,
    eps_inside_sqrt: Any = False,
    ema_decay: Any = None,
    *,
    check_lr_value: bool = False,
) -> _HParams:
    if clip_value is not None:
        if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)):
            raise TypeError(f"clip_value must be a number or None, got {type(clip_value).__name__}")
        if not clip_value > 0.0:
            raise ValueError(f"clip_value must be > 0 (or None for no clip), got {clip_value!r}")
        clip_value = float(clip_value)
    if ema_decay is not None:
        ema_decay = _check_ema_decay(ema_decay, check_value=check_lr_value)
    return _HParams(
        lr=_check_lr(lr, check_value=check_lr_value),
        alpha=_nonneg("alpha", alpha),
        eps=_nonneg("eps", eps),
        weight_decay=_nonneg("weight_decay", weight_decay),
        momentum=_nonneg("momentum", momentum),
        centered=bool(centered),
        maximize=bool(maximize),
        clip_value=clip_value,
        eps_inside_sqrt=bool(eps_inside_sqrt),
        ema_decay=ema_decay,
    )


# --------------------------------------------------------------------------------------------
# Launch plans: which elements get the update, which only the clamp, which step counters move
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    use_table: bool
    grid: int
    n_blocks: int
    n_steps: int
    table: torch.Tensor | None  # int32/int64 [n_blocks, 3]: start, end, end of the update (start: clamp only)
    step_idx: torch.Tensor | None  # counters to increment (None: the first n_steps)
    runs: list[tuple[int, int]]  # element ranges that get the update (reference path)
    all_active: bool
    block: int
    slice_idx: torch.Tensor | None = None  # int32 [n_blocks]: each block's row of the SliceHParams tables
    # (start, end, updated, slice) of every range the launch touches (reference path of a sliced plan)
    slice_runs: list[tuple[int, int, bool, int]] = field(default_factory=list)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Once per pattern of present gradients; pinned and asynchronous, so no host synchronisation."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def wide_offsets(total: int, block: int) -> bool:
    """Element offsets need 64 bits: the last block's ``start + arange(BLOCK)`` reaches
    ``total + block`` (kernels._launch.int64_indices)."""
    return int64_indices(total + block)


def _build_plan(
    offsets: Sequence[int],
    sizes: Sequence[int],
    active: Sequence[bool],
    touch_all: bool,
    total: int,
    block: int,
    device: torch.device,
) -> _Plan:
    """``sizes`` are the padded slice lengths; runs of equal kind are merged, then cut into blocks.
    ``touch_all``: parameters without a gradient still get "visit only" blocks (clip, average)."""
    n_steps = sum(active)
    if all(active):
        runs = [(0, total)] if total else []
        grid = max(-(-total // block), n_steps)
        return _Plan(False, grid, 0, n_steps, None, None, runs, True, block)
    kinds: list[list[int]] = []  # [start, end, active]
    for off, size, act in zip(offsets, sizes, active):
        if size == 0 or not (act or touch_all):
            continue
        if kinds and kinds[-1][1] == off and kinds[-1][2] == int(act):
            kinds[-1][1] = off + size
        else:
            kinds.append([off, off + size, int(act)])
    rows = [[s, min(s + block, e), min(s + block, e) if a else s] for s0, e, a in kinds for s in range(s0, e, block)]
    n_blocks = len(rows)
    dtype = torch.int64 if wide_offsets(total, block) else torch.int32
    idx = [i for i, a in enumerate(active) if a]
    table, step_idx = (
        _to_device(torch.tensor(rows or [[0, 0, 0]], dtype=dtype), device),
        _to_device(torch.tensor(idx or [0], dtype=dtype), device),
    )
    runs = [(s, e) for s, e, a in kinds if a]
    return _Plan(True, max(n_blocks, n_steps), n_blocks, n_steps, table, step_idx, runs, False, block)


def _build_sliced_plan(
    offsets: Sequence[int],
    numels: Sequence[int],
    active: Sequence[bool],
    touch_all: bool,
    slices: SliceHParams,
    total: int,
    block: int,
    device: torch.device,
) -> _Plan:
    """The block table of a group with per-slice hyper-parameters: every parameter's slices (its
    ``numel / count`` consecutive elements each) cut into blocks of one slice, each block with its
    slice's row; skipped slices and the alignment padding get no block."""
    ranges: list[tuple[int, int, bool, int]] = []
    for off, numel, act in zip(offsets, numels, active):
        size = numel // slices.count
        if size == 0 or not (act or touch_all):
            continue
        ranges += [(off + s * size, off + (s + 1) * size, act, s) for s in range(slices.count) if s not in slices.skip]
    rows, rows_slice = [], []
    for start, end, act, s in ranges:
        for b in range(start, end, block):
            stop = min(b + block, end)
            rows.append([b, stop, stop if act else b])
            rows_slice.append(s)
    dtype = torch.int64 if wide_offsets(total, block) else torch.int32
    idx = [i for i, a in enumerate(active) if a]
    n_blocks, n_steps = len(rows), len(idx)
    return _Plan(
        use_table=True,
        grid=max(n_blocks, n_steps),
        n_blocks=n_blocks,
        n_steps=n_steps,
        table=_to_device(torch.tensor(rows or [[0, 0, 0]], dtype=dtype), device),
        step_idx=_to_device(torch.tensor(idx or [0], dtype=dtype), device),
        runs=[],
        all_active=False,
        block=block,
        slice_idx=_to_device(torch.tensor(rows_slice or [0], dtype=torch.int32), device),
        slice_runs=ranges,
    )


# --------------------------------------------------------------------------------------------
# The two implementations of one bucket update
# --------------------------------------------------------------------------------------------


def _lr_for(lr: float | torch.Tensor, device: torch.device) -> tuple[float, torch.Tensor | None]:
    """(host value, device tensor): a tensor on the parameters' device is read by the kernel."""
    if isinstance(lr, torch.Tensor):
        if lr.device == device:
            return 0.0, lr
        if lr.device.type == "cpu":
            return float(lr), None  # host read of a CPU tensor: no device synchronisation
        raise ValueError(f"lr tensor is on {lr.device} but the parameters are on {device}")
    return lr, None


@dataclass(frozen=True)
class _Buffers:
    """The flat buffers of one update. Both implementations take the same set, and both callers
    (the functional step and the optimizer) build it: one record, not one long signature per runner.
    The optional ones are None when the hyper-parameters do not use them."""

    param: torch.Tensor
    grad: torch.Tensor
    square_avg: torch.Tensor
    momentum_buffer: torch.Tensor | None
    grad_avg: torch.Tensor | None
    steps: torch.Tensor | None
    ema: torch.Tensor | None


def _slice_args(hp: _HParams, plan: _Plan, dummy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(block slice rows, lr, alpha, eps, clip and decay tables) of a sliced launch; dummies otherwise."""
    slices = hp.slices
    if slices is None:
        return (dummy,) * 6
    clip, decay = slices.clip_value, slices.ema_decay
    return (
        plan.slice_idx,
        slices.lr,
        slices.alpha,
        slices.eps,
        clip if clip is not None else slices.lr,
        decay if decay is not None else slices.lr,
    )


def _launch_triton(buffers: _Buffers, plan: _Plan, hp: _HParams) -> None:
    if plan.grid == 0:
        return
    param, square_avg, steps, ema = buffers.param, buffers.square_avg, buffers.steps, buffers.ema
    lr_value, lr_tensor = _lr_for(hp.lr, param.device)
    use_mom = hp.momentum > 0
    block = plan.block
    dummy = square_avg
    table = plan.table if plan.use_table else dummy
    step_idx = plan.step_idx if plan.use_table else dummy
    args = (
        param,
        buffers.grad,
        square_avg,
        buffers.momentum_buffer if use_mom else dummy,
        buffers.grad_avg if hp.centered else dummy,
        steps if steps is not None else dummy,
        table,
        step_idx,
        lr_tensor if lr_tensor is not None else dummy,
        ema if ema is not None else dummy,
        _ema_decay_tensor(hp, ema) if ema is not None and hp.slices is None else dummy,
        *_slice_args(hp, plan, dummy),
        param.numel(),
        plan.n_blocks,
        plan.n_steps if steps is not None else 0,
        lr_value,
        hp.alpha,
        1.0 - hp.alpha,
        hp.eps,
        hp.weight_decay,
        hp.momentum,
        hp.clip_value if hp.clip_value is not None else 0.0,
    )
    meta = dict(
        USE_TABLE=plan.use_table,
        LR_FROM_PTR=lr_tensor is not None,
        MOMENTUM=use_mom,
        CENTERED=hp.centered,
        WEIGHT_DECAY=hp.weight_decay != 0,
        MAXIMIZE=hp.maximize,
        CLIP=hp.clip_value is not None,
        EPS_INSIDE_SQRT=hp.eps_inside_sqrt,
        EMA=ema is not None,
        SLICED=hp.slices is not None,
        WIDE=wide_offsets(param.numel(), block),
        CPU_ORDER=param.device.type == "cpu",
        F64=square_avg.dtype == torch.float64,
        BLOCK=block,
    )
    launch("FusedRMSprop", _rmsprop_clip_kernel, (plan.grid,), *args, device=param.device, **meta)


def _ref_update(
    p: torch.Tensor,
    g: torch.Tensor,
    sq: torch.Tensor,
    buf: torch.Tensor | None,
    gavg: torch.Tensor | None,
    lr: float | torch.Tensor,
    hp: _HParams,
    scratch: torch.Tensor | None,
    clip: bool,
) -> None:
    """torch's single-tensor RMSprop, op for op, on one range of the flat buffers.

    A tensor ``lr`` (on a GPU) goes through ``addcmul_`` so that it rounds like the CUDA kernels of
    ``add_(alpha=-lr)`` / ``addcdiv_(value=-lr)``: one fused multiply-add into the parameter.
    """
    p32 = p if p.dtype == sq.dtype else p.to(sq.dtype)  # the state dtype: fp32, or fp64
    g = g if g.dtype == sq.dtype else g.to(sq.dtype)
    if hp.maximize:
        g = torch.neg(g)
    if hp.weight_decay != 0:
        g = g.add(p32, alpha=hp.weight_decay)
    sq.mul_(hp.alpha).addcmul_(g, g, value=1 - hp.alpha)
    if hp.centered:
        gavg.lerp_(g, 1 - hp.alpha)
        var = torch.addcmul(sq, gavg, gavg, value=-1, out=scratch)
    else:
        var = sq
    if hp.eps_inside_sqrt:  # Keras / TensorFlow: sqrt(v + eps)
        avg = torch.add(var, hp.eps, out=scratch).sqrt_()
    else:  # torch: sqrt(v) + eps
        avg = torch.sqrt(var, out=scratch).add_(hp.eps)
    if hp.momentum > 0:
        buf.mul_(hp.momentum).addcdiv_(g, avg)
        if isinstance(lr, torch.Tensor):
            p32.addcmul_(buf, lr, value=-1)
        else:
            p32.add_(buf, alpha=-lr)
    elif isinstance(lr, torch.Tensor):
        p32.addcmul_(g.div(avg), lr, value=-1)
    else:
        p32.addcdiv_(g, avg, value=-lr)
    if clip:
        p32.clamp_(-hp.clip_value, hp.clip_value)
    if p32 is not p:
        p.copy_(p32)


def _chunks(runs: list[tuple[int, int]], size: int | None):
    for start, end in runs:
        step = size or max(end - start, 1)
        for s in range(start, end, step):
            yield s, min(s + step, end)


def _run_ref_sliced(buffers: _Buffers, plan: _Plan, hp: _HParams) -> None:
    """A sliced plan: torch's update of each slice's range with that slice's hyper-parameters (read
    on the host: a synchronisation on a GPU, where the Triton kernel reads them in its launch)."""
    slices = hp.slices
    assert slices is not None
    values = {name: table.tolist() for name, table in slices.tables().items()}
    param, ema, chunk = buffers.param, buffers.ema, _REF_CPU_CHUNK if buffers.param.device.type == "cpu" else None
    clip_on = hp.clip_value is not None
    for start, end, updated, s in plan.slice_runs:
        one = replace(
            hp,
            lr=values["lr"][s],
            alpha=values["alpha"][s],
            eps=values["eps"][s],
            clip_value=values["clip_value"][s] if clip_on else None,
            ema_decay=None,
            slices=None,
        )
        for a, b in _chunks([(start, end)], chunk):
            if updated:
                _ref_update(
                    param[a:b],
                    buffers.grad[a:b],
                    buffers.square_avg[a:b],
                    buffers.momentum_buffer[a:b] if hp.momentum > 0 else None,
                    buffers.grad_avg[a:b] if hp.centered else None,
                    one.lr,
                    one,
                    None,
                    clip_on,
                )
            elif clip_on:
                param[a:b].clamp_(-one.clip_value, one.clip_value)
        if ema is not None:  # as _run_ref: the decay as a 0-d tensor of the average's dtype
            weight = 1 - slices.ema_decay[s].to(ema.dtype)
            ema[start:end].lerp_(param[start:end].to(ema.dtype), weight)
    _count_steps(buffers.steps, plan)


def _count_steps(steps: torch.Tensor | None, plan: _Plan) -> None:
    if steps is not None and plan.n_steps:
        if plan.all_active:
            steps.add_(1)
        else:
            steps.index_add_(
                0,
                plan.step_idx[: plan.n_steps].long(),
                torch.ones(plan.n_steps, dtype=steps.dtype, device=steps.device),
            )


def _run_ref(buffers: _Buffers, plan: _Plan, hp: _HParams) -> None:
    """Whole-buffer ops; on a CPU in chunks of ``_REF_CPU_CHUNK`` elements, so that the handful of
    ops on a chunk run in cache (2.3x faster than whole 50M-value buffers on one core)."""
    if hp.slices is not None:
        _run_ref_sliced(buffers, plan, hp)
        return
    param, grad, square_avg, steps, ema = buffers.param, buffers.grad, buffers.square_avg, buffers.steps, buffers.ema
    momentum_buffer, grad_avg = buffers.momentum_buffer, buffers.grad_avg
    lr_value, lr_tensor = _lr_for(hp.lr, param.device)
    if lr_tensor is not None and param.device.type == "cpu":
        lr_tensor, lr_value = None, float(lr_tensor)  # a host read, as torch's own step does
    lr = lr_tensor if lr_tensor is not None else lr_value
    use_mom = hp.momentum > 0
    chunk = _REF_CPU_CHUNK if param.device.type == "cpu" else None
    scratch = torch.empty(chunk, dtype=square_avg.dtype) if chunk and param.numel() > chunk else None
    clip_inside = hp.clip_value is not None and plan.all_active  # runs cover the whole buffer
    for start, end in _chunks(plan.runs, chunk):
        _ref_update(
            param[start:end],
            grad[start:end],
            square_avg[start:end],
            momentum_buffer[start:end] if use_mom else None,
            grad_avg[start:end] if hp.centered else None,
            lr,
            hp,
            scratch[: end - start] if scratch is not None else None,
            clip_inside,
        )
    if hp.clip_value is not None and not clip_inside:
        param.clamp_(-hp.clip_value, hp.clip_value)
    if ema is not None:  # the average of what the parameters now are, every element
        ema.lerp_(param if param.dtype == ema.dtype else param.to(ema.dtype), 1 - _ema_decay_tensor(hp, ema))
    _count_steps(steps, plan)


_RUNNERS = {"triton": _launch_triton, "ref": _run_ref}


# --------------------------------------------------------------------------------------------
# Functional entry: one update of flat buffers
# --------------------------------------------------------------------------------------------


def _check_flat(name: str, t: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout} (sparse gradients are not supported)")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but param is on {like.device}")
    if t.dim() != 1 or not t.is_contiguous() or t.numel() != like.numel():
        raise ValueError(
            f"{name} must be a contiguous 1-D tensor of {like.numel()} elements, got shape {tuple(t.shape)}"
        )


def _check_functional(
    param: torch.Tensor,
    grad: torch.Tensor,
    square_avg: torch.Tensor,
    buffers: dict[str, tuple[torch.Tensor | None, bool]],
    step: torch.Tensor | None,
) -> None:
    """Every buffer of a functional step checked before anything is written; ``buffers`` maps a
    state buffer's name to (the tensor given, whether the hyper-parameters need it)."""
    _check_flat("param", param, param, None)
    _check_flat("grad", grad, param, param.dtype)
    _check_flat("square_avg", square_avg, param, state_dtype(param.dtype))
    why = {
        "momentum_buffer": "momentum > 0 needs momentum_buffer",
        "grad_avg": "centered=True needs grad_avg",
        "ema": "ema and ema_decay go together: pass both or neither",
    }
    for name, (tensor, needed) in buffers.items():
        if needed and tensor is None or name == "ema" and tensor is not None and not needed:
            raise ValueError(why[name])
        if needed:
            _check_flat(name, tensor, param, state_dtype(param.dtype))
    if step is not None and (step.dtype != torch.float32 or step.device != param.device or not step.is_contiguous()):
        raise ValueError(f"step must be a contiguous float32 tensor on {param.device}")


def rmsprop_clip_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    square_avg: torch.Tensor,
    *,
    grad_avg: torch.Tensor | None = None,
    momentum_buffer: torch.Tensor | None = None,
    step: torch.Tensor | None = None,
    lr: float | torch.Tensor = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    clip_value: float | None = None,
    eps_inside_sqrt: bool = False,
    ema: torch.Tensor | None = None,
    ema_decay: float | torch.Tensor | None = None,
    impl: str | None = None,
) -> str:
    """One RMSprop + clamp update of flat contiguous 1-D buffers, in place; returns the impl used.

    The building block of :class:`FusedRMSprop`, public so that a caller with its own flat buffers
    (a fused trainer, a CUDA graph) can run the update without the optimizer bookkeeping. ``param``
    is fp32/fp16/bf16/fp64 with ``grad`` of the same dtype; the state buffers are fp32 (fp64 for
    fp64 parameters). ``step`` (optional, fp32, any number of counters) is incremented by one in
    the same launch; ``ema`` (with ``ema_decay``, state dtype) is moved toward the updated
    parameters in it too. ``ema_decay`` may be a 0-d tensor on the parameters' device, read inside
    the launch like a tensor ``lr`` (a warm-up schedule changes it in place between captured steps).
    """
    hp = _hparams(lr, alpha, eps, weight_decay, momentum, centered, maximize, clip_value, eps_inside_sqrt, ema_decay)
    if not isinstance(param, torch.Tensor) or param.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"param must be a tensor of dtype {SUPPORTED_DTYPES}, got {getattr(param, 'dtype', type(param).__name__)}"
        )
    buffers = {
        "momentum_buffer": (momentum_buffer, hp.momentum > 0),
        "grad_avg": (grad_avg, hp.centered),
        "ema": (ema, hp.ema_decay is not None),
    }
    _check_functional(param, grad, square_avg, buffers, step)
    if isinstance(hp.lr, torch.Tensor):
        _lr_for(hp.lr, param.device)  # raises on a device mismatch before anything is written
    if ema is not None:
        _ema_decay_tensor(hp, ema)  # likewise
    chosen = resolve_impl(impl, param.device)
    n_steps = step.numel() if step is not None else 0
    plan = _build_plan(
        [0],
        [param.numel()],
        [True],
        hp.touches_all,
        param.numel(),
        _block_size(param.numel(), param.device),
        param.device,
    )
    plan.n_steps = n_steps
    plan.grid = max(plan.grid, n_steps)
    steps = step.view(-1) if step is not None else None
    _RUNNERS[chosen](_Buffers(param, grad, square_avg, momentum_buffer, grad_avg, steps, ema), plan, hp)
    return chosen


def rmsprop_clip_step_ref(param: torch.Tensor, grad: torch.Tensor, square_avg: torch.Tensor, **kwargs: Any) -> str:
    """:func:`rmsprop_clip_step` with ``impl='ref'``: plain PyTorch, whole-buffer ops."""
    return rmsprop_clip_step(param, grad, square_avg, impl="ref", **kwargs)


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------


def _dense_strides(t: torch.Tensor) -> tuple[int, ...] | None:
    """``t``'s strides if they tile exactly ``t.numel()`` elements (any dim order), else None."""
    expected = 1
    for d in sorted(range(t.dim()), key=lambda d: (t.stride(d), t.size(d))):
        if t.size(d) != 1 and t.stride(d) != expected:
            return None
        expected *= t.size(d)
    return tuple(t.stride())


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


class _Bucket:
    """The parameters of one group with one dtype: flat buffers, views, cached launch plans."""

    def __init__(self, params: list[torch.Tensor], indices: list[int], impl: str) -> None:
        self.params = params
        self.indices = indices  # positions in the group's "params" list (for messages)
        self.impl = impl
        self.dtype = params[0].dtype
        self.device = params[0].device
        self.shapes = [tuple(p.shape) for p in params]
        self.strides = [_dense_strides(p) or _contiguous_strides(p.shape) for p in params]
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        total = 0
        for p in params:
            size = -(-p.numel() // _ALIGN) * _ALIGN
            self.offsets.append(total)
            self.sizes.append(size)
            total += size
        self.total = total
        self.param_flat = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.grad_flat = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.square_avg = torch.zeros(total, dtype=state_dtype(self.dtype), device=self.device)
        self.momentum_buffer: torch.Tensor | None = None
        self.grad_avg: torch.Tensor | None = None
        self.ema: torch.Tensor | None = None  # the parameters' exponential moving average (ema_decay)
        self.steps = torch.zeros(len(params), dtype=torch.float32, device=self.device)
        self.grad_views = [self.view(self.grad_flat, i) for i in range(len(params))]
        with torch.no_grad():
            for i, p in enumerate(params):
                view = self.view(self.param_flat, i)
                view.copy_(p.detach())
                p.data = view
        self.ptrs = [p.data_ptr() for p in params]
        self.plans: dict[tuple, _Plan] = {}
        self.ready: set[tuple] = set()  # (active pattern, momentum, centered) whose state entries exist

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        return flat.as_strided(self.shapes[i], self.strides[i], self.offsets[i])

    def ensure_state_buffers(self, momentum: bool, centered: bool) -> None:
        if momentum and self.momentum_buffer is None:
            self.momentum_buffer = torch.zeros_like(self.square_avg)
        if centered and self.grad_avg is None:
            self.grad_avg = torch.zeros_like(self.square_avg)

    def ensure_ema(self) -> None:
        """The average starts as the parameters themselves (as StyleGAN's copy of the generator)."""
        if self.ema is None:
            self.ema = self.param_flat.detach().to(self.square_avg.dtype).clone()

    def state_views(self, i: int, momentum: bool, centered: bool) -> dict[str, torch.Tensor]:
        state = {"step": self.steps[i], "square_avg": self.view(self.square_avg, i)}
        if momentum:
            state["momentum_buffer"] = self.view(self.momentum_buffer, i)
        if centered:
            state["grad_avg"] = self.view(self.grad_avg, i)
        return state

    def plan(self, active: tuple[bool, ...], touch_all: bool, slices: SliceHParams | None = None) -> _Plan:
        key = (active, touch_all) if slices is None else (active, touch_all, slices.count, slices.skip)
        plan = self.plans.get(key)
        if plan is None and slices is not None:
            numels = [math.prod(shape) for shape in self.shapes]
            block = _block_size(self.total, self.device)
            plan = _build_sliced_plan(self.offsets, numels, active, touch_all, slices, self.total, block, self.device)
            self.plans[key] = plan
        if plan is None:
            plan = _build_plan(
                self.offsets,
                self.sizes,
                active,
                touch_all,
                self.total,
                _block_size(self.total, self.device),
                self.device,
            )
            self.plans[key] = plan
        return plan


@dataclass
class _Work:
    bucket: _Bucket
    hp: _HParams
    active: tuple[bool, ...]
    copies: list[tuple[int, torch.Tensor]]  # (param position, gradient to gather)
    readopt: list[int]  # params whose .data was replaced by a same-shaped tensor


class FusedRMSprop(torch.optim.Optimizer):
    """``torch.optim.RMSprop`` followed by ``p.clamp_(-clip_value, clip_value)`` on every parameter.

    Drop-in: same math, same per-parameter state names (``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``), so a ``state_dict`` moves both ways between the two. Each
    param group (per parameter dtype) is updated by one Triton launch over flat buffers that the
    optimizer owns; the module docstring explains the design and its consequences (``p.data`` and
    ``p.grad`` become views into those buffers). ``impl`` picks 'triton' or 'ref' (None: Triton
    where it can run). Parameters may be fp32, fp16, bf16 or fp64; state is fp32 (fp64 for fp64
    parameters, whose update is then computed in fp64; the scalar hyper-parameters reach the Triton
    kernel as fp32 values, Triton's float scalar type).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        maximize: bool = False,
        clip_value: float | None = None,
        eps_inside_sqrt: bool = False,
        ema_decay: float | torch.Tensor | None = None,
        impl: str | None = None,
    ) -> None:
        values = (lr, alpha, eps, weight_decay, momentum, centered, maximize, clip_value, eps_inside_sqrt, ema_decay)
        _hparams(*values, check_lr_value=True)
        if impl is not None and impl not in ("triton", "ref"):
            raise ValueError(f"impl must be 'triton', 'ref' or None, got {impl!r}")
        self._impl_choice = impl
        self._buckets: list[list[_Bucket]] = []
        self._hp_cache: dict[int, tuple[tuple, _HParams]] = {}
        super().__init__(params, dict(zip(HPARAM_KEYS, values)))

    # -- construction -------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        param_group = {**param_group, "params": params}  # an iterator is read once: torch reads this list
        # (name, tensor) pairs are torch's named parameters: torch checks the names, we the tensors
        tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        for i, p in enumerate(tensors):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"FusedRMSprop params must be tensors, got {type(p).__name__} at position {i}")
            if p.layout != torch.strided:
                raise TypeError(f"FusedRMSprop needs dense parameters, got layout {p.layout} at position {i}")
            if p.dtype not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"FusedRMSprop supports parameters of dtype float32, float16, bfloat16 and float64, "
                    f"got {p.dtype} at position {i}"
                )
        devices = {p.device for p in tensors}
        if len(devices) > 1:
            raise ValueError(
                f"FusedRMSprop: the parameters of one param group must share a device (one "
                f"launch updates them all), got {sorted(str(d) for d in devices)}"
            )
        g = {k: param_group.get(k, self.defaults[k]) for k in self.defaults}
        hp = _hparams(*(g[k] for k in HPARAM_KEYS), check_lr_value=True)
        if param_group.get("slices") is not None:
            _check_slices(replace(hp, slices=param_group["slices"]), tensors, check_values=True)
        n_groups = len(self.param_groups)
        super().add_param_group(param_group)  # torch's own checks: duplicates, missing lr, ...
        if len(self.param_groups) == n_groups:
            return
        group = self.param_groups[-1]
        buckets = []
        # a parameter listed twice (torch warns; its RMSprop would step it twice) gets one slice here
        unique = {id(p): (i, p) for i, p in reversed(list(enumerate(group["params"])))}
        for dtype in dict.fromkeys(p.dtype for p in group["params"]):
            members = sorted((m for m in unique.values() if m[1].dtype == dtype), key=lambda m: m[0])
            device = members[0][1].device
            impl = resolve_impl(self._impl_choice, device)
            log_once(f"kernels.FusedRMSprop: impl={impl!r} on {device}")
            buckets.append(_Bucket([p for _, p in members], [i for i, _ in members], impl))
        self._buckets.append(buckets)

    def ema_params(self) -> list[torch.Tensor]:
        """The exponential moving average of every parameter (groups with ``ema_decay``), in the
        order of the param groups: views of the buffer the step updates in the same launch, shaped
        like the parameters, in the state dtype. Copy into them to restore an average (resume)."""
        views = []
        for group, buckets in zip(self.param_groups, self._buckets):
            if group.get("ema_decay") is None:
                continue
            by_param = {}
            for b in buckets:
                b.ensure_ema()
                by_param.update({id(p): b.view(b.ema, i) for i, p in enumerate(b.params)})
            views += [by_param[id(p)] for p in group["params"]]
        return views

    @property
    def impls(self) -> list[str]:
        """The implementation each bucket runs (one per param group and parameter dtype)."""
        return [b.impl for buckets in self._buckets for b in buckets]

    # -- stepping -----------------------------------------------------------------------------

    def _prepare(self, gi: int, bucket: _Bucket, hp: _HParams) -> _Work:
        """Every check of one bucket, before anything is written."""
        active: list[bool] = []
        copies: list[tuple[int, torch.Tensor]] = []
        readopt: list[int] = []
        for i, p in enumerate(bucket.params):
            if p.data_ptr() != bucket.ptrs[i]:
                if p.device != bucket.device or p.dtype != bucket.dtype or tuple(p.shape) != bucket.shapes[i]:
                    raise ValueError(
                        f"FusedRMSprop: parameter {bucket.indices[i]} of param group {gi} became {p.dtype} "
                        f"{tuple(p.shape)} on {p.device} after the optimizer was built (the optimizer owns its "
                        f"memory as {bucket.dtype} {bucket.shapes[i]} on {bucket.device}): build the optimizer "
                        f"after model.to(...) / .half()"
                    )
                readopt.append(i)
            g = p.grad
            active.append(g is not None)
            if g is None or g is bucket.grad_views[i]:
                continue
            where = f"parameter {bucket.indices[i]} of param group {gi}"
            if g.layout != torch.strided:
                raise TypeError(f"FusedRMSprop does not support sparse gradients ({where} has a {g.layout} gradient)")
            if not g.is_floating_point():
                raise TypeError(f"FusedRMSprop needs floating-point gradients ({where} has a {g.dtype} gradient)")
            if g.dtype != bucket.dtype or g.device != bucket.device or tuple(g.shape) != bucket.shapes[i]:
                raise ValueError(
                    f"FusedRMSprop: the gradient of {where} is {g.dtype} {tuple(g.shape)} on "
                    f"{g.device}, expected {bucket.dtype} {bucket.shapes[i]} on {bucket.device}"
                )
            copies.append((i, g))
        return _Work(bucket, hp, tuple(active), copies, readopt)

    def _run(self, work: _Work) -> None:
        b, hp = work.bucket, work.hp
        for i in work.readopt:
            view = b.view(b.param_flat, i)
            view.copy_(b.params[i].detach())
            b.params[i].data = view
            b.ptrs[i] = b.params[i].data_ptr()
        if work.copies:
            torch._foreach_copy_([b.grad_views[i] for i, _ in work.copies], [g for _, g in work.copies])
            for i, _ in work.copies:
                b.params[i].grad = b.grad_views[i]
        use_mom = hp.momentum > 0
        plan = b.plan(work.active, hp.touches_all, hp.slices)
        ready_key = (work.active, use_mom, hp.centered)
        if ready_key not in b.ready:  # first step with this pattern: create the state entries (views)
            b.ensure_state_buffers(use_mom, hp.centered)
            for i, act in enumerate(work.active):
                if not act:
                    continue  # no entry at all, as torch (self.state is a defaultdict)
                state = self.state[b.params[i]]
                if (
                    "square_avg" not in state
                    or use_mom
                    and "momentum_buffer" not in state
                    or hp.centered
                    and "grad_avg" not in state
                ):
                    state.update(b.state_views(i, use_mom, hp.centered))
            b.ready.add(ready_key)
        if hp.ema_decay is not None:
            b.ensure_ema()
        ema = b.ema if hp.ema_decay is not None else None
        buffers = _Buffers(b.param_flat, b.grad_flat, b.square_avg, b.momentum_buffer, b.grad_avg, b.steps, ema)
        _RUNNERS[b.impl](buffers, plan, hp)

    def _group_hparams(self, gi: int, group: dict[str, Any]) -> _HParams:
        """Validated hyper-parameters, cached while the group's values stay the same."""
        lr = group["lr"]
        values = tuple(group.get(k, self.defaults.get(k)) for k in HPARAM_KEYS[1:])
        # tensors (lr, ema_decay) are compared by identity: == on tensors would build a tensor (and sync on a GPU)
        key = tuple(("tensor", id(v)) if isinstance(v, torch.Tensor) else v for v in (lr, *values))
        key += (("slices", id(group.get("slices"))),)
        cached = self._hp_cache.get(gi)
        if cached is not None and cached[0] == key:
            return cached[1]
        hp = _hparams(lr, *values)
        slices = group.get("slices")
        if slices is not None:
            hp = replace(hp, slices=slices)
            _check_slices(hp, group["params"], check_values=False)
        self._hp_cache[gi] = (key, hp)
        return hp

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        works = []
        for gi, (group, buckets) in enumerate(zip(self.param_groups, self._buckets)):
            hp = self._group_hparams(gi, group)
            for bucket in buckets:
                if isinstance(hp.lr, torch.Tensor):
                    _lr_for(hp.lr, bucket.device)
                if isinstance(hp.ema_decay, torch.Tensor) and hp.ema_decay.device != bucket.device:
                    raise ValueError(
                        f"ema_decay tensor is on {hp.ema_decay.device} but the parameters are on {bucket.device}"
                    )
                works.append(self._prepare(gi, bucket, hp))
        with torch.no_grad():
            for work in works:
                self._run(work)
        return loss

    # -- state_dict ---------------------------------------------------------------------------

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a torch.optim.RMSprop state dict has none of our extra keys
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loader, then the loaded state is copied into the flat buffers (views stay valid).

        The copies come from the tensors as given, before torch casts them to the parameter dtype,
        so fp16/bf16 parameters keep fp32 state across a save/load. A state dict without
        ``clip_value`` (one of ``torch.optim.RMSprop``) leaves each group's clip as it was.
        """
        originals = self._checked_states(state_dict)  # id(param) -> loaded state, uncast
        ours = ("clip_value", "eps_inside_sqrt", "ema_decay")
        current = [{k: g.get(k) for k in (*ours, "slices")} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, saved, kept in zip(self.param_groups, state_dict["param_groups"], current):
            for key in ours:  # a torch.optim.RMSprop state dict has none: each group keeps its own
                if key not in saved:
                    group[key] = kept[key]
            if kept["slices"] is not None:  # the caller's live tables, not the state dict's copies of them
                group["slices"] = kept["slices"]
        loaded, self.state = self.state, type(self.state)(dict)
        mine: set[int] = set()
        with torch.no_grad():
            for bucket in (b for buckets in self._buckets for b in buckets):
                mine.update(id(p) for p in bucket.params)
                self._load_bucket(bucket, [originals.get(id(p)) for p in bucket.params])
        for key, value in loaded.items():  # state of no current parameter: kept as loaded, like torch
            if id(key) not in mine:
                self.state[key] = value

    def _checked_states(self, state_dict: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Every loaded per-parameter state, by id of its parameter, checked before anything changes."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)
        ):
            raise ValueError(
                "loaded state dict does not match the optimizer's param groups "
                "(number of groups or of parameters per group)"
            )
        originals: dict[int, dict[str, Any]] = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for sid, p in zip(saved["params"], group["params"]):
                value = state_dict["state"].get(sid)
                if value:
                    _check_loaded_state(sid, value, p)
                    originals[id(p)] = value
        return originals

    def _load_bucket(self, bucket: _Bucket, sources: list[dict[str, Any] | None]) -> None:
        """Zero the bucket's state buffers, then copy each parameter's loaded state into its views."""
        bucket.ensure_state_buffers(
            any(s and "momentum_buffer" in s for s in sources), any(s and "grad_avg" in s for s in sources)
        )
        bucket.plans.clear()
        bucket.ready.clear()
        for flat in (bucket.square_avg, bucket.momentum_buffer, bucket.grad_avg, bucket.steps):
            if flat is not None:
                flat.zero_()
        for i, (p, src) in enumerate(zip(bucket.params, sources)):
            if not src:
                continue
            views = bucket.state_views(i, "momentum_buffer" in src, "grad_avg" in src)
            for key, view in views.items():
                if key in src:
                    view.copy_(torch.as_tensor(src[key]))
            self.state[p] = views


def _check_slices(hp: _HParams, params: Sequence[torch.Tensor], check_values: bool) -> None:
    slices = hp.slices
    if not isinstance(slices, SliceHParams):
        raise TypeError(f"a param group's 'slices' must be a kernels.rmsprop.SliceHParams, got {type(slices).__name__}")
    slices.check(params[0].device if params else slices.lr.device, check_values)
    slices.check_group(hp, [tuple(p.shape) for p in params])


def _check_loaded_state(sid: Any, value: dict[str, Any], param: torch.Tensor) -> None:
    for key in ("square_avg", "momentum_buffer", "grad_avg"):
        t = value.get(key)
        if t is not None and (
            not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(param.shape) or not t.is_floating_point()
        ):
            raise ValueError(
                f"loaded state {key!r} of parameter {sid} must be a floating-point tensor of shape "
                f"{tuple(param.shape)}, got {getattr(t, 'dtype', t)!r} {tuple(getattr(t, 'shape', ()))}"
            )
    if "step" in value and torch.as_tensor(value["step"]).numel() != 1:
        raise ValueError(f"loaded state 'step' of parameter {sid} must hold one number")
