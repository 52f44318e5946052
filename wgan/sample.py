"""``python -m wgan.sample``: images from a trained generator, and a generator-only export.

The latents are always drawn on the CPU from a ``torch.Generator`` seeded by the user (one batch
from ``--seed S``, or one vector per seed with ``--seeds A-B``), so the same seeds give the same
z on every device and at every ``--batch-size``; the images then differ at most by the device's
float rounding. The generator runs in inference mode (batch norm reads its running statistics
and changes no state), like the trainer's sample grids.

Every user mistake is found before anything is written and is one ``error:`` line with exit
code 2, like ``wgan.train``; that includes click's own usage errors (:class:`wgan.errors.OneLineCommand`).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from wgan.devices import resolve_device, set_cudnn_flags
from wgan.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OneLineCommand, UserError, one_line
from wgan.models.memory import check_sampling_memory
from wgan.run.atomic import atomic_write
from wgan.run.checkpoint import atomic_torch_save
from wgan.run.folder import RunFolder, is_protected, refuse_sweep_folder
from wgan.run.generator import LoadedGenerator, generate, load_generator
from wgan.run.images import save_png, tile, to_uint8

DEFAULT_N, DEFAULT_SEED, DEFAULT_STEPS = 25, 0, 8
EXPORT_FORMAT = "wgan-generator/1"
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
MAX_SEEDS = 1_000_000  # images of one --seeds range (each seed draws its own z: a bigger range is many calls)
_SEEDS = re.compile(r"(\d+)(?:-(\d+))?")
NEEDS_TWO_SEEDS = "--interpolate needs --seeds A-B with at least 2 seeds (it walks from each seed to the next)"


class SampleError(UserError):
    """A request the sampler cannot serve."""


# --- which checkpoint ----------------------------------------------------------------------------


def checkpoint_path(source: Path, which: str | None) -> Path:
    """The checkpoint file that SOURCE (a run folder or a file) and ``--checkpoint`` name."""
    if source.is_file():
        if which is not None:
            raise SampleError(f"--checkpoint picks a file of a run folder, but {source} is a checkpoint file already")
        return source
    if not source.is_dir():
        raise SampleError(f"no run folder or checkpoint file at {source}")
    refuse_sweep_folder(source)
    folder = RunFolder(source)
    which = which or "last"
    if which == "last":
        return folder.last_checkpoint
    if which == "best":
        if not folder.best_checkpoint.is_file():
            raise SampleError(f"{source} has no checkpoints/best.pt (only a run trained with --eval-every writes one)")
        return folder.best_checkpoint
    if not which.isdigit():
        raise SampleError(f"--checkpoint must be last, best or an epoch number, got {which!r}")
    return _epoch_checkpoint(folder, int(which))


def _epoch_checkpoint(folder: RunFolder, epoch: int) -> Path:
    """checkpoints/epoch_NNNNN.pt, or an error that lists the epochs there are."""
    path = folder.epoch_checkpoint(epoch)
    if path.is_file():
        return path
    epochs = folder.checkpoint_epochs()
    there = ", ".join(map(str, epochs)) if epochs else "none (pass --checkpoint last)"
    raise SampleError(f"{folder.path} has no checkpoint of epoch {epoch} ({path.name}); epochs with one: {there}")


# --- what to draw --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latents:
    """The z to draw (CPU, [N, z_dim]), a file name per image, and the grid's images per row."""

    z: torch.Tensor
    names: list[str]
    nrow: int | None = None  # None: a square grid


def parse_seeds(text: str) -> range:
    """``A-B`` (inclusive) or one seed ``A``, with 0 <= A <= B."""
    match = _SEEDS.fullmatch(text.strip())
    if not match:
        raise SampleError(f"--seeds must be A-B with 0 <= A <= B (or one seed A), got {text!r}")
    first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
    if first > last:
        raise SampleError(f"--seeds {text}: the range is empty ({first} > {last}); write A-B with A <= B")
    if last > MAX_SEED:
        raise SampleError(f"--seeds {text}: seeds go up to {MAX_SEED}")
    if last - first + 1 > MAX_SEEDS:
        raise SampleError(
            f"--seeds {text}: {last - first + 1} seeds, more than the {MAX_SEEDS} of one call; split the range"
        )
    return range(first, last + 1)


def seed_z(seed: int, n: int, z_dim: int) -> torch.Tensor:
    """``n`` latents from a CPU generator seeded ``seed``: the same numbers on every machine."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def batch_latents(n: int, seed: int, z_dim: int) -> Latents:
    """``--n N --seed S``: one batch of z, images named by their index."""
    return Latents(seed_z(seed, n, z_dim), [f"image_{i:05d}" for i in range(n)])


def per_seed_latents(seeds: range, z_dim: int) -> Latents:
    """``--seeds A-B``: image i from z_i of a generator seeded i, so a seed's image never depends on
    which other seeds are drawn with it."""
    return Latents(torch.cat([seed_z(s, 1, z_dim) for s in seeds]), [f"seed_{s:05d}" for s in seeds])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), one row per t.

    Gaussian z concentrate near a sphere, where a straight line would pass through the
    lower-norm interior the generator rarely saw. Computed in float64; both endpoints come out
    exactly (weights 1 and 0); nearly parallel vectors fall back to the straight line.
    """
    a64, b64, t = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega) < 1e-6:
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    weights_a, weights_b = torch.sin((1 - t) * omega) / torch.sin(omega), torch.sin(t * omega) / torch.sin(omega)
    return (weights_a * a64 + weights_b * b64).to(a.dtype)


def interpolation_latents(seeds: range, steps: int, z_dim: int) -> Latents:
    """``--interpolate``: a row per consecutive seed pair, ``steps`` columns from one seed's z to the next."""
    if len(seeds) < 2:
        raise SampleError(NEEDS_TWO_SEEDS)
    z = per_seed_latents(seeds, z_dim).z
    t = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    rows = [slerp(z[i], z[i + 1], t) for i in range(len(seeds) - 1)]
    names = [f"slerp_{a:05d}_{a + 1:05d}_{j:03d}" for a in seeds[:-1] for j in range(steps)]
    return Latents(torch.cat(rows), names, nrow=steps)


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """The command line, checked: what to draw and where to write it."""

    n: int | None
    seed: int | None
    seeds: range | None
    interpolate: bool
    steps: int | None
    grid: Path | None
    nrow: int | None
    scale: int
    out: Path | None
    export: Path | None
    batch_size: int

    @classmethod
    def parse(cls, options: dict[str, Any]) -> Request:
        """The options as click gives them, ``--seeds`` text made a range."""
        seeds = options["seeds"]
        return cls(**{**options, "seeds": None if seeds is None else parse_seeds(seeds)})

    def check(self) -> None:
        """The rules between options, and every output path, before anything is loaded or written."""
        if self.seeds is not None and (self.n is not None or self.seed is not None):
            raise SampleError("--seeds and --n/--seed are exclusive: --seeds A-B draws one image per seed")
        if self.interpolate and (self.seeds is None or len(self.seeds) < 2):
            raise SampleError(NEEDS_TWO_SEEDS)
        if self.steps is not None and not self.interpolate:
            raise SampleError("--steps applies only with --interpolate")
        if not (self.grid or self.out or self.export):
            raise SampleError("nothing to write: pass --grid PATH, --out DIR and/or --export PATH")
        if self.grid and self.grid.suffix.lower() != ".png":
            raise SampleError(f"--grid writes a PNG: give a path ending in .png, got {self.grid}")
        for option, path in (("--grid", self.grid), ("--export", self.export)):
            if path:
                check_file_target(option, path)
        if self.out:
            check_folder_target("--out", self.out)
        if self.export and self.export.suffix == ".safetensors":
            _safetensors()

    def count(self) -> int:
        """How many images the request draws (before drawing their latents)."""
        if self.interpolate and self.seeds is not None:
            return (len(self.seeds) - 1) * (self.steps or DEFAULT_STEPS)
        return len(self.seeds) if self.seeds is not None else self.n or DEFAULT_N

    def latents(self, z_dim: int) -> Latents:
        if self.interpolate:
            return interpolation_latents(self.seeds or range(0), self.steps or DEFAULT_STEPS, z_dim)
        if self.seeds is not None:
            return per_seed_latents(self.seeds, z_dim)
        return batch_latents(self.n or DEFAULT_N, DEFAULT_SEED if self.seed is None else self.seed, z_dim)


def _refuse_a_run_file(option: str, path: Path) -> None:
    """Never write over (or into) a run folder's checkpoints, records or reference data."""
    if is_protected(path):
        raise SampleError(
            f"{option} {path} is a file of a run folder (its checkpoints or records); choose another path"
        )


def check_file_target(option: str, path: Path) -> None:
    """A file the sampler may write: not a run folder's file, not a folder, in an existing folder it can write to."""
    _refuse_a_run_file(option, path)
    if path.is_dir():
        raise SampleError(f"{option} {path} is a folder; give a file path")
    _probe(option, path, path.parent)


def check_folder_target(option: str, path: Path) -> None:
    """A folder for the images: an existing writable one, or a new one in an existing folder."""
    _refuse_a_run_file(option, path)
    if path.exists() and not path.is_dir():
        raise SampleError(f"{option} {path} exists and is not a folder")
    _probe(option, path, path if path.is_dir() else path.parent)


def _probe(option: str, path: Path, folder: Path) -> None:
    """Try a nameless temporary file in ``folder``: permissions alone miss read-only mounts and root."""
    if not folder.is_dir():
        raise SampleError(f"cannot write {option} {path}: {folder} is not an existing folder")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise SampleError(f"cannot write {option} {path}: {exc.strerror or exc}") from None


# --- generating and writing ----------------------------------------------------------------------


def render(loaded: LoadedGenerator, z: torch.Tensor, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 images [b, H, W, C], batch by batch, so a large n never sits on the device at once."""
    for images in generate(loaded.generator, z, loaded.device, chunk=batch_size):
        yield to_uint8(images)


def write_samples(loaded: LoadedGenerator, latents: Latents, request: Request) -> list[str]:
    """The --out PNGs as their batches come, then the --grid; what was written, one line each."""
    if request.out:
        request.out.mkdir(exist_ok=True)
    kept: list[np.ndarray] = []
    names = iter(latents.names)
    for pixels in render(loaded, latents.z, request.batch_size):
        if request.out:
            for image, name in zip(pixels, names):
                save_png(image, request.out / f"{name}.png")
        if request.grid:
            kept.append(pixels)
    written = [f"images: {request.out} ({len(latents.names)} PNGs)"] if request.out else []
    if request.grid:
        nrow = request.nrow or latents.nrow
        save_png(tile(np.concatenate(kept), nrow=nrow), request.grid, scale=request.scale)
        written.append(f"grid: {request.grid} ({len(latents.names)} images)")
    return written


def export_generator(loaded: LoadedGenerator, path: Path) -> str:
    """The generator alone: safetensors for a ``.safetensors`` path, else a weights_only torch file."""
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.generator.state_dict().items()}
    config = loaded.config.to_dict()
    if path.suffix == ".safetensors":
        metadata = {
            "format": EXPORT_FORMAT,
            "config": json.dumps(config),
            "ema": json.dumps(loaded.ema),
            "epoch": str(loaded.epoch),
        }
        data = _safetensors().save(state, metadata=metadata)
        atomic_write(path, lambda fh: fh.write(data))
    else:
        atomic_torch_save(
            {"format": EXPORT_FORMAT, "config": config, "state_dict": state, "ema": loaded.ema, "epoch": loaded.epoch},
            path,
        )
    return f"export: {path} ({'EMA' if loaded.ema else 'raw'} generator of epoch {loaded.epoch}, {EXPORT_FORMAT})"


def _safetensors() -> Any:
    """``safetensors.torch``, or the one line that says how to get it."""
    try:
        import safetensors.torch
    except ImportError:
        raise SampleError(
            "--export to .safetensors needs the safetensors package: pip install safetensors "
            "(or pip install -e '.[dev]'); or export to a .pt file"
        ) from None
    return safetensors.torch


def run(source: Path, which: str | None, ema: bool | None, device_name: str, options: dict[str, Any]) -> int:
    """Everything after parsing (``options``: the Request's fields as click gives them); the exit code."""
    try:
        request = Request.parse(options)
        request.check()
        loaded = load_generator(checkpoint_path(source, which), ema, _device(device_name))
        if request.grid or request.out:
            check_sampling_memory(
                loaded.config, request.count(), request.batch_size, request.grid is not None, loaded.device
            )
        latents = request.latents(loaded.config.z_dim) if request.grid or request.out else None
    except UserError as exc:
        return _error(exc)
    weights = "EMA" if loaded.ema else "raw"
    print(f"generator of {loaded.path}: epoch {loaded.epoch}, {weights} weights, on {loaded.device}", file=sys.stderr)
    try:
        written = write_samples(loaded, latents, request) if latents else []
        if request.export:
            written.append(export_generator(loaded, request.export))
    except OSError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n".join(written))
    return EXIT_OK


def _device(name: str) -> torch.device:
    """``--device`` resolved; on CUDA in full fp32 (no TF32), so the images match the CPU's up to rounding."""
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        set_cudnn_flags(allow_tf32=False)
    return device


def _error(exc: BaseException) -> int:
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return EXIT_USAGE


# --- the command line ----------------------------------------------------------------------------


EPILOG = """\b
Examples:
  python -m wgan.sample runs/x --grid grid.png                   25 images of z seeded 0
  python -m wgan.sample runs/x --seeds 0-99 --out imgs/          one PNG per seed
  python -m wgan.sample runs/x --checkpoint best --export g.pt   the generator alone
  python -m wgan.sample runs/x --seeds 0-4 --interpolate --grid walk.png
"""


def _integer(
    name: str, metavar: str, help: str, minimum: int = 1, maximum: int | None = None, default: int | None = None
) -> Any:
    """An integer option; a None default means "not given", so options that exclude it can tell."""
    return click.option(
        name,
        type=click.IntRange(minimum, maximum),
        default=default,
        metavar=metavar,
        help=help,
        show_default=default is not None,
    )


def _path(name: str, metavar: str, help: str) -> Any:
    return click.option(name, type=click.Path(path_type=Path), default=None, metavar=metavar, help=help)


@click.command(
    cls=OneLineCommand,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "which",
    metavar="last|best|EPOCH",
    default=None,
    help="with a RUN_DIR: checkpoints/last.pt, best.pt or epoch_NNNNN.pt  [default: last]",
)
@click.option(
    "--ema/--raw",
    "ema",
    default=None,
    help="the EMA'd generator weights or the raw ones  [default: EMA when the checkpoint has them]",
)
@_integer("--n", "N", f"number of images, from one z batch of --seed  [default: {DEFAULT_N}]")
@_integer(
    "--seed",
    "S",
    f"seed of the CPU generator that draws the z batch  [default: {DEFAULT_SEED}]",
    minimum=0,
    maximum=MAX_SEED,
)
@click.option(
    "--seeds",
    metavar="A-B",
    default=None,
    help="one image per seed i (z from a CPU generator seeded i); exclusive with --n/--seed",
)
@click.option(
    "--interpolate", is_flag=True, help="a latent walk (slerp): a row per consecutive pair of --seeds, --steps columns"
)
@_integer("--steps", "K", f"columns of --interpolate, both seeds included  [default: {DEFAULT_STEPS}]", minimum=2)
@_path("--grid", "PATH", "write the images as one PNG grid (its folder must exist)")
@_integer("--nrow", "N", "images per grid row  [default: square; --steps with --interpolate]")
@_integer("--scale", "N", "enlarge the grid (nearest neighbour)", maximum=16, default=2)
@_path(
    "--out",
    "DIR",
    "write one PNG per image at its own size, named seed_NNNNN.png (--seeds), image_NNNNN.png "
    "(--n) or slerp_A_B_STEP.png (created if missing; its parent must exist)",
)
@_path(
    "--export",
    "PATH",
    f"write the generator alone ({EXPORT_FORMAT}): safetensors for *.safetensors, else a "
    "torch.load(weights_only=True) dict",
)
@click.option("--device", default="auto", show_default=True, metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
@_integer("--batch-size", "N", "images per generator call (the z are the same at any batch size)", default=256)
@click.pass_context
def cli(ctx: click.Context, source: Path, which: str | None, ema: bool | None, device: str, **options: Any) -> None:
    """Images from a trained generator (a grid, one PNG each, a latent walk), or the generator alone.

    At least one of --grid, --out and --export is needed. Bad input is one error line and exit 2.
    """
    ctx.exit(run(source, which, ema, device, options))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wgan-sample``)."""
    cli.main(args=argv, prog_name="python -m wgan.sample")


if __name__ == "__main__":
    main()
