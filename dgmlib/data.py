"""Data for the course: Fashion-MNIST (found, checked, cached), binarization, small data sets.

Fashion-MNIST is looked up in this order, file by file:

1. the folder named by ``$DGMLIB_DATA`` (files directly in it or in ``fashion-mnist/``),
2. the repository's ``data/fashion-mnist/`` folder,
3. Debian's package path ``/usr/share/datasets/fashion-mnist/`` (``apt-get install
   dataset-fashion-mnist``),
4. else it is downloaded from the official source into ``$DGMLIB_DATA`` or ``data/fashion-mnist/``.

Every file is checked against the SHA-256 of its *decompressed* IDX bytes (re-compressing a .gz
changes its own hash but not its content), downloads are written to a temporary file and renamed
only once verified, and a corrupted file raises :class:`DataIntegrityError` naming the file, the
expected and actual hashes, and the fix.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dgmlib.io import atomic_path, sha256_bytes
from dgmlib.validation import check_choice, check_int

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DataFile:
    """One IDX file: its (gzipped) name, the SHA-256 and byte size of its decompressed content."""

    name: str
    sha256: str
    size: int


FASHION_MNIST = {
    "train": (
        DataFile(
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47_040_016,
        ),
        DataFile(
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60_008,
        ),
    ),
    "test": (
        DataFile(
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7_840_016,
        ),
        DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10_008,
        ),
    ),
}


class DataIntegrityError(RuntimeError):
    """A data file exists but its content is not what the course expects."""


class DataNotFoundError(FileNotFoundError):
    """A data file is in none of the searched places and could not be downloaded."""


# --------------------------------------------------------------------------------------------
# Finding, checking and downloading files
# --------------------------------------------------------------------------------------------


def _read_decompressed(path: Path) -> bytes:
    """The content of ``path``: gunzipped when it is a gzip file, raw otherwise."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:  # truncated or damaged gzip stream
            raise DataIntegrityError(
                f"{path}: not a valid gzip file ({e}); delete it and run again to fetch a fresh "
                "copy, or reinstall it (apt-get install --reinstall dataset-fashion-mnist)."
            ) from e
    return raw


def verified_bytes(path: str | os.PathLike, expected: DataFile) -> bytes:
    """Decompressed bytes of ``path`` after checking their SHA-256; raise naming both hashes."""
    path = Path(path)
    content = _read_decompressed(path)
    actual = sha256_bytes(content)
    if actual != expected.sha256:
        raise DataIntegrityError(
            f"{path}: SHA-256 of the decompressed content is {actual}, expected "
            f"{expected.sha256} ({len(content)} bytes, expected {expected.size}). The file is "
            "truncated or altered: delete it and run again to fetch a fresh copy, or reinstall it "
            "(apt-get install --reinstall dataset-fashion-mnist)."
        )
    return content


def search_dirs() -> list[Path]:
    """The folders searched for data files, in order."""
    dirs: list[Path] = []
    if env := os.environ.get("DGMLIB_DATA"):
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs += [REPO_DATA_DIR / "fashion-mnist", REPO_DATA_DIR, DEBIAN_DIR]
    return dirs


def download_dir() -> Path:
    """Where a download goes: ``$DGMLIB_DATA`` if set, else the repository's data folder."""
    if env := os.environ.get("DGMLIB_DATA"):
        return Path(env)
    return REPO_DATA_DIR / "fashion-mnist"


def find_file(expected: DataFile) -> Path | None:
    """The first existing copy of ``expected.name`` (or its un-gzipped name) in ``search_dirs``."""
    names = [expected.name, expected.name.removesuffix(".gz")]
    for d in search_dirs():
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def download(
    expected: DataFile,
    dest_dir: str | os.PathLike,
    urls: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``expected`` from the first base URL that works into ``dest_dir``, atomically.

    ``urls`` defaults to ``$DGMLIB_DATA_URL`` (one base URL) if set, else the official mirrors.

    The file is written to a temporary file in ``dest_dir``, verified, then renamed; on any
    failure the temporary file is removed, so nothing half-written is ever left behind.
    """
    target = Path(dest_dir) / expected.name
    if urls is None:
        env = os.environ.get("DGMLIB_DATA_URL")
        urls = (env,) if env else FASHION_MNIST_URLS
    errors = []
    for base in urls:
        url = base.rstrip("/") + "/" + expected.name
        try:
            with atomic_path(target) as tmp:  # renamed into place only if verified
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out)
                verified_bytes(tmp, expected)
            return target
        except (OSError, DataIntegrityError) as e:
            errors.append(f"{url}: {e}")
    raise DataNotFoundError(
        f"could not download {expected.name}:\n  " + "\n  ".join(errors) + "\nFix: install "
        "Debian's package (apt-get install dataset-fashion-mnist) or put the four Fashion-MNIST "
        "files in a folder and set DGMLIB_DATA to it."
    )


def fetch(expected: DataFile, allow_download: bool | None = None) -> bytes:
    """Verified decompressed bytes of ``expected``: found locally, else downloaded if allowed.

    ``allow_download=None`` reads ``$DGMLIB_OFFLINE`` (set to 1 to forbid downloads).
    """
    if allow_download is None:
        allow_download = os.environ.get("DGMLIB_OFFLINE", "0") in ("", "0")
    path = find_file(expected)
    if path is None:
        if not allow_download:
            raise DataNotFoundError(
                f"{expected.name} is in none of: {', '.join(str(d) for d in search_dirs())}, and "
                "downloads are off (DGMLIB_OFFLINE). Fix: apt-get install dataset-fashion-mnist, "
                "or set DGMLIB_DATA to a folder holding the four Fashion-MNIST files."
            )
        path = download(expected, download_dir())
    return verified_bytes(path, expected)


def parse_idx(content: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (unsigned-byte data) into a uint8 array of the shape in the header."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != 0x08:
        raise DataIntegrityError(f"{name}: not an unsigned-byte IDX file (bad magic number)")
    ndim = content[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(content) != header + math.prod(shape):
        raise DataIntegrityError(
            f"{name}: IDX header says shape {shape} ({header + math.prod(shape)} bytes) but the "
            f"content has {len(content)} bytes"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=2)
def _load_fashion_mnist_cached(split: str) -> tuple[np.ndarray, np.ndarray]:
    img_file, lbl_file = FASHION_MNIST[split]
    images = parse_idx(fetch(img_file), img_file.name)
    labels = parse_idx(fetch(lbl_file), lbl_file.name)
    return images, labels


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as (uint8 [N,28,28], int64 [N])."""
    check_choice(split, "split", "load_fashion_mnist", tuple(FASHION_MNIST))
    images, labels = _load_fashion_mnist_cached(split)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------------------------
# Binarization and scaling
# --------------------------------------------------------------------------------------------


def to_unit_interval(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in {0..255} -> float32 in [0, 1], same shape."""
    if images.dtype != torch.uint8:
        raise ValueError(f"to_unit_interval: images must be uint8, got {images.dtype}")
    return images.to(torch.float32) / 255.0


def binarize_dynamic(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A fresh Bernoulli sample per call: pixel ~ Bernoulli(intensity); float32 {0,1}, same shape.

    Call it on every mini-batch (dynamic binarization, as in Burda et al. 2016).
    """
    p = to_unit_interval(images) if images.dtype == torch.uint8 else images
    if p.min() < 0 or p.max() > 1:
        raise ValueError("binarize_dynamic: intensities must lie in [0, 1] (or be uint8)")
    return torch.bernoulli(p, generator=generator)


def binarize_fixed(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One Bernoulli sample drawn once with ``seed``: the same binary data set on every call."""
    return binarize_dynamic(images, torch.Generator().manual_seed(seed))


def binarize_threshold(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Deterministic binarization: 1 where intensity > ``threshold``; float32 {0,1}."""
    p = to_unit_interval(images) if images.dtype == torch.uint8 else images
    return (p > threshold).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Small data sets
# --------------------------------------------------------------------------------------------


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): float32 [N,8,8] in [0,1]
    and int64 labels [N]."""
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)
    return images, torch.from_numpy(d.target.astype(np.int64))


TOY_SETS = ("ring", "grid", "moons", "swiss_roll")


def toy_2d(
    name: str, n: int, seed: int = 0, noise: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic 2-D toy set: points float32 [n,2] and int64 labels [n] (mode or class).

    ``ring``: 8 Gaussians on a circle of radius 2 (std 0.05); ``grid``: 5x5 Gaussians on
    {-2,-1,0,1,2}^2 (std 0.05); ``moons``: two interleaved half circles; ``swiss_roll``: a 2-D
    spiral (label: which quarter of the roll). ``noise`` overrides the default spread.
    """
    check_choice(name, "name", "toy_2d", TOY_SETS)
    check_int(n, "n", "toy_2d")
    g = torch.Generator().manual_seed(seed)
    if name == "ring":
        labels = torch.randint(0, 8, (n,), generator=g)
        angle = labels.double() * (2 * math.pi / 8)
        centres = 2.0 * torch.stack([angle.cos(), angle.sin()], 1)
        x = centres + (0.05 if noise is None else noise) * torch.randn(n, 2, generator=g).double()
    elif name == "grid":
        labels = torch.randint(0, 25, (n,), generator=g)
        centres = torch.stack([labels // 5 - 2, labels % 5 - 2], 1).double()
        x = centres + (0.05 if noise is None else noise) * torch.randn(n, 2, generator=g).double()
    elif name == "moons":
        labels = torch.randint(0, 2, (n,), generator=g)
        t = torch.rand(n, generator=g).double() * math.pi
        upper = torch.stack([t.cos(), t.sin()], 1)
        lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
        x = torch.where(labels[:, None] == 0, upper, lower)
        x = x + (0.1 if noise is None else noise) * torch.randn(n, 2, generator=g).double()
    else:  # swiss_roll
        u = torch.rand(n, generator=g).double()
        t = 1.5 * math.pi * (1 + 2 * u)
        x = torch.stack([t * t.cos(), t * t.sin()], 1) / 5.0
        x = x + (0.1 if noise is None else noise) * torch.randn(n, 2, generator=g).double()
        labels = (u * 4).long().clamp(max=3)
    return x.to(torch.float32), labels.to(torch.int64)


def bars_and_stripes(
    n: int, size: int = 8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` binary "bars and stripes" images, float32 ``[n, 1, size, size]`` in {0, 1}.

    Each image picks an orientation with probability 1/2 (horizontal: every row is constant;
    vertical: every column is constant) and switches each of its ``size`` lines on independently
    with probability 1/2. Its exact log-probability is :func:`bars_and_stripes_log_prob`.
    """
    check_int(n, "n", "bars_and_stripes")
    check_int(size, "size", "bars_and_stripes", low=2)
    horizontal = torch.rand(n, generator=generator) < 0.5
    lines = (torch.rand(n, size, generator=generator) < 0.5).float()
    rows = lines[:, :, None].expand(n, size, size)  # line i fills row i
    cols = lines[:, None, :].expand(n, size, size)  # line i fills column i
    return torch.where(horizontal[:, None, None], rows, cols).unsqueeze(1).contiguous()


def bars_and_stripes_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(x)`` under :func:`bars_and_stripes`, nats, float64 ``[n]``.

    ``x``: binary ``[n, 1, S, S]`` or ``[n, S, S]``. A pattern that is horizontal only or
    vertical only has probability ``2^-(S+1)``; the all-off and all-on images are both, with
    probability ``2^-S``; anything else has probability 0 (``-inf``).
    """
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(
            f"bars_and_stripes_log_prob: x must have shape [n, 1, S, S] or [n, S, S], "
            f"got {tuple(x.shape)}"
        )
    size = x.shape[-1]
    horizontal = (x == x[:, :, :1]).flatten(1).all(1)
    vertical = (x == x[:, :1, :]).flatten(1).all(1)
    p = (horizontal.double() + vertical.double()) * 2.0 ** -(size + 1)
    return p.log()


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def batches(
    *tensors: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Iterate over aligned mini-batches of in-memory tensors (first dim), one index per batch.

    No per-item transforms and no worker processes: the whole data set lives in memory and a batch
    is a single indexing operation, which is far faster than a DataLoader for small images.
    """
    if not tensors:
        raise ValueError("batches: give at least one tensor")
    check_int(batch_size, "batch_size", "batches")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors):
        if t.shape[0] != n:
            raise ValueError(
                f"batches: tensor {i} has {t.shape[0]} rows but tensor 0 has {n}; "
                "all tensors must share their first dimension"
            )
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield tuple(t[start : start + batch_size] for t in tensors)
        else:
            idx = order[start : start + batch_size]
            yield tuple(t[idx] for t in tensors)
