"""Training images from any of the sources a user is likely to have, as one float tensor in [-1, 1].

The whole data set is small (6000 CIFAR-10 horses are 70 MB as float32), so it is read once into a
single CPU tensor that the trainer moves to the device; batches are then drawn on the device with
no DataLoader and no per-step host-to-device copy.

Sources (``load_images``):

- the official CIFAR-10 python release: ``cifar-10-python.tar.gz`` (members are read straight from
  the archive, nothing is extracted), its extracted ``cifar-10-batches-py/`` folder, or a folder
  holding either;
- a folder of image files (PNG, JPEG, ...), searched recursively in sorted order;
- an ``.npz`` with a uint8 array ``[N, H, W, 3]`` (or ``[N, H, W]`` / ``[N, H, W, 1]`` grey);
- nothing: the CIFAR-10 archive in the cache folder, downloaded there (md5-checked) when missing.

Every user mistake raises ``DataError`` with a one-line message the CLI prints before exiting 2.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from wgan.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES: tuple[str, ...] = ("test_batch",)
CIFAR10_META = "batches.meta"
SPLITS: tuple[str, ...] = ("train", "test", "train+test")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})

# Pillow's filter for --resize: antialiased (its support widens when shrinking), no ringing halos.
RESIZE_FILTER = Image.Resampling.BICUBIC
_DATA_HINT = "pass --data with a CIFAR-10 archive or folder, an image folder, or an .npz"


class DataError(UserError):
    """A problem with the training data."""


def default_cache_dir() -> Path:
    """Where the CIFAR-10 archive is looked for and downloaded to: ``$WGAN_DATA_DIR`` or ``~/.cache/wgan``."""
    env = os.environ.get("WGAN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wgan"


def load_images(
    source: str | os.PathLike | None,
    *,
    data_class: str | int = "horse",
    split: str = "train+test",
    image_size: int = 32,
    channels: int = 3,
    resize: bool = False,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> torch.Tensor:
    """Read a whole data set as float32 ``[N, C, H, W]`` in [-1, 1] on the CPU.

    ``data_class`` and ``split`` apply to CIFAR-10 sources only. Images whose size differs from
    ``image_size`` are refused unless ``resize`` (non-square ones are centre-cropped first so
    they are not distorted). RGB sources become grey with ITU-R 601 luma when ``channels == 1``.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise DataError(f"image channels must be 1 (grey) or 3 (RGB), got {channels!r}")

    if source is None:
        pixels = _read_cifar10(_cached_or_downloaded(cache_dir, download, url, md5), data_class, split)
        return _finish(pixels, image_size, channels, resize, "CIFAR-10")

    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_dir():
        cifar = _find_cifar10(path)
        if cifar is not None:
            return _finish(_read_cifar10(cifar, data_class, split), image_size, channels, resize, str(cifar))
        return _to_tensor(_read_image_folder(path, image_size, channels, resize))
    name = path.name.lower()
    if name.endswith(".npz"):
        return _finish(_read_npz(path, channels), image_size, channels, resize, str(path))
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _finish(_read_cifar10(path, data_class, split), image_size, channels, resize, str(path))
    raise DataError(
        f"unsupported data file {path}: expected a CIFAR-10 archive (.tar.gz) or folder, an image folder, or an .npz"
    )


# --- CIFAR-10 --------------------------------------------------------------------------------


def _find_cifar10(folder: Path) -> Path | None:
    """The CIFAR-10 source inside ``folder`` (itself, its batches folder, or its archive), if any."""
    for candidate in (folder, folder / CIFAR10_FOLDER):
        if candidate.is_dir() and any((candidate / b).is_file() for b in (*CIFAR10_TRAIN_BATCHES, "test_batch")):
            return candidate
    if (folder / CIFAR10_ARCHIVE).is_file():
        return folder / CIFAR10_ARCHIVE
    return None


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (numpy arrays, lists, str/bytes, ints).

    A pickle can run any code it names; a data file handed to a trainer should not, so every
    global other than numpy's array and dtype constructors is refused.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never holds")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy 2 renamed numpy.core
        return super().find_class(module, name)


def _unpickle(raw: bytes, origin: str) -> dict[str, object]:
    """One batch as a dict with str keys (Python 2's official pickles have bytes keys)."""
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any failure of a foreign pickle means a bad data file
        raise DataError(f"cannot read CIFAR-10 batch {origin}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 batch {origin} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _split_batches(split: str) -> tuple[str, ...]:
    if split == "train":
        return CIFAR10_TRAIN_BATCHES
    if split == "test":
        return CIFAR10_TEST_BATCHES
    if split == "train+test":
        return CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES
    raise DataError(f"unknown CIFAR-10 split {split!r}: expected one of {', '.join(SPLITS)}")


def _read_cifar10_raw(source: Path, wanted: tuple[str, ...]) -> dict[str, bytes]:
    """The raw bytes of the wanted batch files (and the meta file when present)."""
    names = set(wanted) | {CIFAR10_META}
    found: dict[str, bytes] = {}
    if source.is_dir():
        for name in names:
            if (source / name).is_file():
                found[name] = (source / name).read_bytes()
        missing_where = f"folder {source}"
    else:
        try:
            # Stream mode: one sequential pass through the gzip stream, no backward seeks.
            with tarfile.open(source, mode="r|*") as tar:
                for member in tar:
                    base = PurePosixPath(member.name).name
                    if member.isfile() and base in names and base not in found:
                        handle = tar.extractfile(member)
                        if handle is not None:
                            found[base] = handle.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"cannot read CIFAR-10 archive {source}: {e}") from None
        missing_where = f"archive {source}"
    missing = [n for n in wanted if n not in found]
    if missing:
        raise DataError(f"CIFAR-10 {missing_where} lacks {', '.join(missing)} (not the official python release?)")
    return found


def _class_index(data_class: str | int, label_names: tuple[str, ...]) -> int:
    if isinstance(data_class, bool):
        raise DataError(f"data class must be a class name or index, got {data_class!r}")
    if isinstance(data_class, int) or (isinstance(data_class, str) and data_class.strip().isdigit()):
        index = int(data_class)
        if not 0 <= index < len(label_names):
            raise DataError(f"data class index {index} out of range 0..{len(label_names) - 1}")
        return index
    wanted = str(data_class).strip().lower()
    lowered = [n.lower() for n in label_names]
    if wanted not in lowered:
        raise DataError(f"unknown data class {data_class!r}: expected one of {', '.join(label_names)} or 0..9")
    return lowered.index(wanted)


def _read_cifar10(source: Path, data_class: str | int, split: str) -> np.ndarray:
    """One class of one split as uint8 ``[N, 32, 32, 3]``, batches in the official order."""
    wanted = _split_batches(split)
    raw = _read_cifar10_raw(source, wanted)
    label_names = CIFAR10_CLASSES
    if CIFAR10_META in raw:
        meta = _unpickle(raw.pop(CIFAR10_META), f"{source}/{CIFAR10_META}")
        names = meta.get("label_names")
        if isinstance(names, list | tuple) and names:
            label_names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    index = _class_index(data_class, label_names)

    parts = []
    for name in wanted:
        origin = f"{source}/{name}"
        batch = _unpickle(raw.pop(name), origin)
        data, labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or labels is None:
            raise DataError(f"CIFAR-10 batch {origin} lacks 'data' or 'labels'")
        labels = np.asarray(labels)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
            raise DataError(
                f"CIFAR-10 batch {origin} holds data {data.dtype} {list(data.shape)} with {labels.size} labels, "
                "expected uint8 [N, 3072] with N labels"
            )
        parts.append(data[labels == index].reshape(-1, 3, 32, 32))
    pixels = np.concatenate(parts).transpose(0, 2, 3, 1)
    if len(pixels) == 0:
        raise DataError(f"CIFAR-10 {source} has no images of class {label_names[index]!r} in split {split!r}")
    return pixels


# --- cache and download ----------------------------------------------------------------------


def _cached_or_downloaded(cache_dir: str | os.PathLike | None, download: bool, url: str, md5: str | None) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache.is_dir():
        found = _find_cifar10(cache)
        if found is not None:
            return found
    if not download:
        raise DataError(f"no CIFAR-10 in the cache folder {cache} and downloading is off; {_DATA_HINT}")
    return download_cifar10(cache, url=url, md5=md5)


def download_cifar10(
    cache_dir: str | os.PathLike,
    *,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the CIFAR-10 archive into ``cache_dir`` and return its path.

    The file only appears under its final name once complete and md5-checked (temporary file in
    the same folder, then ``os.replace``), so an interrupted or bad download never poses as a
    cached archive.
    """
    cache = Path(cache_dir).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{CIFAR10_ARCHIVE}.", suffix=".part", dir=cache)
    except OSError as e:
        raise DataError(
            f"cannot write to the cache folder {cache} ({e.strerror or e}); set WGAN_DATA_DIR or {_DATA_HINT}"
        ) from None
    tmp = Path(tmp_name)
    target = cache / CIFAR10_ARCHIVE
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc="downloading CIFAR-10",
                        disable=not progress,
                    ) as bar:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
                raise DataError(f"could not download CIFAR-10 from {url} ({reason}); {_DATA_HINT}") from None
        if md5 and digest.hexdigest() != md5.lower():
            raise DataError(
                f"download from {url} has md5 {digest.hexdigest()}, expected {md5.lower()}; "
                f"the file was removed, try again or {_DATA_HINT}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --- image folders ---------------------------------------------------------------------------


def _image_paths(root: Path) -> list[Path]:
    """Image files under ``root`` in a platform-independent sorted order; hidden files skipped."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
                paths.append(Path(dirpath, f))
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def _center_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def _pil_mode(channels: int) -> str:
    return "RGB" if channels == 3 else "L"


def _square_pixels(img: Image.Image, image_size: int, channels: int) -> np.ndarray:
    """``img`` as uint8 [size, size, channels]: centre-cropped to a square and resized when its
    size differs (the one resize rule of every source)."""
    if img.size != (image_size, image_size):
        img = _center_square(img).resize((image_size, image_size), RESIZE_FILTER)
    return np.asarray(img).reshape(image_size, image_size, channels)


def _read_image_folder(root: Path, image_size: int, channels: int, resize: bool) -> np.ndarray:
    paths = _image_paths(root)
    if not paths:
        raise DataError(
            f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively)"
        )
    mode = _pil_mode(channels)
    out = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                size = img.size
                if size != (image_size, image_size) and not resize:
                    bad_size = size
                else:
                    bad_size = None
                    out[i] = _square_pixels(img.convert(mode), image_size, channels)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        if bad_size is not None:
            raise DataError(
                f"image {path} is {bad_size[0]}x{bad_size[1]}, expected {image_size}x{image_size}; "
                "pass --resize to resize images"
            )
    return out


# --- npz -------------------------------------------------------------------------------------


def _read_npz(path: Path, channels: int) -> np.ndarray:
    """The ``images`` array (or the only array) as uint8 ``[N, H, W, C]``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if not keys:
                raise DataError(f"npz {path} holds no arrays; expected a uint8 array [N, H, W, 3]")
            if "images" in keys:
                key = "images"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataError(f"npz {path} holds several arrays ({', '.join(keys)}) and none named 'images'")
            arr = npz[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read npz {path}: {e}") from None
    where = f"npz {path} array {key!r}"
    if arr.dtype != np.uint8:
        raise DataError(f"{where} has dtype {arr.dtype}, expected uint8 [N, H, W, 3] (values 0..255)")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        hint = " (channels first? expected channels last)" if arr.ndim == 4 and arr.shape[1] in (1, 3) else ""
        raise DataError(f"{where} has shape {list(arr.shape)}, expected [N, H, W, 3] or grey [N, H, W]{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{where} is empty (shape {list(arr.shape)})")
    return arr


# --- shared ----------------------------------------------------------------------------------


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma exactly as Pillow's ``convert('L')`` computes it, so every source agrees."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _finish(pixels: np.ndarray, image_size: int, channels: int, resize: bool, origin: str) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> the requested channels and size, as the float tensor."""
    if pixels.shape[-1] != channels:
        pixels = _luma(pixels) if channels == 1 else np.repeat(pixels, 3, axis=-1)
    h, w = pixels.shape[1:3]
    if (h, w) != (image_size, image_size):
        if not resize:
            raise DataError(
                f"images of {origin} are {w}x{h}, expected {image_size}x{image_size}; pass --resize to resize them"
            )
        mode = _pil_mode(channels)
        pixels = np.stack(
            [
                _square_pixels(Image.fromarray(px.reshape(h, w) if channels == 1 else px, mode), image_size, channels)
                for px in pixels
            ]
        )
    return _to_tensor(pixels)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]``, ``v / 127.5 - 1`` (0 -> -1, 255 -> 1 exactly)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    return x.to(torch.float32).div_(127.5).sub_(1.0)
