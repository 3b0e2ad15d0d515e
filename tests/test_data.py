"""dgmlib.data: Fashion-MNIST integrity, the download path, binarization, toy sets, batching."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import math
import threading
from functools import partial

import numpy as np
import pytest
import torch

from dgmlib import data
from dgmlib.data import DataFile, DataIntegrityError, DataNotFoundError


def make_idx(shape: tuple[int, ...], seed: int = 0) -> bytes:
    """A small unsigned-byte IDX file of ``shape`` (random content)."""
    rng = np.random.default_rng(seed)
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    return header + rng.integers(0, 256, size=shape, dtype=np.uint8).tobytes()


def data_file(name: str, content: bytes) -> DataFile:
    return DataFile(name, hashlib.sha256(content).hexdigest(), len(content))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Search only an empty DGMLIB_DATA folder (no repository data/, no Debian path)."""
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("DGMLIB_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("DGMLIB_DATA_URL", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving the folder it returns (stopped after the test)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


# -- the real data set -------------------------------------------------------------------------


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_shapes_and_labels(split, n, monkeypatch):
    monkeypatch.setenv("DGMLIB_OFFLINE", "1")
    x, y = data.load_fashion_mnist(split)
    assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [n // 10] * 10  # balanced classes
    # mean and sd of the intensities in [0, 1], to the 4 decimals of the normalisation constants
    # quoted for Fashion-MNIST (train 0.2860 / 0.3530, test 0.2868 / 0.3524)
    u = x.double() / 255
    mean, sd = {"train": (0.2860, 0.3530), "test": (0.2868, 0.3524)}[split]
    assert abs(u.mean().item() - mean) < 5e-5 and abs(u.std(correction=0).item() - sd) < 5e-5


def test_load_fashion_mnist_rejects_unknown_split():
    with pytest.raises(
        ValueError, match=r"load_fashion_mnist: split must be one of \('train', 'test'\)"
    ):
        data.load_fashion_mnist("validation")


@pytest.fixture
def real_test_labels(monkeypatch):
    """Decompressed bytes of the real test-label file (found the ordinary way, offline)."""
    monkeypatch.setenv("DGMLIB_OFFLINE", "1")
    expected = data.FASHION_MNIST["test"][1]
    return expected, data.fetch(expected)


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_corrupted_file_names_file_and_both_hashes(damage, real_test_labels, isolated):
    """A truncated or altered copy of a real file is rejected with both hashes and the fix."""
    expected, original = real_test_labels
    isolated.mkdir(parents=True)
    bad = isolated / expected.name
    if damage == "truncate":
        bad.write_bytes(gzip.compress(original)[:1000])  # a cut-off download
        with pytest.raises(DataIntegrityError, match="not a valid gzip file"):
            data.fetch(expected, allow_download=False)
        bad.write_bytes(gzip.compress(original[:5000]))  # a valid gzip of cut-off content
    else:
        altered = bytearray(original)
        altered[100] ^= 0xFF
        bad.write_bytes(gzip.compress(bytes(altered)))
    with pytest.raises(DataIntegrityError) as err:
        data.fetch(expected, allow_download=False)
    msg = str(err.value)
    actual = hashlib.sha256(gzip.decompress(bad.read_bytes())).hexdigest()
    assert str(bad) in msg and expected.sha256 in msg and actual in msg
    assert "delete it" in msg


def test_missing_file_offline_says_where_it_looked(isolated):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fetch(data.FASHION_MNIST["test"][1], allow_download=False)


# -- the download path, against a local server -------------------------------------------------


def test_download_from_local_server(isolated, server, monkeypatch):
    root, url = server
    content = make_idx((7, 3, 3))
    expected = data_file("tiny-images-idx3-ubyte.gz", content)
    (root / expected.name).write_bytes(gzip.compress(content))
    monkeypatch.setenv("DGMLIB_DATA_URL", url)
    got = data.fetch(expected)
    assert got == content
    assert (isolated / expected.name).is_file()
    assert data.parse_idx(got).shape == (7, 3, 3)
    assert not list(isolated.glob("*.tmp"))


def test_download_of_corrupted_file_leaves_nothing(isolated, server):
    root, url = server
    content = make_idx((5, 2))
    expected = data_file("tiny-labels-idx1-ubyte.gz", content)
    (root / expected.name).write_bytes(gzip.compress(content[:-3]))  # the server has a bad copy
    with pytest.raises(DataNotFoundError) as err:
        data.download(expected, isolated, urls=(url,))
    assert expected.sha256 in str(err.value)
    assert list(isolated.iterdir()) == []  # no file, no temp file
    # a copy already in place is not replaced by an unverified download
    (isolated / expected.name).write_bytes(b"the old copy")
    with pytest.raises(DataNotFoundError):
        data.download(expected, isolated, urls=(url,))
    assert [p.name for p in isolated.iterdir()] == [expected.name]
    assert (isolated / expected.name).read_bytes() == b"the old copy"


def test_download_falls_back_to_next_mirror(isolated, server):
    root, url = server
    content = make_idx((4,))
    expected = data_file("t.gz", content)
    (root / expected.name).write_bytes(gzip.compress(content))
    missing = url + "nowhere/"
    path = data.download(expected, isolated, urls=(missing, url))
    assert gzip.decompress(path.read_bytes()) == content


def test_parse_idx_rejects_bad_headers():
    with pytest.raises(DataIntegrityError, match="magic"):
        data.parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataIntegrityError, match="header says shape"):
        data.parse_idx(make_idx((3, 4))[:-1])


# -- binarization, small sets, batching -----------------------------------------------------------


def test_binarization():
    x = torch.tensor([[0, 255, 128]], dtype=torch.uint8)
    assert data.binarize_threshold(x).tolist() == [[0.0, 1.0, 1.0]]
    assert data.binarize_fixed(x, seed=3)[0, :2].tolist() == [0.0, 1.0]  # p = 0 and 1 are certain
    # binarize_fixed: the seed alone fixes the sample (not the global random state), and
    # another seed gives another sample
    grey = torch.full((4000,), 128, dtype=torch.uint8)
    torch.manual_seed(1)
    a = data.binarize_fixed(grey, seed=3)
    torch.manual_seed(2)
    assert torch.equal(a, data.binarize_fixed(grey, seed=3))
    assert not torch.equal(a, data.binarize_fixed(grey, seed=4))
    # each pixel is Bernoulli(128 / 255): the mean within 4 standard errors sqrt(p (1 - p) / n)
    p = 128 / 255
    assert abs(a.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / len(a))
    d = data.binarize_dynamic(torch.full((20000,), 0.3), torch.Generator().manual_seed(0))
    assert set(d.unique().tolist()) <= {0.0, 1.0}
    assert abs(d.mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(d))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.binarize_dynamic(torch.tensor([1.5]))


def test_digits():
    x, y = data.load_digits()
    assert x.shape == (1797, 8, 8) and 0 <= x.min() and x.max() <= 1 and y.max() == 9


@pytest.mark.parametrize("name", data.TOY_SETS)
def test_toy_sets_deterministic(name):
    a, la = data.toy_2d(name, 500, seed=1)
    b, lb = data.toy_2d(name, 500, seed=1)
    c, _ = data.toy_2d(name, 500, seed=2)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and la.shape == (500,)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)


def test_ring_modes_lie_on_circle():
    x, lab = data.toy_2d("ring", 2000, noise=0.0)
    assert torch.allclose(x.norm(dim=1), torch.full((2000,), 2.0), atol=1e-5)
    assert len(lab.unique()) == 8
    with pytest.raises(ValueError, match="name must be one of"):
        data.toy_2d("spiral", 10)


def test_batches():
    x, y = torch.arange(10), torch.arange(10) * 2
    got = list(data.batches(x, y, batch_size=4))
    assert [b[0].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(torch.equal(b[1], b[0] * 2) for b in got)
    assert len(list(data.batches(x, batch_size=4, drop_last=True))) == 2
    g = torch.Generator().manual_seed(0)
    shuffled = torch.cat([b[0] for b in data.batches(x, batch_size=3, shuffle=True, generator=g)])
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))
    with pytest.raises(ValueError, match="first dimension"):
        list(data.batches(x, torch.arange(3), batch_size=2))
    with pytest.raises(ValueError, match="batches: batch_size must be an integer >= 1, got 0"):
        list(data.batches(x, batch_size=0))
    with pytest.raises(TypeError, match="batches: batch_size must be an integer >= 1, got 2.0"):
        list(data.batches(x, batch_size=2.0))


# --- bars and stripes ----------------------------------------------------------------------------


def test_bars_and_stripes_log_prob_is_normalised_and_matches_sampling():
    from dgmlib.data import bars_and_stripes, bars_and_stripes_log_prob

    size = 3
    codes = torch.arange(2 ** (size * size))
    every = ((codes[:, None] >> torch.arange(size * size)) & 1).float().view(-1, 1, size, size)
    p = bars_and_stripes_log_prob(every).exp()
    assert abs(p.sum().item() - 1.0) < 1e-12  # a distribution over all 512 binary images
    assert int((p > 0).sum()) == 2 ** (size + 1) - 2  # the all-off/all-on patterns are shared
    x = bars_and_stripes(40_000, size, torch.Generator().manual_seed(0))
    assert x.shape == (40_000, 1, size, size) and x.dtype == torch.float32
    assert torch.isfinite(bars_and_stripes_log_prob(x)).all()  # every sample is a valid pattern
    index = (x.view(-1, size * size).long() << torch.arange(size * size)).sum(1)
    freq = torch.bincount(index, minlength=len(codes)).double() / len(x)
    assert (freq - p).abs().max() < 0.01  # empirical frequencies match the exact probabilities


def test_bars_and_stripes_rejects_bad_arguments():
    from dgmlib.data import bars_and_stripes, bars_and_stripes_log_prob

    with pytest.raises(ValueError, match="bars_and_stripes: n must be an integer >= 1, got 0"):
        bars_and_stripes(0)
    with pytest.raises(ValueError, match="bars_and_stripes: size must be an integer >= 2, got 1"):
        bars_and_stripes(5, size=1)
    with pytest.raises(TypeError, match="bars_and_stripes: n must be an integer >= 1, got 5.0"):
        bars_and_stripes(5.0)
    with pytest.raises(ValueError, match=r"x must have shape \[n, 1, S, S\]"):
        bars_and_stripes_log_prob(torch.zeros(2, 3, 4))
