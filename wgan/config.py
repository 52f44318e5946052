"""Every hyper-parameter of a run in one dataclass.

Defaults are the seed configuration (the book's horse WGAN). A config can be read from JSON or
YAML, overridden field by field from the command line, and is saved as ``config.json`` in the run
folder, which is what resume and the report read back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from wgan.errors import UserError, one_line

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


class ConfigError(UserError):
    """A user mistake in a configuration."""


PRECISIONS = ("auto", "fp32", "tf32", "bf16")
# What --precision auto runs on each device type (others: fp32). The one place to change it: the
# CPU's choice waits for the fp32-vs-bf16 quality measurement (docs/metrics.md).
AUTO_PRECISION: dict[str, str] = {"cuda": "tf32", "cpu": "fp32"}


def resolve_precision(precision: str, device_type: str) -> str:
    """The precision that runs: ``auto`` resolved for the device type; ``tf32`` is fp32 off CUDA (TF32 is
    a tensor-core format); any other value as given."""
    if precision == "auto":
        return AUTO_PRECISION.get(device_type, "fp32")
    return "fp32" if precision == "tf32" and device_type != "cuda" else precision


# The fields whose default depends on the recipe (None in the dataclass until __post_init__):
# torch's RMSprop for the wgan recipe, Keras's rho and epsilon (inside the root) for the book's.
RECIPE_DEFAULTS: dict[str, dict[str, float]] = {
    "wgan": {"rmsprop_alpha": 0.99, "rmsprop_eps": 1e-8},
    "book": {"rmsprop_alpha": 0.9, "rmsprop_eps": 1e-7},
}


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    execution: bool = False,
) -> Any:
    """A config field with everything the CLI and :meth:`WGANConfig.validate` need to know of it.

    ``minimum`` and ``maximum`` are inclusive, ``above`` and ``below`` exclusive bounds; ``execution`` marks a field
    that changes how a run executes or is recorded, not what it computes, so it may change on
    ``--resume``. The help text, choices and bounds are read by ``wgan.train``'s options and by
    ``validate()`` alike: the one home of each field's rules.
    """
    meta = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "execution": execution,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class WGANConfig:
    # --- data -------------------------------------------------------------------------------
    data: str | None = option(
        None,
        "training data: CIFAR-10 archive/folder, image folder or .npz [default: CIFAR-10 cache, downloaded]",
        execution=True,
    )
    data_class: str = option("horse", "CIFAR-10 class, by name or index")
    data_split: str = option("train+test", "CIFAR-10 split", choices=("train", "test", "train+test"))
    resize: bool = option(False, "resize images of another size instead of refusing them")
    image_size: int = option(32, "image side in pixels", minimum=1)
    image_channels: int = option(3, "image channels (3 = RGB, 1 = grey)", minimum=1)

    # --- critic -----------------------------------------------------------------------------
    critic_filters: tuple[int, ...] = option((32, 64, 128, 128), "critic convolution filters, comma-separated")
    critic_kernel_size: int = option(5, "critic convolution kernel size (odd)", minimum=1)
    critic_strides: tuple[int, ...] = option((2, 2, 2, 1), "critic convolution strides, one per filter")
    critic_leaky_slope: float = option(0.2, "critic LeakyReLU negative slope")

    # --- generator --------------------------------------------------------------------------
    z_dim: int = option(100, "latent dimension", minimum=1)
    generator_initial_size: int = option(4, "side of the generator's first feature map", minimum=1)
    generator_initial_channels: int = option(128, "channels of the generator's first feature map", minimum=1)
    generator_filters: tuple[int, ...] = option(
        (128, 64, 32, 3), "generator convolution filters, comma-separated (last = image channels)"
    )
    generator_kernel_size: int = option(5, "generator convolution kernel size (odd)", minimum=1)
    generator_upsample: tuple[int, ...] = option(
        (2, 2, 2, 1), "generator upsampling factors, one per filter (1 = transposed conv)"
    )
    generator_leaky_slope: float = option(0.2, "generator LeakyReLU negative slope")
    generator_bn_momentum: float = option(
        0.2, "generator batch-norm momentum (PyTorch convention; Keras 0.8 = 0.2)", minimum=0.0, maximum=1.0
    )
    generator_bn_eps: float = option(1e-3, "generator batch-norm epsilon", above=0.0)
    weight_init_std: float = option(0.02, "std of the N(0, std) weight initialisation", above=0.0)

    # --- optimisation -----------------------------------------------------------------------
    optimizer: str = option(
        "rmsprop", "optimizer of both models (the WGAN weight-clipping recipe)", choices=("rmsprop",)
    )
    lr_critic: float = option(5e-5, "critic learning rate", above=0.0)
    lr_generator: float = option(5e-5, "generator learning rate", above=0.0)
    rmsprop_alpha: float = option(
        None,
        "RMSprop smoothing constant (Keras rho) [default: the recipe's: 0.99 wgan (torch's), 0.9 book (Keras's)]",
        minimum=0.0,
        below=1.0,
    )
    rmsprop_eps: float = option(
        None,
        "RMSprop epsilon (wgan: added after the square root; book: inside it) "
        "[default: the recipe's: 1e-8 wgan, 1e-7 book]",
        above=0.0,
    )
    n_critic: int = option(5, "critic steps per generator step (one epoch = n_critic + 1 steps)", minimum=1)
    clip_threshold: float = option(
        0.01, "critic weights are clipped to [-clip, clip] after every critic step", above=0.0
    )
    batch_size: int = option(512, "images per batch", minimum=1)
    epochs: int = option(
        12000, "total epochs of the run (a resumed run trains up to this many)", minimum=1, execution=True
    )
    seed: int = option(
        0, "random seed (weights, batches, z), 0 to 2**63-1 (torch's range)", minimum=0, maximum=MAX_SEED
    )
    recipe: str = option(
        "wgan",
        "wgan: one critic step on d_real + d_fake, torch's RMSprop; book: the book's Keras "
        "code (two critic steps, inference-mode fakes, eps inside RMSprop's root, Keras "
        "'same' padding)",
        choices=("wgan", "book"),
    )
    g_ema: float = option(
        0.0,
        "keep an exponential moving average of the generator's weights with this decay "
        "(e.g. 0.999; 0 = off); samples, evaluation and the report use it",
        minimum=0.0,
        below=1.0,
    )

    # --- execution --------------------------------------------------------------------------
    fused: bool = option(
        False, "use the project's fused kernels (same algorithm as the eager reference)", execution=True
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N", execution=True)
    cuda_graph: bool = option(
        True, "with --fused on CUDA, capture one critic and one generator step and replay them", execution=True
    )
    precision: str = option(
        "auto",
        "auto (TF32 on CUDA, as PyTorch's convolutions default to; fp32 on a CPU), fp32 (strict), tf32 (CUDA: "
        "TF32 tensor cores in convolutions and matmuls, ~1e-3 relative rounding) or bf16 (autocast forward "
        "passes; weights, optimizer state and losses stay fp32)",
        choices=PRECISIONS,
        execution=True,
    )
    channels_last: bool = option(False, "NHWC memory layout for activations and conv weights", execution=True)
    deterministic: bool = option(
        False,
        "bit-reproducible runs: one CPU thread (oneDNN's threaded convs vary run to run), deterministic cuDNN",
        execution=True,
    )
    sample_every: int = option(
        100, "write a 5x5 sample grid every this many epochs (and at the last)", minimum=1, execution=True
    )
    checkpoint_every: int = option(
        1000, "write checkpoints/epoch_NNNNN.pt and last.pt every this many epochs", minimum=1, execution=True
    )
    checkpoint_minutes: float = option(
        10.0,
        "also refresh last.pt at least every this many minutes (0 = off): a kill loses at most that",
        minimum=0.0,
        execution=True,
    )
    log_every: int = option(10, "read metrics back from the device every this many epochs", minimum=1, execution=True)
    wandb: str = option(
        "auto",
        "Weights & Biases: auto = online with credentials, else offline",
        choices=("auto", "online", "offline", "disabled"),
        execution=True,
    )
    report: bool = option(
        True, "write analysis_report.md and plots/ when training ends or is interrupted", execution=True
    )
    eval_every: int = option(
        0,
        "KID/FID of the generator every this many epochs (0 = off); the best goes to checkpoints/best.pt",
        minimum=0,
        execution=True,
    )
    eval_samples: int = option(1000, "generated images per evaluation", minimum=2, execution=True)
    eval_metric: str = option(
        "kid",
        "the metric that picks checkpoints/best.pt (both are logged; KID is unbiased at small sample counts)",
        choices=("kid", "fid"),
        execution=True,
    )
    fid_weights: str | None = option(
        None,
        "the FID Inception network [default: the file `make fid-weights` fetched, sha256-checked before loading]; "
        "a file given here is trusted code (TorchScript runs when loaded)",
        execution=True,
    )
    notes: str = option("", "free text stored with the run", execution=True)

    extra: dict[str, Any] = field(default_factory=dict)  # free-form, kept for the report

    def __post_init__(self) -> None:
        """Fields left to the recipe (None) take the recipe's value, so ``WGANConfig(recipe="book")``
        is the book's optimizer wherever it is built."""
        for key, value in RECIPE_DEFAULTS.get(self.recipe, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    # ----------------------------------------------------------------------------------------
    def validate(self) -> WGANConfig:
        """Raise ConfigError naming the first bad field; return self so calls can chain."""
        for f in fields(self):
            if f.metadata:
                check_field(f, getattr(self, f.name))
        self._check_architecture()
        return self

    def _check_architecture(self) -> None:
        """The rules that relate fields to one another."""
        if not self.critic_filters or any(f < 1 for f in self.critic_filters):
            raise ConfigError(f"critic_filters must be positive integers, got {self.critic_filters!r}")
        if len(self.critic_strides) != len(self.critic_filters) or any(s < 1 for s in self.critic_strides):
            raise ConfigError(
                f"critic_strides needs one stride >= 1 per critic filter ({len(self.critic_filters)}), "
                f"got {self.critic_strides!r}"
            )
        if not self.generator_filters or any(f < 1 for f in self.generator_filters):
            raise ConfigError(f"generator_filters must be positive integers, got {self.generator_filters!r}")
        if self.generator_filters[-1] != self.image_channels:
            raise ConfigError(
                f"the last generator filter ({self.generator_filters[-1]}) must equal image_channels "
                f"({self.image_channels})"
            )
        if len(self.generator_upsample) != len(self.generator_filters) or any(u < 1 for u in self.generator_upsample):
            raise ConfigError(
                f"generator_upsample needs one factor >= 1 per generator filter "
                f"({len(self.generator_filters)}), got {self.generator_upsample!r}"
            )
        side = self.generator_initial_size * math.prod(self.generator_upsample)
        if side != self.image_size:
            raise ConfigError(
                f"the generator makes {side}x{side} images (initial size {self.generator_initial_size} "
                f"x upsampling {self.generator_upsample}) but image_size is {self.image_size}"
            )
        if self.critic_kernel_size % 2 == 0 or self.generator_kernel_size % 2 == 0:
            raise ConfigError("kernel sizes must be odd so that 'same' padding is symmetric")

    # ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WGANConfig:
        raw = _precision_from_old_fields(raw)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            values[key] = coerce_field(key, value, field_default(key))
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
            first = one_line(exc)
            raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {first}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field names to values")
        cls.from_dict(raw)  # unknown fields and wrong types are refused here
        return _precision_from_old_fields(raw)

    @classmethod
    def from_file(cls, path: str | Path) -> WGANConfig:
        return cls.from_dict(cls.read_file(path))

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


def ema_decay_at(beta: float, step: int) -> float:
    """The decay of the generator's weight average (--g-ema ``beta``) at generator step ``step``
    (0 = the first update): ``min(beta, (1 + t) / (10 + t))``, StyleGAN's ramp (TensorFlow's
    ExponentialMovingAverage with ``num_updates``). Early steps average over few steps, so the average
    forgets its random start instead of holding ``beta**t`` of it. wgan.training.engine computes the same
    on the device."""
    return min(beta, (1 + step) / (10 + step))


def execution_fields() -> tuple[str, ...]:
    """The fields that may change on --resume (they change how a run executes, not what it computes)."""
    return tuple(f.name for f in fields(WGANConfig) if f.metadata.get("execution"))


def check_field(f: Any, value: Any) -> None:
    """One field's own rules (type, choices, bounds) from its metadata; ConfigError names it."""
    meta, name = f.metadata, f.name
    default = f.default
    if meta.get("choices") and value not in meta["choices"]:
        choices = meta["choices"]
        listed = " or ".join(choices) if len(choices) < 3 else ", ".join(choices[:-1]) + " or " + choices[-1]
        raise ConfigError(f"{name} must be {listed}, got {value!r}")
    bounds = {k: meta.get(k) for k in ("minimum", "maximum", "above", "below") if meta.get(k) is not None}
    if not bounds:
        return
    if isinstance(default, int) and not isinstance(default, bool):
        top = meta.get("maximum")
        if not isinstance(value, int) or isinstance(value, bool) or value < meta["minimum"] or value > (top or value):
            within = f"in [{meta['minimum']}, {top}]" if top is not None else f">= {meta['minimum']}"
            raise ConfigError(f"{name} must be an integer {within}, got {value!r}")
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (number and _in_bounds(bounds, value)):
        raise ConfigError(f"{name} must be {_bounds_text(bounds)}, got {value!r}")


_CHECKS = {"minimum": float.__ge__, "maximum": float.__le__, "above": float.__gt__, "below": float.__lt__}


def _in_bounds(bounds: dict[str, float], value: float) -> bool:
    return all(_CHECKS[k](float(value), float(b)) for k, b in bounds.items())


def _bounds_text(bounds: dict[str, float]) -> str:
    """'a number > 0', 'a number >= 0', 'in [0, 1)', 'in [0, 1]'."""
    low = ("[", bounds["minimum"]) if "minimum" in bounds else ("(", bounds.get("above"))
    high = ("]", bounds["maximum"]) if "maximum" in bounds else (")", bounds.get("below"))
    if high[1] is None:
        return f"a number {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"


def _precision_from_old_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Runs saved before ``precision`` existed had ``tf32`` and ``amp``: amp bf16 -> bf16, tf32 -> tf32,
    else fp32 (what those runs ran; their config.json and checkpoints keep resuming)."""
    if "tf32" not in raw and "amp" not in raw:
        return raw
    new = {k: v for k, v in raw.items() if k not in ("tf32", "amp")}
    if "precision" not in new:
        new["precision"] = "bf16" if raw.get("amp") == "bf16" else "tf32" if raw.get("tf32") is True else "fp32"
    return new


def _yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"config file {path}: YAML needs pyyaml (pip install pyyaml); or use JSON") from None
    return yaml


def conv_out_side(side: int, kernel: int, stride: int) -> int:
    """Output side of a 'same'-padded convolution (padding kernel // 2)."""
    return (side + 2 * (kernel // 2) - kernel) // stride + 1


def coerce_field(key: str, value: Any, default: Any) -> Any:
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
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"config field {key} has the wrong type: {value!r}") from None
    return _checked_kind(key, value, default)


def _checked_kind(key: str, value: Any, default: Any) -> Any:
    """A text field holds a string (``data`` and ``fid_weights`` may be null), ``extra`` a mapping:
    anything else is refused here, not met later as a traceback (a report that cannot render it)."""
    if key == "extra":
        wanted, ok = "a mapping", isinstance(value, dict)
    elif default is None:
        wanted, ok = "a string or null", value is None or isinstance(value, str)
    elif isinstance(default, str):
        wanted, ok = "a string", isinstance(value, str)
    else:
        return value
    if not ok:
        raise ConfigError(f"config field {key} must be {wanted}, got {value!r}")
    return value


def field_default(key: str) -> Any:
    """The value whose type a field takes (the seed default; the wgan recipe's for recipe fields)."""
    return getattr(WGANConfig(), key)


def option_name(field_name: str) -> str:
    """The command-line spelling of a field: ``lr_critic`` -> ``--lr-critic``."""
    return "--" + field_name.replace("_", "-")


# --- layering: defaults < config file < command line (< the recipe's defaults for what is unset) --

RESUMABLE_FIELDS = execution_fields()


def file_values(path: str | Path) -> dict[str, Any]:
    """The fields a config file sets, with the config's types."""
    return {key: coerce_field(key, value, field_default(key)) for key, value in WGANConfig.read_file(path).items()}


def resolve_config(
    from_file: dict[str, Any], from_cli: dict[str, Any], *, resumed: WGANConfig | None = None
) -> WGANConfig:
    """Layer a config file and the command line over the defaults (every field not given takes its
    default; the recipe's for the recipe's fields), or over ``resumed``, the config of the run being
    resumed.

    When resuming, a hyper-parameter that differs from the run's value is refused: the
    checkpoint's weights and optimizer state belong to the run's hyper-parameters.
    """
    changes: dict[str, Any] = {}
    for source in (from_file, from_cli):
        for key, value in source.items():
            changes[key] = coerce_field(key, value, field_default(key))
    if resumed is None:
        return WGANConfig(**changes).validate()
    for key, value in changes.items():
        if key not in RESUMABLE_FIELDS and value != getattr(resumed, key):
            raise ConfigError(
                f"{option_name(key)} is a hyper-parameter of the run ({_show(getattr(resumed, key))}) and cannot "
                f"change on --resume (asked {_show(value)}); start a new run instead"
            )
    return dataclasses.replace(resumed, **changes).validate()


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)
