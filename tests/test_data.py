"""Every data source on tiny files the tests write themselves, and every bad input a user can give.

The CIFAR-10 batches are written in the official layout: once as Python 2's cPickle wrote the
real release (protocol 2, bytes keys, ``numpy.core.multiarray._reconstruct``), once by Python 3
with bytes keys, once with str keys. Downloads go to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wgan.data import (
    CIFAR10_ARCHIVE,
    CIFAR10_CLASSES,
    DataError,
    default_cache_dir,
    download_cifar10,
    load_images,
)

HORSE = 7
SHARED_HORSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-horses"


# --- helpers ---------------------------------------------------------------------------------


def _expected(pixels_nchw_or_nhwc: np.ndarray, nhwc: bool = False) -> torch.Tensor:
    """The loader's contract written independently: uint8 / 127.5 - 1, channels first."""
    t = torch.from_numpy(np.ascontiguousarray(pixels_nchw_or_nhwc))
    if nhwc:
        t = t.permute(0, 3, 1, 2)
    return t.to(torch.float32) / 127.5 - 1


def _py2_pickle(obj) -> bytes:  # noqa: C901  (one branch per pickle opcode the CIFAR-10 files use)
    """A protocol-2 stream as Python 2's cPickle wrote the official CIFAR-10 batches.

    Python 2 ``str`` is SHORT_BINSTRING/BINSTRING (bytes on Python 3 with encoding='bytes'),
    and numpy arrays are rebuilt by ``numpy.core.multiarray._reconstruct`` + BUILD of
    ``(1, shape, dtype, is_fortran, raw bytes)``: the format the real archive holds.
    """
    out = bytearray(b"\x80\x02")

    def py2_str(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def integer(n: int) -> None:
        out.extend(b"J" + struct.pack("<i", n))

    def emit(x) -> None:
        if isinstance(x, dict):
            out.extend(b"}(")
            for k, v in x.items():
                py2_str(k.encode())
                emit(v)
            out.extend(b"u")
        elif isinstance(x, list):
            out.extend(b"](")
            for v in x:
                emit(v)
            out.extend(b"e")
        elif isinstance(x, str):
            py2_str(x.encode())
        elif isinstance(x, int):
            integer(x)
        elif isinstance(x, np.ndarray):
            assert x.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            integer(0)
            out.extend(b"\x85")
            py2_str(b"b")
            out.extend(b"\x87R(")
            integer(1)
            out.extend(b"(")
            for d in x.shape:
                integer(d)
            out.extend(b"tcnumpy\ndtype\n")
            py2_str(b"u1")
            integer(0)
            integer(1)
            out.extend(b"\x87R(")
            integer(3)
            py2_str(b"|")
            out.extend(b"NNN")
            integer(-1)
            integer(-1)
            integer(0)
            out.extend(b"tb\x89")
            py2_str(x.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(x))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def _dump(obj: dict, keys: str) -> bytes:
    if keys == "py2":
        return _py2_pickle(obj)
    if keys == "bytes":
        return pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2)
    return pickle.dumps(obj)


BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def _write_cifar(folder: Path, keys: str = "str", n: int = 11, seed: int = 0) -> dict[str, tuple]:
    """The official layout with ``n`` random images per batch, labels mixed (every batch has horses)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in BATCHES:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        labels[0], labels[3], labels[5] = HORSE, 2, HORSE
        obj = {
            "batch_label": f"{name} of 6",
            "labels": labels,
            "data": data,
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(_dump(obj, keys))
        batches[name] = (data, np.array(labels))
    meta = {"num_cases_per_batch": n, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_dump(meta, keys))
    return batches


def _cifar_expected(batches: dict, cls: int, names=BATCHES) -> torch.Tensor:
    parts = [batches[b][0][batches[b][1] == cls] for b in names]
    return _expected(np.concatenate(parts).reshape(-1, 3, 32, 32))


def _make_tarball(batches_folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(batches_folder, arcname="cifar-10-batches-py")
    return target


# --- CIFAR-10 --------------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["py2", "bytes", "str"])
def test_cifar_folder_exact_values(tmp_path, keys):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", keys=keys, seed=1)
    want = _cifar_expected(batches, HORSE)
    for source in (tmp_path / "cifar-10-batches-py", tmp_path, str(tmp_path)):
        x = load_images(source)
        assert x.dtype == torch.float32 and x.device.type == "cpu"
        assert x.shape == want.shape and x.shape[1:] == (3, 32, 32)
        assert torch.equal(x, want)
        assert x.min() >= -1 and x.max() <= 1


def test_cifar_extremes_map_to_exactly_minus_one_and_one(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, keys="py2")
    data, labels = batches["test_batch"]
    data[0, :1536], data[0, 1536:] = 0, 255  # first image is a horse (label forced to 7)
    (folder / "test_batch").write_bytes(_py2_pickle({"labels": labels.tolist(), "data": data}))
    x = load_images(folder, split="test")
    assert x[0].flatten()[:1536].eq(-1).all() and x[0].flatten()[1536:].eq(1).all()


def test_cifar_tarball_read_without_extracting(tmp_path):
    batches = _write_cifar(tmp_path / "src" / "cifar-10-batches-py", keys="py2", seed=2)
    archive = _make_tarball(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    x = load_images(archive)
    assert torch.equal(x, _cifar_expected(batches, HORSE))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    # A folder holding only the archive (a cache folder) is a CIFAR-10 source too.
    only = tmp_path / "cache"
    only.mkdir()
    os.replace(archive, only / CIFAR10_ARCHIVE)
    assert torch.equal(load_images(only, split="test"), _cifar_expected(batches, HORSE, ["test_batch"]))


def test_cifar_class_by_name_or_index_and_splits(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", seed=3)
    folder = tmp_path / "cifar-10-batches-py"
    horses = load_images(folder)
    for spec in ("horse", "HoRsE", " horse ", 7, "7"):
        assert torch.equal(load_images(folder, data_class=spec), horses)
    birds = load_images(folder, data_class="bird")
    assert torch.equal(birds, _cifar_expected(batches, 2))
    assert torch.equal(load_images(folder, data_class=2), birds)
    assert not torch.equal(birds[: len(horses)], horses[: len(birds)])

    train = load_images(folder, split="train")
    test = load_images(folder, split="test")
    assert torch.equal(train, _cifar_expected(batches, HORSE, BATCHES[:5]))
    assert torch.equal(test, _cifar_expected(batches, HORSE, BATCHES[5:]))
    assert torch.equal(torch.cat([train, test]), horses)


def test_cifar_label_names_come_from_meta(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, keys="bytes")
    renamed = [f"c{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in renamed]}, protocol=2))
    assert torch.equal(load_images(folder, data_class="C7"), _cifar_expected(batches, HORSE))
    with pytest.raises(DataError, match="c0, c1"):
        load_images(folder, data_class="horse")


def test_cifar_grey_and_resize(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(folder, seed=4)
    rgb = np.concatenate([batches[b][0][batches[b][1] == HORSE] for b in BATCHES]).reshape(-1, 3, 32, 32)
    grey = load_images(folder, channels=1)
    pil_grey = np.stack([np.array(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in rgb])
    assert torch.equal(grey, _expected(pil_grey[:, None]))

    with pytest.raises(DataError, match=r"32x32, expected 16x16; pass --resize"):
        load_images(folder, image_size=16)
    small = load_images(folder, image_size=16, resize=True)
    assert small.shape == (len(rgb), 3, 16, 16)
    assert small.min() >= -1 and small.max() <= 1
    # Resizing keeps the image: each small image is closest to its own source's 2x2 block mean.
    pooled = torch.nn.functional.avg_pool2d(_expected(rgb), 2)
    dist = torch.cdist(small.flatten(1), pooled.flatten(1))
    assert torch.equal(dist.argmin(dim=1), torch.arange(len(rgb)))


def test_cifar_bad_inputs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    with pytest.raises(DataError, match="unknown data class 'zebra'.*airplane, automobile.*truck"):
        load_images(folder, data_class="zebra")
    with pytest.raises(DataError, match="index 10 out of range"):
        load_images(folder, data_class=10)
    with pytest.raises(DataError, match="unknown CIFAR-10 split 'val'"):
        load_images(folder, split="val")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        load_images(folder)
    assert load_images(folder, split="test").shape[0] >= 2  # the test split needs no train batch
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [7] * 4}))
    with pytest.raises(DataError, match=r"test_batch holds data uint8 \[4, 100\]"):
        load_images(folder, split="test")
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="cannot read CIFAR-10 batch .*test_batch"):
        load_images(folder, split="test")


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(sentinel),))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="posix.mkdir|nt.mkdir|os.mkdir"):
        load_images(folder, split="test")
    assert not sentinel.exists()


def test_cifar_bad_archives(tmp_path):
    garbage = tmp_path / "cifar-10-python.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(300))
    with pytest.raises(DataError, match="cannot read CIFAR-10 archive"):
        load_images(garbage)
    other = tmp_path / "other.tar.gz"
    (tmp_path / "x.txt").write_text("hi")
    with tarfile.open(other, "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    with pytest.raises(DataError, match="lacks data_batch_1, .*test_batch"):
        load_images(other)
    # Truncated: a real archive cut in half.
    _write_cifar(tmp_path / "src" / "cifar-10-batches-py", n=50)
    full = _make_tarball(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cut.tar.gz"):
        load_images(tmp_path / "cut.tar.gz")


# --- image folders ---------------------------------------------------------------------------


def _gradient(seed: int, size: int = 32) -> np.ndarray:
    """A smooth image, so JPEG's loss stays small and a tolerance can be stated."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    base = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-30, 30, size=(2, 3))
    return np.clip(base + yy[..., None] * slope[0] + xx[..., None] * slope[1], 0, 255).astype(np.uint8)


def test_image_folder_png_exact_jpeg_close_sorted_recursive(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(5)
    noise = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(3)]
    files = {  # relative path -> pixels; sorted order: a/b/1.png, a/c.jpg, b.PNG, z/deep/er/2.jpeg
        "z/deep/er/2.jpeg": _gradient(1),
        "a/b/1.png": noise[0],
        "b.PNG": noise[1],
        "a/c.jpg": _gradient(2),
    }
    for rel, px in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(root / rel, **({"quality": 95} if rel.endswith(("jpg", "jpeg")) else {}))
    (root / "notes.txt").write_text("not an image")
    (root / "._b.png").write_bytes(b"AppleDouble junk")  # hidden: skipped, not a corrupt image
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "t.png").write_bytes(b"junk")
    grey_png = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    Image.fromarray(grey_png, "L").save(root / "a" / "b" / "0_grey.png")  # grey file, RGB load

    x = load_images(root)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    order = ["a/b/0_grey.png", "a/b/1.png", "a/c.jpg", "b.PNG", "z/deep/er/2.jpeg"]
    assert torch.equal(x[0], _expected(np.repeat(grey_png[None, ..., None], 3, -1), nhwc=True)[0])
    assert torch.equal(x[1], _expected(files[order[1]][None], nhwc=True)[0])
    assert torch.equal(x[3], _expected(files[order[3]][None], nhwc=True)[0])
    for i in (2, 4):  # JPEG: lossy, within 6/255 of the smooth source per pixel on average, 24/255 at most
        err = (x[i] - _expected(files[order[i]][None], nhwc=True)[0]).abs() * 127.5
        assert err.mean() < 6 and err.max() < 24, (order[i], err.mean().item(), err.max().item())

    grey = load_images(root, channels=1)
    assert grey.shape == (5, 1, 32, 32)
    assert torch.equal(grey[0, 0], _expected(grey_png[None])[0])
    assert torch.equal(grey[1, 0], _expected(np.array(Image.fromarray(noise[0]).convert("L"))[None])[0])


def test_image_folder_size_mismatch_and_resize(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(root / "a.png")
    Image.fromarray(np.full((40, 40, 3), (200, 10, 30), np.uint8)).save(root / "b.png")
    wide = np.zeros((32, 48, 3), np.uint8)  # 48 wide, 32 high: 8-px bands cropped away at each side
    wide[:, 8:40] = (5, 150, 250)
    Image.fromarray(wide).save(root / "c.png")
    Image.fromarray(np.full((20, 20, 3), 1, np.uint8)).save(root / "d.png")

    with pytest.raises(DataError, match=r"image .*b\.png is 40x40, expected 32x32; pass --resize"):
        load_images(root)
    x = load_images(root, resize=True)
    assert x.shape == (4, 3, 32, 32)
    assert torch.equal(x[0], torch.full((3, 32, 32), 9 / 127.5 - 1))
    want_b = _expected(np.array((200, 10, 30), np.uint8).reshape(1, 1, 1, 3), nhwc=True).reshape(3, 1, 1)
    assert torch.equal(x[1], want_b.expand(3, 32, 32))  # a flat colour stays exactly that colour
    want_c = _expected(np.array((5, 150, 250), np.uint8).reshape(1, 1, 1, 3), nhwc=True).reshape(3, 1, 1)
    assert torch.equal(x[2], want_c.expand(3, 32, 32))  # centre-cropped, not squashed
    assert x.shape[0] == 4 and load_images(root, image_size=16, resize=True).shape == (4, 3, 16, 16)


def test_image_folder_corrupt_and_empty(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_images(root)
    (root / "readme.md").write_text("# nothing")
    with pytest.raises(DataError, match="holds no images"):
        load_images(root)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "a.png")
    (root / "b.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*b\.jpg"):
        load_images(root)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "b.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated JPEG
    with pytest.raises(DataError, match=r"cannot read image .*b\.jpg"):
        load_images(root)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(tmp_path / "nope")
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DataError, match=r"unsupported data file .*data\.csv"):
        load_images(tmp_path / "data.csv")
    with pytest.raises(DataError, match="channels"):
        load_images(tmp_path, channels=4)
    with pytest.raises(DataError, match="image size"):
        load_images(tmp_path, image_size=0)


# --- npz -------------------------------------------------------------------------------------


def test_npz_sources(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "named.npz", images=images, labels=np.arange(7))
    assert torch.equal(load_images(tmp_path / "named.npz"), _expected(images, nhwc=True))
    np.savez_compressed(tmp_path / "only.npz", pics=images)
    assert torch.equal(load_images(tmp_path / "only.npz"), _expected(images, nhwc=True))

    grey = rng.integers(0, 256, size=(5, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", images=grey)
    x = load_images(tmp_path / "grey.npz", channels=1)
    assert x.shape == (5, 1, 32, 32) and torch.equal(x, _expected(grey[:, None]))
    assert torch.equal(load_images(tmp_path / "grey.npz"), _expected(grey[:, None]).expand(5, 3, 32, 32))

    big = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", images=big)
    with pytest.raises(DataError, match=r"64x64, expected 32x32; pass --resize"):
        load_images(tmp_path / "big.npz")
    assert load_images(tmp_path / "big.npz", resize=True).shape == (3, 3, 32, 32)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((2, 32, 32, 3), np.float32)}, "dtype float32, expected uint8"),
        ({"images": np.zeros((2, 3, 32, 32), np.uint8)}, r"shape \[2, 3, 32, 32\].*channels first"),
        ({"images": np.zeros((32, 32), np.uint8)}, r"shape \[32, 32\]"),
        ({"images": np.zeros((0, 32, 32, 3), np.uint8)}, "is empty"),
        ({"a": np.zeros((2, 32, 32, 3), np.uint8), "b": np.zeros(2)}, "several arrays \\(a, b\\)"),
        ({}, "holds no arrays"),
        ({"images": np.array([{"x": 1}], dtype=object)}, "cannot read npz"),
    ],
)
def test_npz_bad(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match):
        load_images(path)


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match=r"cannot read npz .*x\.npz"):
        load_images(tmp_path / "x.npz")


# --- cache and download ----------------------------------------------------------------------


class _Server:
    """http.server on 127.0.0.1 in a thread, serving a folder and counting GET requests."""

    def __init__(self, folder: Path):
        self.gets = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 -- http.server's name
                server.gets += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def served_archive(tmp_path):
    batches = _write_cifar(tmp_path / "src" / "cifar-10-batches-py", keys="py2", seed=7)
    (tmp_path / "www").mkdir()
    archive = _make_tarball(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "www" / "c10.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    return batches, archive, md5


def test_download_then_cache_hit(tmp_path, served_archive):
    batches, archive, md5 = served_archive
    cache = tmp_path / "cache" / "nested"
    with _Server(archive.parent) as server:
        x = load_images(None, cache_dir=cache, url=server.url("c10.tar.gz"), md5=md5.upper())
        assert server.gets == 1
    assert torch.equal(x, _cifar_expected(batches, HORSE))
    assert _leftovers(cache) == [CIFAR10_ARCHIVE]  # no temporary file left
    assert (cache / CIFAR10_ARCHIVE).read_bytes() == archive.read_bytes()
    # Server gone: the cached archive is used, with or without downloading allowed.
    assert torch.equal(load_images(None, cache_dir=cache, download=False), x)
    assert torch.equal(
        load_images(None, cache_dir=cache, url="http://127.0.0.1:9/x.tar.gz", data_class="bird"),
        _cifar_expected(batches, 2),
    )


def test_cache_prefers_extracted_folder(tmp_path, monkeypatch):
    batches = _write_cifar(tmp_path / "cache" / "cifar-10-batches-py", keys="bytes", seed=8)
    monkeypatch.setenv("WGAN_DATA_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert torch.equal(load_images(None, download=False, split="test"), _cifar_expected(batches, HORSE, BATCHES[5:]))


def test_default_cache_dir_without_env(monkeypatch):
    monkeypatch.delenv("WGAN_DATA_DIR", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "wgan"


def test_download_md5_mismatch_removes_file(tmp_path, served_archive):
    _, archive, _ = served_archive
    cache = tmp_path / "cache"
    with _Server(archive.parent) as server:
        with pytest.raises(DataError, match="md5 [0-9a-f]{32}, expected 0{32}.*removed.*--data"):
            download_cifar10(cache, url=server.url("c10.tar.gz"), md5="0" * 32, progress=False)
        assert server.gets == 1
        assert _leftovers(cache) == []
        with pytest.raises(DataError, match="HTTP Error 404.*--data"):
            load_images(None, cache_dir=cache, url=server.url("missing.tar.gz"))
    assert _leftovers(cache) == []


def test_download_unreachable_and_download_off(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"could not download CIFAR-10 from http://127\.0\.0\.1:9/x\.tar\.gz.*--data"):
        load_images(None, cache_dir=cache, url="http://127.0.0.1:9/x.tar.gz")
    assert _leftovers(cache) == []
    with pytest.raises(DataError, match="downloading is off; pass --data"):
        load_images(None, cache_dir=tmp_path / "empty", download=False)
    assert not (tmp_path / "empty").exists()


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match="cannot write to the cache folder"):
        download_cifar10(blocker / "cache", url="http://127.0.0.1:9/x.tar.gz", progress=False)


# --- the shared horses (optional: only where the team's data folder exists) ------------------


@pytest.mark.skipif(not SHARED_HORSES.is_dir(), reason=f"{SHARED_HORSES} not present on this machine")
def test_shared_horses_folder():
    x = load_images(SHARED_HORSES)
    assert x.shape == (6000, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
