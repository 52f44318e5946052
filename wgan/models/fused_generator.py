"""The generator with its upsampling folded into the convolutions and its blocks' glue fused.

:class:`FusedGenerator` subclasses :class:`~wgan.models.Generator` and registers nothing of its
own, so its parameters, buffers, their names and its ``state_dict`` are the eager generator's: a
checkpoint written by either path loads into the other, and the same seed initialises both the
same way. What changes is how the same math runs:

* the stem (``Linear -> BatchNorm1d -> LeakyReLU``) is the eager modules, unchanged: it is 0.1% of
  the FLOPs, and ``BatchNorm1d`` over ``[N, 2048]`` gains nothing from a shuffle-aware epilogue;
* each ``Upsample -> Conv2d`` is one convolution of the low-resolution input with the polyphase
  kernel (:func:`kernels.upsample_conv2d_phases`; 9 instead of 25 multiply-adds per output for the
  seed's 5x5 kernels), and the following ``BatchNorm2d -> LeakyReLU`` together with the pixel
  shuffle is one epilogue op reading the phase layout (:func:`kernels.bn_leaky_relu_shuffle`);
  in training mode the convolution leaves its bias out (the batch statistics cancel it exactly;
  the epilogue folds it into the running mean, so eval mode, which keeps it, sees the same
  statistics), and inside :meth:`FusedGenerator.polyphase_reused` (a training epoch) each
  polyphase kernel is computed once per generator update instead of once per forward;
* a stride-1 ``ConvTranspose2d`` in a middle block (a config without upsampling there) runs as is,
  followed by the same epilogue at ``scale=1`` (no shuffle);
* the last block (``ConvTranspose2d`` stride 1, then tanh) runs as the eager module does:
  ``F.conv_transpose2d`` with its bias, then ``tanh``. A bias+tanh epilogue would save one pass
  over the 3-channel output (6 MB at batch 512, a few microseconds of H200 bandwidth; 2% of the
  generator's FLOPs sit in that layer), which CUDA graphs and Inductor's own pointwise fusion
  already make negligible; the equivalent ``conv2d`` with the flipped, transposed kernel was 1.5x
  slower than ``conv_transpose2d`` forward + backward on this CPU. Not worth a kernel
  (docs/performance.md). A config
  whose last block upsamples uses :func:`kernels.upsample_conv2d` there.

``impl`` picks the epilogue's implementation ('triton', 'ref' or None = Triton where it can run);
the polyphase convolution is plain PyTorch (cuDNN/oneDNN) in every case. ``impl='ref'`` is the
polyphase convolution with the plain-PyTorch epilogue (pixel shuffle, ``F.batch_norm``,
``F.leaky_relu``): what ``--fused`` runs on a CPU without the Triton interpreter.

Layout. ``channels_last=True`` (``--channels-last``) converts the stem's output to channels_last
once; every convolution and epilogue after it keeps that layout (the polyphase kernel follows the
input's) and so do the images. ``False`` keeps NCHW throughout. ``None`` (the default) lets the
module choose: on a CPU it runs channels_last inside and returns NCHW images (one copy of the
3-channel output), because oneDNN is faster in NHWC for every op of this network (measured on
this CPU, one thread, batch 64: ``pixel_shuffle`` 6x, the last ``ConvTranspose2d`` 2x forward and
backward, batch norm 1.9x, the polyphase convolutions ~1.1x; the whole generator step 1.1x at
batch 64 and 1.4x at 512, docs/performance.md); on CUDA it keeps NCHW, the layout the user chose
by not passing ``--channels-last``.

Train/eval behave as :class:`Generator`'s: training mode uses batch statistics, updates the running
statistics (momentum convention, unbiased running variance) and increments
``num_batches_tracked`` as ``BatchNorm2d.forward`` does; eval mode reads the running statistics
and changes no state. The forward reads nothing back to the host (no ``.item()``), so it can be
captured in a CUDA graph and traced by ``torch.compile`` (the epilogue is a registered
``triton_op`` on CUDA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels._dispatch import IMPLS, resolve_impl
from wgan.config import WGANConfig
from wgan.models.eager import Generator

__all__ = ["FusedGenerator"]


@dataclass(frozen=True)
class _Block:
    """One block of ``Generator.body``, by index into it (no module is held twice)."""

    conv: int  # index of the Conv2d (after an Upsample) or ConvTranspose2d
    scale: int  # the upsampling factor (1: a ConvTranspose2d block)
    bn: int | None  # index of the BatchNorm2d, None for the last block
    slope: float | None  # the LeakyReLU's negative slope, None for the last block


class FusedGenerator(Generator):
    """Same parameters as :class:`Generator`; polyphase convolutions and fused BN epilogues."""

    def __init__(self, config: WGANConfig, impl: str | None = None, channels_last: bool | None = None) -> None:
        super().__init__(config)
        if impl is not None and impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS} or None, got {impl!r}")
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be True, False or None (auto), got {channels_last!r}")
        self.impl = impl
        self.channels_last = channels_last
        self._blocks = self._parse_body(config)
        # (conv index, weight address) -> ((weight version, address, layout), polyphase kernel); None:
        # computed per forward. The address is part of the entry's name, so that a stack of members
        # (wgan.models.stacked: this module's code run on each member's weights in turn) keeps one
        # kernel per member, and no member is ever handed another member's kernel.
        self._phase_cache: dict[tuple[int, int], tuple[tuple[Any, ...], torch.Tensor]] | None = None
        self._phase_pinned = False  # see polyphase_reused

    @contextlib.contextmanager
    def polyphase_reused(self, pinned: bool = False) -> Iterator[None]:
        """Inside, each polyphase kernel is computed once (without autograd) and reused by every
        forward while its weight keeps the same version and memory; a forward that needs the
        weight's gradient gets it through :func:`kernels.reuse_polyphase_weight`.

        Why a scope and not a cache for the module's life: an optimizer that writes the weights
        through their memory (FusedRMSprop's kernel, a CUDA-graph replay) does not bump
        ``_version``, so only the caller knows when the weights cannot change. A training epoch
        does (the generator's update is its last step); nothing is kept after it.

        ``pinned``: the caller keeps the kernels current itself (:meth:`refresh_polyphase` after
        each update, as a captured CUDA-graph step does), so a weight's version is not consulted
        and a kernel, once made, stays at its address for the whole scope.
        """
        self._phase_cache, self._phase_pinned = {}, pinned
        try:
            yield
        finally:
            self._phase_cache, self._phase_pinned = None, False

    def cached_polyphase(self) -> list[torch.Tensor]:
        """The polyphase kernels cached so far inside :meth:`polyphase_reused` (none outside it)."""
        return [kernel for _, kernel in (self._phase_cache or {}).values()]

    @torch.no_grad()
    def refresh_polyphase(self) -> None:
        """Recompute every cached polyphase kernel from its weight, into the kernel's own memory.

        Why: a CUDA graph replays its reads of the cached kernels at the addresses it captured;
        the captured generator step ends with this call (captured too), so every replay leaves the
        kernels of the weights it has just written for the next replays (wgan.training.cuda_graph).
        """
        scales = {block.conv: block.scale for block in self._blocks}
        for (conv, _), (key, kernel) in (self._phase_cache or {}).items():
            weight = self.body[conv].weight
            kernel.copy_(kernels.polyphase_weight(weight, scales[conv], memory_format=key[3]))

    def kernel_impls(self, device: torch.device, activation_dtype: torch.dtype) -> dict[str, str]:
        """What the epilogue will run on ``device`` with activations of ``activation_dtype``,
        resolved as its calls resolve it (the polyphase convolution is PyTorch's in every case)."""
        return {"bn_leaky_relu_shuffle": resolve_impl(self.impl, device, activation_dtype)}

    def internal_channels_last(self, device: torch.device) -> bool:
        """Whether the activations run channels_last on ``device`` (see the module docstring)."""
        if self.channels_last is None:
            return device.type == "cpu"
        return self.channels_last

    def _parse_body(self, config: WGANConfig) -> tuple[_Block, ...]:
        """Map the eager body's module list onto blocks, checking it is the shape models.py builds."""
        body = list(self.body)
        blocks: list[_Block] = []
        i = 0
        last = len(config.generator_filters) - 1
        for b, up in enumerate(config.generator_upsample):
            if up > 1:
                assert isinstance(body[i], nn.Upsample) and isinstance(body[i + 1], nn.Conv2d), body[i : i + 2]
                conv, i = i + 1, i + 2
            else:
                assert isinstance(body[i], nn.ConvTranspose2d), body[i]
                conv, i = i, i + 1
            if b < last:
                bn, act = body[i], body[i + 1]
                assert isinstance(bn, nn.BatchNorm2d) and isinstance(act, nn.LeakyReLU), body[i : i + 2]
                if bn.momentum is None or not bn.track_running_stats or not bn.affine:
                    raise ValueError("FusedGenerator needs affine batch norms with running stats and a momentum")
                blocks.append(_Block(conv, int(up), i, float(act.negative_slope)))
                i += 2
            else:
                blocks.append(_Block(conv, int(up), None, None))
        assert isinstance(body[i], nn.Tanh) and i == len(body) - 1, body[i:]
        return tuple(blocks)

    def _conv(self, block: _Block, x: torch.Tensor, phases: bool, with_bias: bool = True) -> torch.Tensor:
        conv = self.body[block.conv]
        bias = conv.bias if with_bias else None
        if block.scale == 1:  # stride-1 ConvTranspose2d, exactly as the eager module runs it
            return F.conv_transpose2d(
                x, conv.weight, bias, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation
            )
        if phases:
            return kernels.upsample_conv2d_phases(x, conv.weight, bias, block.scale, self._phases(block, x))
        return kernels.upsample_conv2d(x, conv.weight, bias, conv.padding, block.scale, impl="polyphase")

    def _phases(self, block: _Block, x: torch.Tensor) -> torch.Tensor | None:
        """The block's polyphase kernel in x's layout: from the cache inside :meth:`polyphase_reused`
        (None outside it: the convolution computes its own)."""
        if self._phase_cache is None:
            return None
        weight = self.body[block.conv].weight
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout = torch.channels_last if cl else torch.contiguous_format
        key = (weight._version, weight.data_ptr(), weight.dtype, layout)
        name = (block.conv, weight.data_ptr())
        entry = self._phase_cache.get(name)
        stale = entry is not None and (entry[0][1:] != key[1:] if self._phase_pinned else entry[0] != key)
        if entry is None or stale:
            with torch.no_grad():
                entry = (key, kernels.polyphase_weight(weight, block.scale, memory_format=layout))
            self._phase_cache[name] = entry
        if torch.is_grad_enabled() and weight.requires_grad:
            return kernels.reuse_polyphase_weight(weight, entry[1], block.scale)
        return entry[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"the generator takes z of shape [N, {self.z_dim}], got {tuple(z.shape)}")
        x = self.stem(z).view(z.shape[0], *self.initial_shape)
        inside_cl = self.internal_channels_last(z.device)
        for block in self._blocks:
            if inside_cl:  # a no-op after the first block, except past a 1x1 map (both layouts at once)
                x = x.contiguous(memory_format=torch.channels_last)
            if block.bn is None:
                x = torch.tanh(self._conv(block, x, phases=False))
                if inside_cl and not self.channels_last:  # auto: NHWC inside, NCHW images out
                    x = x.contiguous()
                continue
            bn = self.body[block.bn]
            if bn.training:  # BatchNorm2d.forward's bookkeeping, before the statistics are taken
                bn.num_batches_tracked.add_(1)
            # training: the batch norm cancels the convolution's bias exactly, so the convolution
            # leaves it out and the epilogue folds it into the running mean (eval keeps it: it
            # reads the running statistics, which include it)
            left_out = self.body[block.conv].bias if bn.training else None
            x = kernels.bn_leaky_relu_shuffle(
                self._conv(block, x, phases=True, with_bias=left_out is None),
                bn.weight,
                bn.bias,
                bn.running_mean,
                bn.running_var,
                bn.training,
                bn.momentum,
                bn.eps,
                block.slope,
                block.scale,
                impl=self.impl,
                input_bias=left_out,
            )
        return x
