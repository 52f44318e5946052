"""Every hyper-parameter of a run in one dataclass.

Defaults are the seed configuration (the book's horse WGAN). A config can be read from JSON or
YAML, overridden field by field from the command line, and is saved as ``config.json`` in the run
folder, which is what resume and the report read back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A user mistake in a configuration; its message is one line fit for the terminal."""


@dataclass
class WGANConfig:
    # --- data -------------------------------------------------------------------------------
    data: str | None = None  # CIFAR-10 archive/folder, image folder or .npz; None = cache/download
    data_class: str = "horse"  # CIFAR-10 class by name or index (only for CIFAR-10 sources)
    data_split: str = "train+test"  # CIFAR-10 split: train, test or train+test
    resize: bool = False  # resize images of another size instead of refusing them
    image_size: int = 32
    image_channels: int = 3

    # --- critic -----------------------------------------------------------------------------
    critic_filters: tuple[int, ...] = (32, 64, 128, 128)
    critic_kernel_size: int = 5
    critic_strides: tuple[int, ...] = (2, 2, 2, 1)
    critic_leaky_slope: float = 0.2

    # --- generator --------------------------------------------------------------------------
    z_dim: int = 100
    generator_initial_size: int = 4  # spatial side of the reshaped dense output
    generator_initial_channels: int = 128
    generator_filters: tuple[int, ...] = (128, 64, 32, 3)
    generator_kernel_size: int = 5
    generator_upsample: tuple[int, ...] = (2, 2, 2, 1)
    generator_leaky_slope: float = 0.2
    generator_bn_momentum: float = 0.2  # PyTorch convention: Keras momentum 0.8
    generator_bn_eps: float = 1e-3
    weight_init_std: float = 0.02

    # --- optimisation -----------------------------------------------------------------------
    optimizer: str = "rmsprop"
    lr_critic: float = 5e-5
    lr_generator: float = 5e-5
    rmsprop_alpha: float = 0.99  # torch's default; Keras used rho 0.9
    rmsprop_eps: float = 1e-8  # torch adds eps after the square root; Keras 1e-7 inside it
    n_critic: int = 5
    clip_threshold: float = 0.01
    batch_size: int = 512
    epochs: int = 12000
    seed: int = 0

    # --- execution --------------------------------------------------------------------------
    fused: bool = False
    device: str = "auto"  # auto = cuda when available, else cpu
    cuda_graph: bool = True  # with fused on CUDA: replay captured steps (no effect elsewhere)
    tf32: bool = False  # CUDA: TF32 tensor cores for convolutions and matmuls (faster, ~1e-3 rel.)
    channels_last: bool = False  # NHWC activations and weights (cuDNN's fastest small convs)
    amp: str = "none"  # "bf16": autocast forward passes to bfloat16 (state and optimizer stay fp32)
    deterministic: bool = False  # bit-reproducible kernels (CPU: one thread; CUDA: deterministic cuDNN)
    sample_every: int = 100
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0  # last.pt refreshed at least this often (0 = off): SIGKILL costs <= this
    log_every: int = 10  # metrics are read back from the device every this many epochs
    wandb: str = "auto"  # auto, online, offline, disabled
    report: bool = True  # write analysis_report.md + plots/ when training ends or is interrupted
    notes: str = ""

    extra: dict[str, Any] = field(default_factory=dict)  # free-form, kept for the report

    # ----------------------------------------------------------------------------------------
    def validate(self) -> WGANConfig:
        """Raise ConfigError naming the first bad field; return self so calls can chain."""
        positive_ints = ("batch_size", "epochs", "n_critic", "z_dim", "image_size", "image_channels",
                         "critic_kernel_size", "generator_kernel_size", "generator_initial_size",
                         "generator_initial_channels", "sample_every", "checkpoint_every", "log_every")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr_critic", "lr_generator", "clip_threshold", "rmsprop_eps",
                     "generator_bn_eps", "weight_init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or value != value:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if not isinstance(self.checkpoint_minutes, (int, float)) or not self.checkpoint_minutes >= 0:
            raise ConfigError(f"checkpoint_minutes must be a number >= 0, got {self.checkpoint_minutes!r}")
        if not 0 <= self.rmsprop_alpha < 1:
            raise ConfigError(f"rmsprop_alpha must be in [0, 1), got {self.rmsprop_alpha!r}")
        if not 0 <= self.generator_bn_momentum <= 1:
            raise ConfigError(f"generator_bn_momentum must be in [0, 1], got {self.generator_bn_momentum!r}")
        if self.optimizer != "rmsprop":
            raise ConfigError(f"optimizer must be 'rmsprop' (the WGAN weight-clipping recipe), got {self.optimizer!r}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp must be none or bf16, got {self.amp!r}")
        if self.wandb not in ("auto", "online", "offline", "disabled"):
            raise ConfigError(f"wandb must be auto, online, offline or disabled, got {self.wandb!r}")
        if self.data_split not in ("train", "test", "train+test"):
            raise ConfigError(f"data_split must be train, test or train+test, got {self.data_split!r}")
        if not self.critic_filters or any(f < 1 for f in self.critic_filters):
            raise ConfigError(f"critic_filters must be positive integers, got {self.critic_filters!r}")
        if len(self.critic_strides) != len(self.critic_filters) or any(s < 1 for s in self.critic_strides):
            raise ConfigError(
                f"critic_strides needs one stride >= 1 per critic filter ({len(self.critic_filters)}), "
                f"got {self.critic_strides!r}")
        if not self.generator_filters or any(f < 1 for f in self.generator_filters):
            raise ConfigError(f"generator_filters must be positive integers, got {self.generator_filters!r}")
        if self.generator_filters[-1] != self.image_channels:
            raise ConfigError(
                f"the last generator filter ({self.generator_filters[-1]}) must equal image_channels "
                f"({self.image_channels})")
        if len(self.generator_upsample) != len(self.generator_filters) or any(
                u < 1 for u in self.generator_upsample):
            raise ConfigError(
                f"generator_upsample needs one factor >= 1 per generator filter "
                f"({len(self.generator_filters)}), got {self.generator_upsample!r}")
        side = self.generator_initial_size
        for up in self.generator_upsample:
            side *= up
        if side != self.image_size:
            raise ConfigError(
                f"the generator makes {side}x{side} images (initial size {self.generator_initial_size} "
                f"x upsampling {self.generator_upsample}) but image_size is {self.image_size}")
        if self.critic_kernel_size % 2 == 0 or self.generator_kernel_size % 2 == 0:
            raise ConfigError("kernel sizes must be odd so that 'same' padding is symmetric")
        return self

    # ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WGANConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            default = getattr(cls(), key)
            values[key] = _coerce(key, value, default)
        return cls(**values)

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The fields a JSON or YAML config file sets, checked against the dataclass (ConfigError)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        yaml = _yaml(path) if path.suffix.lower() in (".yaml", ".yml") else None
        try:
            raw = yaml.safe_load(text) if yaml else json.loads(text)
        except Exception as exc:  # json and yaml raise different types; both are user mistakes
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {first}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field names to values")
        cls.from_dict(raw)  # unknown fields and wrong types are refused here
        return raw

    @classmethod
    def from_file(cls, path: str | Path) -> WGANConfig:
        return cls.from_dict(cls.read_file(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> WGANConfig:
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------------------------
    @property
    def critic_params_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the critic's parameters in registration order (used by benchmarks)."""
        shapes: list[tuple[int, ...]] = []
        prev, side = self.image_channels, self.image_size
        k = self.critic_kernel_size
        for filters, stride in zip(self.critic_filters, self.critic_strides):
            shapes += [(filters, prev, k, k), (filters,)]
            prev, side = filters, conv_out_side(side, k, stride)
        shapes += [(1, prev * side * side), (1,)]
        return shapes


def _yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"config file {path}: YAML needs pyyaml (pip install pyyaml); or use JSON") from None
    return yaml


def conv_out_side(side: int, kernel: int, stride: int) -> int:
    """Output side of a 'same'-padded convolution (padding kernel // 2)."""
    return (side + 2 * (kernel // 2) - kernel) // stride + 1


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Bring a JSON/YAML value to the type of the field's default, or fail naming the field."""
    try:
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(v) for v in value)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise TypeError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field {key} has the wrong type: {value!r}") from None
    return value
