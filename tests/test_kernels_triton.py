"""Triton kernels against float64 references, on CPU through the Triton interpreter.

``TRITON_INTERPRET=1`` has to be in the environment before ``triton`` is first imported in a
process, because Triton's own library (``tl.zeros``, ``tl.max``, ...) is defined at import. This
module sets it at import when triton has not been imported yet and there is no GPU, and then runs
its cases in this process. Otherwise (another module imported triton first, e.g. through
``torch.compile``, or a GPU is present and compiled Triton must keep working in this process) the
same cases run in a fresh Python process (``test_cases_in_fresh_process``), and on a GPU the
compiled kernels are checked here (``TestCompiledOnGPU``).

Interpreter limits this file respects: each program instance costs milliseconds, so the launchers
use large blocks in the interpreter and the sizes stay small; ``tl.dot`` needs blocks >= 16; half
precision is converted to float32 before a kernel runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

CHILD = os.environ.get("DGMLIB_KERNEL_TESTS_CHILD") == "1"
CUDA = torch.cuda.is_available()

_SET_HERE = (
    "triton" not in sys.modules
    and (CHILD or not CUDA)
    and importlib.util.find_spec("triton") is not None
)
if _SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"
try:
    import triton.language as tl

    HAVE_TRITON = True
    IN_PROCESS = type(tl.zeros).__name__ == "InterpretedFunction"
except ImportError:
    HAVE_TRITON = IN_PROCESS = False
if _SET_HERE and not CHILD:
    # Only the import needed it; the tests set it again (fixture below), so processes started
    # by later tests (notebook kernels, say) do not inherit it.
    del os.environ["TRITON_INTERPRET"]

from helpers import KERNEL_TOL, ROOT, close, mixture_case  # noqa: E402

from dgmlib import kernels  # noqa: E402
from dgmlib.kernels.backend import autograd_nodes  # noqa: E402
from dgmlib.models.vae import VAE  # noqa: E402
from dgmlib.objectives import ELBO, IWAEBound  # noqa: E402

no_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
interpreted = (
    pytest.mark.skipif(
        not IN_PROCESS,
        reason="triton was imported in compiled mode in this process (or a GPU is present); "
        "these cases run in a fresh process: see test_cases_in_fresh_process",
    )
    if HAVE_TRITON
    else no_triton
)
pytestmark = no_triton


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    """The kernels read TRITON_INTERPRET when they are launched: keep it on during each test."""
    if IN_PROCESS:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


TOL = KERNEL_TOL  # outputs; gradients use close(..., scale=True)
GRAD_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
}


def grads_vs_reference(args, backend, seed=1):
    """Gradients of sum(g * out) for a random upstream g, from ``backend`` and the reference."""
    g = torch.randn(args[0].shape[0], generator=torch.Generator().manual_seed(seed))
    leaves = [a.clone().requires_grad_() for a in args]
    out = kernels.mixture_logpdf(*leaves, backend=backend)
    got = torch.autograd.grad(out, leaves, g.to(out.dtype))
    ref_leaves = [a.detach().double().requires_grad_() for a in args]
    ref = torch.autograd.grad(kernels.mixture_logpdf_ref(*ref_leaves), ref_leaves, g.double())
    return got, ref


# ----------------------------------------------------------------------------------------------
# kernels.mixture_logpdf
# ----------------------------------------------------------------------------------------------

SIZES = [(1, 1, 1), (37, 5, 3), (129, 37, 7), (1, 129, 16), (37, 300, 33)]


@interpreted
@pytest.mark.parametrize("m,n,d", SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixture_matches_reference(m, n, d, dtype):
    args = mixture_case(m, n, d, dtype)
    out = kernels.mixture_logpdf(*args, backend="triton")
    assert out.shape == (m,) and out.dtype == dtype
    close(out, kernels.mixture_logpdf_ref(*(a.double() for a in args)), TOL[dtype])
    uniform = kernels.mixture_logpdf(*args[:3], backend="triton")
    close(uniform, kernels.mixture_logpdf_ref(*(a.double() for a in args[:3])), TOL[dtype])


@interpreted
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixture_half_precision(dtype):
    """Half inputs are computed in float32 (never bf16 arithmetic in a kernel) and rounded."""
    args = mixture_case(37, 129, 8, dtype)
    out = kernels.mixture_logpdf(*args, backend="triton")
    assert out.dtype == dtype
    close(out, kernels.mixture_logpdf_ref(*(a.double() for a in args)), TOL[dtype])


@interpreted
@pytest.mark.parametrize("m,n,d", [(37, 5, 3), (129, 300, 7)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixture_gradients(m, n, d, dtype):
    got, ref = grads_vs_reference(mixture_case(m, n, d, dtype), "triton")
    for name, a, b in zip(("z", "mu", "logvar", "log_weights"), got, ref, strict=True):
        assert a.dtype == dtype, name
        close(a, b, GRAD_TOL[dtype], scale=True)


@interpreted
def test_mixture_gradcheck_float64():
    args = [a.requires_grad_() for a in mixture_case(3, 5, 2, torch.float64, seed=3)]
    assert torch.autograd.gradcheck(lambda *a: kernels.mixture_logpdf(*a, backend="triton"), args)


@interpreted
def test_mixture_far_away_queries():
    """Queries 1e3 standard deviations away: log-densities near -1e6, relative tolerance."""
    z, mu, logvar, log_w = mixture_case(37, 129, 8, torch.float32)
    direction = torch.nn.functional.normalize(torch.randn(37, 8), dim=1)
    z = mu.mean(0) + 1e3 * direction
    out = kernels.mixture_logpdf(z, mu, logvar, log_w, backend="triton")
    ref = kernels.mixture_logpdf_ref(z.double(), mu.double(), logvar.double(), log_w.double())
    assert ref.max() < -1e5
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)


@interpreted
def test_mixture_far_from_origin():
    """A whole mixture at 1e4 from the origin: centring keeps full float32 accuracy."""
    z, mu, logvar, log_w = mixture_case(37, 129, 8, torch.float32)
    z, mu = z + 1e4, mu + 1e4
    out = kernels.mixture_logpdf(z, mu, logvar, log_w, backend="triton")
    ref = kernels.mixture_logpdf_ref(z.double(), mu.double(), logvar.double(), log_w.double())
    close(out, ref, TOL[torch.float32])


@interpreted
def test_mixture_all_minus_inf_weights():
    z, mu, logvar, log_w = mixture_case(37, 300, 4, torch.float32)
    dead = torch.full_like(log_w, float("-inf"))
    leaves = [t.clone().requires_grad_() for t in (z, mu, logvar, dead)]
    out = kernels.mixture_logpdf(*leaves, backend="triton")
    assert torch.equal(out, torch.full_like(out, float("-inf")))
    grads = torch.autograd.grad(out, leaves, torch.randn_like(out))
    for g in grads:
        assert torch.equal(g, torch.zeros_like(g))
    # Some dead components (including a whole block of them) change nothing but the weights.
    part = log_w.clone()
    part[:256] = float("-inf")
    part[256:] = torch.log_softmax(part[256:], 0)
    got, ref = grads_vs_reference([z, mu, logvar, part], "triton")
    close(kernels.mixture_logpdf(z, mu, logvar, part, backend="triton"),
          kernels.mixture_logpdf_ref(z.double(), mu.double(), logvar.double(), part.double()),
          TOL[torch.float32])  # fmt: skip
    for a, b in zip(got, ref, strict=True):
        assert torch.isfinite(a).all()
        close(a, b, GRAD_TOL[torch.float32], scale=True)


@interpreted
def test_mixture_triton_agrees_with_torch_path():
    args = mixture_case(129, 300, 16, torch.float32, seed=5)
    close(
        kernels.mixture_logpdf(*args, backend="triton"),
        kernels.mixture_logpdf(*args, backend="torch"),
        TOL[torch.float32],
    )


# ----------------------------------------------------------------------------------------------
# kernels.vq_nearest
# ----------------------------------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("m,k,d", [(1, 1, 1), (37, 5, 3), (129, 300, 16), (200, 37, 64)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vq_matches_reference(m, k, d, dtype):
    g = torch.Generator().manual_seed(m + k + d)
    x = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    codebook = torch.randn(k, d, generator=g, dtype=torch.float64).to(dtype)
    idx, sq = kernels.vq_nearest(x, codebook, backend="triton")
    ref_idx, ref_sq = kernels.vq_nearest_ref(x.double(), codebook.double())
    assert idx.dtype == torch.int64 and sq.dtype == dtype
    assert torch.equal(idx, ref_idx)
    close(sq, ref_sq, TOL[dtype])
    assert torch.equal(idx, torch.cdist(x.double(), codebook.double()).argmin(1))


@interpreted
def test_vq_ties_and_duplicates():
    """Integer data makes every distance exact: exact ties must go to the lowest index."""
    g = torch.Generator().manual_seed(0)
    codebook = torch.randint(-2, 3, (300, 4), generator=g).float()
    codebook[257] = codebook[3]  # duplicates, across tiles
    codebook[299] = codebook[3]
    x = torch.randint(-2, 3, (129, 4), generator=g).float()
    x[:5] = codebook[3]
    idx, sq = kernels.vq_nearest(x, codebook, backend="triton")
    ref_idx, ref_sq = kernels.vq_nearest_ref(x, codebook)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(idx, torch.cdist(x, codebook).argmin(1))
    assert torch.equal(sq, ref_sq)
    assert (idx[:5] <= 3).all() and (sq[:5] == 0).all()
    # far from the origin the shift is active and must keep the grid exact
    idx_far, _ = kernels.vq_nearest(x + 1000, codebook + 1000, backend="triton")
    assert torch.equal(idx_far, ref_idx)


@interpreted
def test_vq_sq_dist_gradient():
    x = torch.randn(37, 8, requires_grad=True)
    codebook = torch.randn(20, 8, requires_grad=True)
    idx, sq = kernels.vq_nearest(x, codebook, backend="triton")
    gx, ge = torch.autograd.grad(sq.sum(), (x, codebook))
    diff = x.detach() - codebook.detach()[idx]
    torch.testing.assert_close(gx, 2 * diff)
    torch.testing.assert_close(ge, torch.zeros_like(ge).index_add_(0, idx, -2 * diff))


# ----------------------------------------------------------------------------------------------
# Row-wise kernels
# ----------------------------------------------------------------------------------------------


@interpreted
@pytest.mark.parametrize("shape,dim", [((1, 1), -1), ((37, 5), -1), ((3, 5000), -1), ((129, 7), 0)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_iwae_logmeanexp(shape, dim, dtype):
    g = torch.Generator().manual_seed(0)
    log_w = (10 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    log_w.select(dim, 0).fill_(float("-inf"))  # a dead sample in every row
    if shape[dim] > 1:
        log_w.select(1 - (dim % 2), 0).fill_(float("-inf"))  # and a row of all -inf
    leaf = log_w.clone().requires_grad_()
    lme, w = kernels.iwae_logmeanexp(leaf, dim, backend="triton")
    ref_leaf = log_w.double().requires_grad_()
    ref_lme, ref_w = kernels.iwae_logmeanexp_ref(ref_leaf, dim)
    close(lme, ref_lme, TOL[dtype])
    close(w, ref_w, TOL[dtype])
    g_lme = torch.randn(lme.shape, generator=g, dtype=torch.float64)
    g_w = torch.randn(w.shape, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad((lme, w), leaf, (g_lme.to(dtype), g_w.to(dtype)))
    (ref,) = torch.autograd.grad((ref_lme, ref_w), ref_leaf, (g_lme, g_w))
    close(got, ref, GRAD_TOL[dtype], scale=True)  # an all -inf slice has gradient 0 in both


@interpreted
@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (2, 3, 300), (4, 5000)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gaussian_rsample_kl(shape, dtype):
    g = torch.Generator().manual_seed(0)
    mu, logvar, eps = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    leaves = [t.to(dtype).requires_grad_() for t in (mu, logvar, eps)]
    z, kl = kernels.gaussian_rsample_kl(*leaves, backend="triton")
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref_z, ref_kl = kernels.gaussian_rsample_kl_ref(*ref_leaves)
    assert z.shape == shape and kl.shape == shape[:-1]
    close(z, ref_z, TOL[dtype])
    close(kl, ref_kl, TOL[dtype])
    g_z = torch.randn(z.shape, generator=g, dtype=torch.float64)
    g_kl = torch.randn(kl.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((z, kl), leaves, (g_z.to(dtype), g_kl.to(dtype)))
    ref = torch.autograd.grad((ref_z, ref_kl), ref_leaves, (g_z, g_kl))
    for a, b in zip(got, ref, strict=True):
        close(a, b, GRAD_TOL[dtype], scale=True)


@interpreted
def test_rowwise_half_precision_and_generator():
    log_w = torch.randn(37, 20).to(torch.bfloat16)
    lme, w = kernels.iwae_logmeanexp(log_w, backend="triton")
    ref_lme, ref_w = kernels.iwae_logmeanexp_ref(log_w.double())
    assert lme.dtype == w.dtype == torch.bfloat16
    close(lme, ref_lme, TOL[torch.bfloat16])
    close(w, ref_w, TOL[torch.bfloat16])
    mu, logvar = torch.randn(5, 8), torch.randn(5, 8)
    a = kernels.gaussian_rsample_kl(
        mu, logvar, generator=torch.Generator().manual_seed(1), backend="triton"
    )
    b = kernels.gaussian_rsample_kl(
        mu, logvar, generator=torch.Generator().manual_seed(1), backend="torch"
    )
    close(a[0], b[0], TOL[torch.float32])
    close(a[1], b[1], TOL[torch.float32])


# ----------------------------------------------------------------------------------------------
# The objectives of dgmlib.objectives on the kernels
# ----------------------------------------------------------------------------------------------


# The autograd node of each fused kernel: proof that the kernel, not the torch code, ran.
KERNEL_NODE = {"elbo": "RsampleKLBackward", "iwae": "LogSumExpSoftmaxBackward"}


def objective_terms(kind: str, backend: str | None, dtype: torch.dtype, device: str = "cpu"):
    """Terms and parameter gradients of an objective on a small VAE, noise seeded alike."""
    torch.manual_seed(0)
    model = VAE.for_mnist(z_dim=6, hidden=16).to(device=device, dtype=dtype)
    x = torch.bernoulli(torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    x = x.to(device=device, dtype=dtype)
    objective = ELBO(backend=backend) if kind == "elbo" else IWAEBound(K=5, backend=backend)
    torch.manual_seed(2)  # the noise of the reparametrization
    terms = objective(model, x)
    grads = torch.autograd.grad(terms["loss"], list(model.parameters()))
    return terms, grads


def check_objective_on_kernels(kind: str, dtype: torch.dtype, device: str = "cpu", fused=None):
    """The objective through the fused kernel (``fused``: the backend that selects it) equals the
    torch code at the same noise, terms and gradients, within the kernel tolerances."""
    got, got_grads = objective_terms(kind, fused, dtype, device)
    ref, ref_grads = objective_terms(kind, "torch", dtype, device)
    assert KERNEL_NODE[kind] in autograd_nodes(got["loss"])
    assert KERNEL_NODE[kind] not in autograd_nodes(ref["loss"])
    assert got.keys() == ref.keys()
    for key in ref:
        close(got[key].cpu(), ref[key].cpu(), TOL[dtype], scale=True)  # sums of 784 terms
    for a, b in zip(got_grads, ref_grads, strict=True):
        close(a.cpu(), b.cpu(), GRAD_TOL[dtype], scale=True)


@interpreted
@pytest.mark.parametrize("kind", ["elbo", "iwae"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_objectives_on_the_kernels(kind, dtype):
    check_objective_on_kernels(kind, dtype, fused="triton")


@interpreted
def test_objectives_on_cpu_tensors_keep_the_torch_code(monkeypatch):
    """backend=None on CPU tensors never calls a kernel, even with $DGMLIB_BACKEND=triton."""
    monkeypatch.setenv("DGMLIB_BACKEND", "triton")
    for kind in ("elbo", "iwae"):
        auto, auto_grads = objective_terms(kind, None, torch.float32)
        ref, ref_grads = objective_terms(kind, "torch", torch.float32)
        assert KERNEL_NODE[kind] not in autograd_nodes(auto["loss"])
        assert all(torch.equal(auto[k], ref[k]) for k in ref)
        assert all(torch.equal(a, b) for a, b in zip(auto_grads, ref_grads, strict=True))


# ----------------------------------------------------------------------------------------------
# The same cases in a fresh process; the compiled kernels on a GPU; GPU code generation
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(IN_PROCESS, reason="the interpreter cases ran in this process")
def test_cases_in_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1", DGMLIB_KERNEL_TESTS_CHILD="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
         "-k", "not fresh_process and not Compiled and not codegen"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


AOT_SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from dgmlib.kernels.backend import triton_kernels

tk = triton_kernels()
INTS = {"M", "N", "K", "R", "C"}

def compile_for(fn, ptr, consts, arch, special=None):
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.startswith("stride"):
            sig[name] = "i64"
        elif name in INTS and not (name == "C" and "blse" in fn.__name__):
            sig[name] = "i32"
        else:
            sig[name] = (special or {}).get(name, ptr)
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", arch, 32))

pair = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, PRECISION="tf32x3")
for fn in (tk.blse_fwd_kernel, tk.blse_bwd_a_kernel, tk.blse_bwd_b_kernel):
    compile_for(fn, "*fp32", dict(pair), 90)
compile_for(tk.vq_argmin_kernel, "*fp32", dict(pair), 90, {"IDX": "*i64"})
compile_for(tk.blse_fwd_kernel, "*fp64", dict(pair, BLOCK_M=32, BLOCK_N=32, PRECISION="ieee"), 80)
rows = dict(BLOCK_R=16, BLOCK_C=128)
for fn in (tk.lme_fwd_kernel, tk.lme_bwd_kernel, tk.reparam_fwd_kernel, tk.reparam_bwd_kernel):
    compile_for(fn, "*fp32", dict(rows), 90)
print("ok")
"""


@pytest.mark.slow
def test_gpu_codegen_without_a_gpu():
    """Every kernel compiles to GPU machine code (sm_90, sm_80) ahead of time, no GPU needed:
    catches type and shape errors the interpreter lets through."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", AOT_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-6000:]


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA or IN_PROCESS, reason="needs a CUDA GPU with compiled Triton")
class TestCompiledOnGPU:
    def test_mixture(self):
        args = [a.cuda() for a in mixture_case(1000, 3000, 32, torch.float32)]
        ref = kernels.mixture_logpdf(*(a.double() for a in args), backend="torch")
        close(kernels.mixture_logpdf(*args, backend="triton"), ref, TOL[torch.float32])
        got, ref = grads_vs_reference([a.cpu() for a in args], "torch")
        got_gpu, _ = grads_vs_reference(args, "triton")
        for a, b in zip(got_gpu, ref, strict=True):
            close(a.cpu(), b, dict(rtol=1e-4, atol=1e-4), scale=True)

    def test_vq(self):
        x, codebook = torch.randn(4096, 64).cuda(), torch.randn(512, 64).cuda()
        idx, _ = kernels.vq_nearest(x.double(), codebook.double(), backend="triton")
        assert torch.equal(idx, torch.cdist(x.double(), codebook.double()).argmin(1))

    def test_rowwise(self):
        log_w = torch.randn(64, 1000, device="cuda")
        for a, b in zip(
            kernels.iwae_logmeanexp(log_w, backend="triton"),
            kernels.iwae_logmeanexp_ref(log_w),
            strict=True,
        ):
            close(a, b, TOL[torch.float32])

    @pytest.mark.parametrize("kind", ["elbo", "iwae"])
    def test_objectives_use_the_kernels(self, kind, monkeypatch):
        """On CUDA tensors the objectives' automatic choice is the fused kernel, which agrees
        with the torch code at the same noise."""
        monkeypatch.delenv("DGMLIB_BACKEND", raising=False)
        check_objective_on_kernels(kind, torch.float32, "cuda", fused=None)
