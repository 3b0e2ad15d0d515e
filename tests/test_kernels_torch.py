"""dgmlib.kernels without Triton: the torch paths (the CPU path) against float64 references,
argument checks, backend choice, and memory bounds measured in fresh processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import KERNEL_TOL, ROOT, close, mixture_case

import dgmlib.kernels.backend as backend_mod
import dgmlib.kernels.mixture as mixture_mod
import dgmlib.kernels.vq as vq_mod
from dgmlib.kernels import (
    gaussian_rsample_kl,
    gaussian_rsample_kl_ref,
    iwae_logmeanexp,
    iwae_logmeanexp_ref,
    mixture_logpdf,
    mixture_logpdf_ref,
    vq_nearest,
    vq_nearest_ref,
)
from dgmlib.models.vae import VAE
from dgmlib.objectives import ELBO, IWAEBound

TOL = KERNEL_TOL


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few entries, so that small problems cross many tile boundaries."""
    monkeypatch.setattr(mixture_mod, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(mixture_mod, "BLOCK_N", 16)
    monkeypatch.setattr(vq_mod, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(vq_mod, "BLOCK_K", 16)


def run_python(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# ----------------------------------------------------------------------------------------------
# Imports and backend choice
# ----------------------------------------------------------------------------------------------


def test_import_kernels_imports_no_triton():
    """In a fresh process: importing and using the CPU path imports no triton and initialises no
    CUDA (``import dgmlib.objectives`` neither); then, with ``import triton`` made to fail, the
    automatic choice is torch and an explicit 'triton' says what to install."""
    out = run_python(
        "import sys, dgmlib, dgmlib.kernels, dgmlib.objectives, torch\n"
        "from dgmlib.kernels import iwae_logmeanexp, mixture_logpdf, resolve_backend\n"
        "from dgmlib.kernels import triton_available\n"
        "z = torch.randn(4, 2)\n"
        "mixture_logpdf(z, z, z)\n"
        "print('triton' in sys.modules, torch.cuda.is_initialized())\n"
        "sys.modules['triton'] = None  # every `import triton` now raises ImportError\n"
        "print(triton_available(), resolve_backend(None, z, op='f'))\n"
        "try:\n"
        "    iwae_logmeanexp(z, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('needs the triton package' in str(e))\n",
        DGMLIB_BACKEND="",
    )
    assert out.split() == ["False", "False", "False", "torch", "True"]


def test_backend_resolution(monkeypatch):
    z = torch.zeros(2, 3)
    monkeypatch.delenv("DGMLIB_BACKEND", raising=False)
    assert backend_mod.resolve_backend(None, z, op="f") == "torch"  # CPU tensors: torch
    assert backend_mod.resolve_backend("torch", z, op="f") == "torch"
    monkeypatch.setenv("DGMLIB_BACKEND", "torch")
    assert backend_mod.resolve_backend(None, z, op="f") == "torch"
    monkeypatch.setenv("DGMLIB_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"\$DGMLIB_BACKEND must be 'torch', 'triton'"):
        backend_mod.resolve_backend(None, z, op="f")
    with pytest.raises(ValueError, match="backend must be 'torch', 'triton' or None"):
        mixture_logpdf(z, z, z, backend="numpy")


def test_wide_features_fall_back_to_torch(monkeypatch):
    monkeypatch.delenv("DGMLIB_BACKEND", raising=False)
    z = torch.zeros(2, 3)
    assert backend_mod.resolve_backend(None, z, op="f", unsupported="too wide") == "torch"
    with pytest.raises(ValueError, match=r"the Triton path supports D <= 256, got D = 300"):
        mixture_logpdf(torch.zeros(2, 300), torch.zeros(3, 300), torch.zeros(3, 300),
                       backend="triton")  # fmt: skip


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    if not backend_mod.triton_available():
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    z = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        mixture_logpdf(z, z, z, backend="triton")
    monkeypatch.setenv("DGMLIB_BACKEND", "triton")
    with pytest.raises(RuntimeError, match=r"\$DGMLIB_BACKEND='triton' got CPU tensors"):
        vq_nearest(z, z)


def test_objective_backend_errors():
    """The objectives check ``backend`` and refuse the fused kernel where it does not apply."""
    with pytest.raises(ValueError, match=r"ELBO: backend must be one of \(None, 'torch'"):
        ELBO(backend="cuda")
    with pytest.raises(ValueError, match="IWAEBound: backend must be one of"):
        IWAEBound(backend="gpu")
    torch.manual_seed(0)
    x = torch.zeros(2, 784)
    with pytest.raises(ValueError, match="ELBO: the Triton path .* free bits need it per dim"):
        ELBO(free_bits=0.1, backend="triton")(VAE.for_mnist(z_dim=4, hidden=8), x)
    mog = VAE.for_mnist(z_dim=4, hidden=8, prior="mog")
    with pytest.raises(ValueError, match="N\\(0, I\\) only, not to a MixtureOfGaussiansPrior"):
        ELBO(backend="triton")(mog, x)
    # the automatic choice falls back to the torch code for these (on any device)
    assert torch.isfinite(ELBO()(mog, x)["loss"])


# ----------------------------------------------------------------------------------------------
# mixture_logpdf, torch path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,n,d", [(1, 1, 1), (37, 5, 3), (129, 37, 7), (1, 129, 16)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_mixture_matches_reference(m, n, d, dtype, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    args = mixture_case(m, n, d, dtype)
    ref = mixture_logpdf_ref(*(a.double() for a in args))
    out = mixture_logpdf(*args, backend="torch")
    assert out.shape == (m,) and out.dtype == dtype
    close(out, ref, TOL[dtype])
    close(
        mixture_logpdf(*args[:3], backend="torch"),
        mixture_logpdf_ref(*(a.double() for a in args[:3])),
        TOL[dtype],
    )


def test_mixture_single_component_is_the_gaussian():
    z, mu, logvar, _ = mixture_case(37, 1, 5, torch.float64)
    normal = torch.distributions.Normal(mu[0], torch.exp(0.5 * logvar[0]))
    close(mixture_logpdf(z, mu, logvar), normal.log_prob(z).sum(1), TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixture_gradients(dtype, small_tiles):
    args = mixture_case(37, 53, 6, dtype)
    g = torch.randn(37, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [a.clone().requires_grad_() for a in args]
    got = torch.autograd.grad(mixture_logpdf(*leaves, backend="torch"), leaves, g.to(dtype))
    ref_leaves = [a.double().requires_grad_() for a in args]
    ref = torch.autograd.grad(mixture_logpdf_ref(*ref_leaves), ref_leaves, g)
    for a, b in zip(got, ref, strict=True):
        close(a, b, TOL[dtype], scale=True)


def test_mixture_gradcheck_float64(small_tiles):
    args = [a.requires_grad_() for a in mixture_case(5, 7, 3, torch.float64, seed=2)]
    assert torch.autograd.gradcheck(lambda *a: mixture_logpdf(*a, backend="torch"), args)
    uniform = args[:3]
    assert torch.autograd.gradcheck(lambda *a: mixture_logpdf(*a, backend="torch"), uniform)


def test_mixture_far_away_and_far_from_origin():
    z, mu, logvar, log_w = mixture_case(37, 129, 8, torch.float32)
    direction = torch.nn.functional.normalize(torch.randn(37, 8), dim=1)
    far = mu.mean(0) + 1e3 * direction
    ref = mixture_logpdf_ref(far.double(), mu.double(), logvar.double(), log_w.double())
    torch.testing.assert_close(
        mixture_logpdf(far, mu, logvar, log_w).double(), ref, rtol=1e-5, atol=0
    )
    shifted = [z + 1e4, mu + 1e4, logvar, log_w]
    ref = mixture_logpdf_ref(*(a.double() for a in shifted))
    close(mixture_logpdf(*shifted), ref, TOL[torch.float32])


def test_mixture_all_minus_inf_weights(small_tiles):
    z, mu, logvar, log_w = mixture_case(37, 53, 4, torch.float32)
    dead = torch.full_like(log_w, float("-inf"))
    leaves = [t.clone().requires_grad_() for t in (z, mu, logvar, dead)]
    out = mixture_logpdf(*leaves, backend="torch")
    assert torch.equal(out, torch.full_like(out, float("-inf")))
    for g in torch.autograd.grad(out, leaves, torch.randn_like(out)):
        assert torch.equal(g, torch.zeros_like(g))
    part = log_w.clone()
    part[:40] = float("-inf")  # several whole tiles of dead components
    out = mixture_logpdf(z, mu, logvar, part, backend="torch")
    ref = mixture_logpdf_ref(z.double(), mu.double(), logvar.double(), part.double())
    close(out, ref, TOL[torch.float32])


def test_mixture_empty_queries():
    _, mu, logvar, _ = mixture_case(1, 5, 3, torch.float32)
    assert mixture_logpdf(torch.zeros(0, 3), mu, logvar).shape == (0,)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(z=torch.zeros(4)), ValueError, r"`z` must have shape \[M, D\], got \[4\]"),
        (
            dict(z=torch.zeros(4, 2)),
            ValueError,
            r"`z` must have shape \[M, D\] with D from `mu`, \[4, 3\], got \[4, 2\]",
        ),
        (dict(logvar=torch.zeros(5, 2)), ValueError, r"`logvar` must have the shape of `mu`"),
        (dict(log_weights=torch.zeros(4)), ValueError, r"`log_weights` must have shape \[N\]"),
        (dict(mu=torch.zeros(0, 3), logvar=torch.zeros(0, 3)), ValueError, r"N, D >= 1"),
        (dict(z=torch.zeros(4, 3, dtype=torch.int64)), TypeError, r"`z` must be float16"),
        (dict(z=torch.zeros(4, 3, dtype=torch.float64)), TypeError, r"`mu` has dtype"),
        (dict(mu=[[0.0] * 3] * 5), TypeError, r"`mu` must be a torch.Tensor"),
        (dict(z=torch.full((4, 3), math.nan)), ValueError, r"`z` contains NaN"),
        (dict(logvar=torch.full((5, 3), math.inf)), ValueError, r"`logvar` contains NaN"),
        (dict(log_weights=torch.full((5,), math.nan)), ValueError, r"`log_weights` contains"),
    ],
)
def test_mixture_argument_errors(change, error, match):
    args = dict(z=torch.zeros(4, 3), mu=torch.zeros(5, 3), logvar=torch.zeros(5, 3))
    args["log_weights"] = torch.full((5,), -math.log(5))
    args.update(change)
    with pytest.raises(error, match=match):
        mixture_logpdf(**args, backend="torch")


MIXTURE_MEMORY = """
import json, time, torch
torch.set_num_threads(2)
from dgmlib.kernels import mixture_logpdf
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
g = torch.Generator().manual_seed(0)
mu = torch.randn(60000, 32, generator=g); logvar = torch.randn(60000, 32, generator=g) / 5
z = torch.randn(1000, 32, generator=g)
mixture_logpdf(z[:8], mu[:64], logvar[:64])
open("/proc/self/clear_refs", "w").write("5")
base = kb("VmRSS"); t = time.perf_counter()
out = mixture_logpdf(z, mu, logvar)
dt = time.perf_counter() - t
print(json.dumps(dict(mb=(kb("VmHWM") - base) / 1024, s=dt, ok=bool(out.isfinite().all()))))
"""


@pytest.mark.slow
def test_mixture_memory_and_time_in_fresh_process():
    """N = 60 000, D = 32 (M = 1 000 here; the benchmark runs M = 10 000): a naive broadcast
    would need 7.7 GB; the chunked path grows the peak resident memory by well under 1 GB."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    res = json.loads(run_python(MIXTURE_MEMORY).strip().splitlines()[-1])
    assert res["ok"]
    assert res["mb"] < 256, res
    assert res["s"] < 60, res


# ----------------------------------------------------------------------------------------------
# vq_nearest, torch path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,k,d", [(1, 1, 1), (37, 5, 3), (129, 300, 16)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_vq_matches_reference(m, k, d, dtype, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    g = torch.Generator().manual_seed(m + k)
    x = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    codebook = torch.randn(k, d, generator=g, dtype=torch.float64).to(dtype)
    idx, sq = vq_nearest(x, codebook, backend="torch")
    ref_idx, ref_sq = vq_nearest_ref(x.double(), codebook.double())
    assert idx.dtype == torch.int64 and sq.dtype == dtype
    chosen = (x.double() - codebook.double()[idx]).square().sum(1)
    close(sq, chosen, TOL[dtype])
    if dtype == torch.bfloat16:  # searched in float32: only a tie within its rounding may differ
        assert (chosen - ref_sq <= 1e-5 * ref_sq.clamp_min(1)).all()
    else:
        assert torch.equal(idx, ref_idx)


def test_vq_identical_to_cdist_argmin_moderate_size():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 64, generator=g, dtype=torch.float64)
    codebook = torch.randn(512, 64, generator=g, dtype=torch.float64)
    idx, sq = vq_nearest(x, codebook)
    dist = torch.cdist(x, codebook)
    assert torch.equal(idx, dist.argmin(1))
    close(sq, dist.min(1).values ** 2, TOL[torch.float64])
    # float32: the same indices except where the float64 distances tie to float32 rounding
    idx32, _ = vq_nearest(x.float(), codebook.float())
    best2 = dist.topk(2, dim=1, largest=False).values ** 2
    near_tie = (best2[:, 1] - best2[:, 0]) < 1e-4 * best2[:, 0]
    assert torch.equal(idx32[~near_tie], idx[~near_tie])


def test_vq_ties_and_duplicates(small_tiles):
    g = torch.Generator().manual_seed(0)
    codebook = torch.randint(-2, 3, (300, 4), generator=g).float()
    codebook[257] = codebook[3]
    codebook[299] = codebook[3]
    x = torch.randint(-2, 3, (129, 4), generator=g).float()
    x[:5] = codebook[3]
    idx, sq = vq_nearest(x, codebook, backend="torch")
    ref_idx, ref_sq = vq_nearest_ref(x, codebook)
    assert torch.equal(idx, ref_idx) and torch.equal(sq, ref_sq)
    assert torch.equal(idx, torch.cdist(x, codebook).argmin(1))
    assert (idx[:5] == 3).all()
    idx_far, _ = vq_nearest(x + 1000, codebook + 1000, backend="torch")
    assert torch.equal(idx_far, ref_idx)
    # rows equal in value but differently rounded by a matrix product still go to the first
    dup = torch.randn(10, 7, dtype=torch.float64)
    dup[6] = dup[2]
    q = dup[[2, 6, 2]] + 1e-9
    assert vq_nearest(q, dup)[0].tolist() == [2, 2, 2]


def test_vq_sq_dist_gradient(small_tiles):
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: vq_nearest(a, b)[1], (x, codebook))


@pytest.mark.parametrize(
    "x,codebook,error,match",
    [
        (torch.zeros(4, 3), torch.zeros(5, 2), ValueError, r"`x` must have shape \[M, D\]"),
        (torch.zeros(4, 3), torch.zeros(0, 3), ValueError, r"K, D >= 1"),
        (torch.zeros(4, 3), torch.zeros(5, 3, 1), ValueError, r"`codebook` must have shape"),
        (torch.zeros(4, 3).half(), torch.zeros(5, 3), TypeError, r"`codebook` has dtype"),
        (torch.full((4, 3), math.nan), torch.zeros(5, 3), ValueError, r"`x` contains NaN"),
    ],
)
def test_vq_argument_errors(x, codebook, error, match):
    with pytest.raises(error, match=match):
        vq_nearest(x, codebook, backend="torch")


VQ_MEMORY = """
import json, sys, torch
torch.set_num_threads(2)
from dgmlib.kernels import vq_nearest
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
g = torch.Generator().manual_seed(0)
x = torch.randn(65536, 64, generator=g); codebook = torch.randn(512, 64, generator=g)
if sys.argv[1] == "cdist":
    f = lambda a, b: torch.cdist(a, b).argmin(1)
else:
    f = lambda a, b: vq_nearest(a, b, backend="torch")[0]
f(x[:64], codebook)
open("/proc/self/clear_refs", "w").write("5")
base = kb("VmRSS")
idx = f(x, codebook)
print(json.dumps(dict(mb=(kb("VmHWM") - base) / 1024, idx=idx[::97].tolist())))
"""


@pytest.mark.slow
def test_vq_memory_quarter_of_cdist():
    """M = 65 536, K = 512, D = 64: peak resident-memory growth of vq_nearest is at most a
    quarter of torch.cdist(...).argmin(1)'s, each measured in a fresh process."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    res = {}
    for which in ("cdist", "vq"):
        proc = subprocess.run(
            [sys.executable, "-c", VQ_MEMORY, which], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        res[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["vq"]["mb"] <= 0.25 * res["cdist"]["mb"], res
    assert res["vq"]["idx"] == res["cdist"]["idx"]


# ----------------------------------------------------------------------------------------------
# Row-wise, torch path
# ----------------------------------------------------------------------------------------------


def test_iwae_logmeanexp_reference():
    g = torch.Generator().manual_seed(0)
    log_w = 30 * torch.randn(5, 64, generator=g, dtype=torch.float64)
    log_w[1] = float("-inf")
    log_w[2, :10] = float("-inf")
    lme, w = iwae_logmeanexp(log_w)
    naive = torch.log(torch.exp(log_w - 50).mean(1)) + 50  # fine at this scale in float64
    close(lme[[0, 2, 3, 4]], naive[[0, 2, 3, 4]], TOL[torch.float64])
    assert lme[1] == float("-inf") and (w[1] == 0).all()
    close(w.sum(1)[[0, 2, 3, 4]], torch.ones(4, dtype=torch.float64), TOL[torch.float64])
    leaf = log_w.clone().requires_grad_()
    (grad,) = torch.autograd.grad(iwae_logmeanexp(leaf)[0][[0, 1]].sum(), leaf)
    assert torch.isfinite(grad).all() and (grad[1] == 0).all()
    close(grad[0], w[0], TOL[torch.float64])  # d lme / d log_w = normalized weights
    lme0, w0 = iwae_logmeanexp(log_w.T.contiguous(), dim=0)
    assert torch.equal(lme0, lme) and torch.equal(w0, w.T)


def brute_force_logmeanexp(row: list[float]) -> tuple[float, list[float]]:
    """log (1/K) sum_k e^{x_k} and the weights e^{x_k} / sum, in Python floats: shift by the
    maximum, sum the exponentials exactly rounded (math.fsum). Relative error a few ulp."""
    if all(x == -math.inf for x in row):
        return -math.inf, [0.0] * len(row)
    top = max(row)
    terms = [math.exp(x - top) for x in row]
    total = math.fsum(terms)
    return top + math.log(total) - math.log(len(row)), [t / total for t in terms]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_iwae_logmeanexp_ref_against_brute_force(dtype):
    """The reference (also the torch path, and what the Triton path is tested against) against
    an independent scalar computation in float64: values spread over 200 nats, a dead row, dead
    entries, and the sample dimension first or last."""
    g = torch.Generator().manual_seed(1)
    log_w = (40 * torch.randn(6, 50, generator=g, dtype=torch.float64)).to(dtype)
    log_w[1] = float("-inf")
    log_w[3, ::3] = float("-inf")
    expected = [brute_force_logmeanexp(r) for r in log_w.double().tolist()]
    lme_exp = torch.tensor([e[0] for e in expected], dtype=torch.float64)
    w_exp = torch.tensor([e[1] for e in expected], dtype=torch.float64)
    for dim, x in ((-1, log_w), (0, log_w.T.contiguous())):
        lme, w = iwae_logmeanexp_ref(x, dim)
        assert lme.dtype == w.dtype == dtype
        w = w if dim == -1 else w.T
        # the per-dtype tolerances of this file (the brute force errs by a few float64 ulp)
        close(lme[[0, 2, 3, 4, 5]], lme_exp[[0, 2, 3, 4, 5]], TOL[dtype])
        assert lme[1] == -math.inf and torch.equal(w[1], torch.zeros_like(w[1]))
        close(w, w_exp, TOL[dtype])


def test_gaussian_rsample_kl_reference():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    eps = torch.randn(6, 5, generator=g)
    z, kl = gaussian_rsample_kl(mu, logvar, eps)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(5), torch.ones(5))
    close(kl, torch.distributions.kl_divergence(q, p).sum(1), TOL[torch.float32])
    close(z, mu + q.stddev * eps, TOL[torch.float32])
    a = gaussian_rsample_kl(mu, logvar, generator=torch.Generator().manual_seed(3))
    b = gaussian_rsample_kl(mu, logvar, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    c = gaussian_rsample_kl(mu, logvar, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a[0], c[0])  # the generator, not the global state, sets the noise
    # the reference (the torch path) in float64 against torch.distributions in float64
    mu64, lv64, eps64 = mu.double(), logvar.double(), eps.double()
    z_ref, kl_ref = gaussian_rsample_kl_ref(mu64, lv64, eps64)
    q64 = torch.distributions.Normal(mu64, torch.exp(0.5 * lv64))
    p64 = torch.distributions.Normal(0.0, 1.0)
    close(kl_ref, torch.distributions.kl_divergence(q64, p64).sum(1), TOL[torch.float64])
    close(z_ref, q64.loc + q64.scale * eps64, TOL[torch.float64])
    with pytest.raises(ValueError, match=r"`eps` must have the shape of `mu`"):
        gaussian_rsample_kl(mu, logvar, torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r"`logvar` must have the shape of `mu`"):
        gaussian_rsample_kl(mu, logvar[:, :2])
