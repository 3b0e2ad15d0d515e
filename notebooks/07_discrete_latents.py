# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lecture 07 — Discrete latents: VQ-VAE and Gumbel-softmax
#
# The latent codes of every model so far were real vectors. Many things we would like a code to
# say are not: the class of a garment, whether a sleeve is present, which of a small set of stroke
# shapes appears in a patch. Discrete codes are also what a second, autoregressive model can be
# trained on afterwards, exactly as a language model is trained on words. This lecture makes the
# latent variable of a VAE **categorical**. The ELBO keeps its form, and with a uniform prior its
# KL term becomes a simple function of the encoder's entropy. The trouble is the gradient: a
# sample of a categorical distribution is a piecewise-constant function of its parameters, so the
# reparametrization trick of Lecture 02 does not apply as it stands. We study two ways around it.
# The **VQ-VAE** makes the posterior deterministic (the nearest vector of a learned codebook) and
# copies the gradient across the quantizer unchanged (the **straight-through** estimator). The
# **Gumbel-softmax** relaxation writes a categorical sample as the arg-max of noisy logits and
# replaces the arg-max by a softmax with a temperature, giving a differentiable and slightly
# biased sample.
#
# **What you will learn**
#
# - the ELBO with a categorical latent and its KL to a uniform prior, $\log K - H(q)$, checked
#   against `torch.distributions` and, on a model small enough to enumerate, against the exact
#   $\log p(x)$;
# - the **Gumbel-max trick** {cite:p}`maddison2017concrete,jang2017categorical`, derived and
#   verified by sample frequencies;
# - the **Gumbel-softmax** (Concrete) relaxation: what the temperature does, measured, and the
#   straight-through variant {cite:p}`bengio2013estimating`;
# - the **VQ-VAE** {cite:p}`oord2017neural`: the nearest-code search
#   (`dgmlib.kernels.vq_nearest`), the straight-through gradient, the codebook and commitment
#   losses and where their gradients go (autograd checks), and codebook usage;
# - a VQ-VAE and a **categorical VAE** trained on Fashion-MNIST, loaded from checkpoints, with
#   their stored test figures recomputed.
#
# **Prerequisites:** Lecture 01 (the ELBO and KL divergences), Lecture 02 (the VAE, the
# reparametrization trick, score-function gradients), Lecture 06 (the prior's role in the KL term).
#
# **Follows:** the part on discrete VAE latents in the course's lecture notes (lecture 7 of the
# *Deep Generative Models* slides: the discrete ELBO, the VQ-VAE's deterministic posterior and
# straight-through gradient, the Gumbel-max trick and the Gumbel-softmax relaxation). The
# derivations and checks below are worked out independently.

# %%
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import Categorical, RelaxedOneHotCategorical, kl_divergence

from dgmlib.checks import check_categorical_kl_uniform, check_gumbel_max_sample
from dgmlib.data import REPO_DATA_DIR, binarize_fixed, load_fashion_mnist
from dgmlib.kernels import vq_nearest
from dgmlib.models import VQVAE, CategoricalVAE, VectorQuantizer
from dgmlib.models.discrete import categorical_kl_uniform, codebook_usage, gumbel_softmax_sample
from dgmlib.plot import image_grid, use_style
from dgmlib.train import load_model
from dgmlib.utils import seed_everything

seed_everything(0, threads=1)  # one thread: small tensor operations are fastest and reproducible
use_style()
DT = torch.float64  # the checks run in double precision
CKPT = REPO_DATA_DIR / "checkpoints"  # the repository's data/checkpoints/


def fmt(v: float, digits: int = 4) -> str:
    """A number with `digits` significant digits (stable across runs), without a '-0'."""
    return f"{float(v) + 0.0:.{digits}g}"


# the test set binarized once with seed 0, as in the other lectures
test_images, test_labels = load_fashion_mnist("test")
x_test = binarize_fixed(test_images, seed=0).unsqueeze(1)  # [10000, 1, 28, 28]
print(f"test images: {len(x_test)}")

# %% [markdown]
# ## 1. A categorical latent and its ELBO
#
# Let the latent variable $c$ take one of $K$ values, with a uniform prior $p(c) = 1/K$, a
# decoder $p(\mathbf x\mid c)$ and an encoder $q(c\mid\mathbf x) = \operatorname{Cat}(\boldsymbol
# \pi(\mathbf x))$, $\boldsymbol\pi = \operatorname{softmax}(\boldsymbol\ell)$ for logits
# $\boldsymbol\ell(\mathbf x)$. Nothing in the derivation of the ELBO used continuity, so
#
# $$
# \log p(\mathbf x) = \underbrace{\sum_{k=1}^K q(k\mid\mathbf x)\log p(\mathbf x\mid k)
# - \mathrm{KL}\big(q(c\mid\mathbf x)\,\|\,p(c)\big)}_{\mathrm{ELBO}}
# + \mathrm{KL}\big(q(c\mid\mathbf x)\,\|\,p(c\mid\mathbf x)\big).
# $$
#
# With the uniform prior the KL term has a closed form in the encoder's probabilities alone:
#
# $$
# \mathrm{KL}\big(q\,\|\,\operatorname{Unif}_K\big) = \sum_k \pi_k \log\frac{\pi_k}{1/K}
# = \sum_k \pi_k\log\pi_k + \log K = \log K - H(\boldsymbol\pi).
# $$
#
# Entropy lies in $[0, \log K]$, so this KL lies in $[0, \log K]$: zero when the encoder is
# uniform (the code says nothing), $\log K$ when it is one-hot (the code is certain). For $L$
# independent categorical variables the terms add up, and the KL is at most $L\log K$ nats — a
# discrete code can never cost more than the number of bits needed to write it down. Computing it
# from `log_softmax` keeps $\pi_k\log\pi_k = 0$ where $\pi_k$ underflows to zero.
#
# **Check 1: the KL against `torch.distributions`, and the ELBO against an enumerated
# $\log p(\mathbf x)$.** First, random logits for $L = 6$ variables with $K = 5$ categories,
# compared with `kl_divergence(Categorical, Categorical)`, and the two extremes $0$ and $\log K$.
# Then a model small enough to enumerate: $K = 4$ codes, three binary pixels, a random table of
# Bernoulli means $p(x_i = 1\mid c)$. For every one of the 8 images, $\log p(\mathbf x) =
# \log\frac1K\sum_k p(\mathbf x\mid k)$ exactly. With $q$ equal to the true posterior the ELBO
# must equal $\log p(\mathbf x)$; with any other $q$ the gap must equal
# $\mathrm{KL}(q\,\|\,p(c\mid\mathbf x))$. Tolerance $10^{-12}$ (float64).

# %%
g = torch.Generator().manual_seed(1)
logits = 2.0 * torch.randn(6, 5, generator=g, dtype=DT)
uniform5 = Categorical(logits=torch.zeros(5, dtype=DT))
kl_ours = categorical_kl_uniform(logits)
kl_ref = kl_divergence(Categorical(logits=logits), uniform5)
print("KL(q || uniform), ours:              ", [fmt(v) for v in kl_ours])
print("KL(q || uniform), torch.distributions:", [fmt(v) for v in kl_ref])
extremes = categorical_kl_uniform(torch.tensor([[0.0] * 5, [900.0, 0, 0, 0, 0]], dtype=DT))
print(
    f"uniform q: {fmt(round(extremes[0].item(), 12))}   one-hot q: {fmt(extremes[1])}   log K = {fmt(math.log(5))}"
)
assert torch.allclose(kl_ours, kl_ref, atol=1e-12, rtol=0)
assert abs(extremes[0]) < 1e-12 and abs(extremes[1] - math.log(5)) < 1e-12

# the enumerable model: K = 4 codes, 3 binary pixels
K_toy = 4
means = torch.rand(K_toy, 3, generator=g, dtype=DT) * 0.9 + 0.05  # p(x_i = 1 | c = k)
xs = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=DT)] * 3)  # all 8 images
log_px_c = (xs[:, None] * means.log() + (1 - xs[:, None]) * (1 - means).log()).sum(-1)  # [8, K]
log_px = torch.logsumexp(log_px_c, 1) - math.log(K_toy)
log_post = log_px_c - torch.logsumexp(log_px_c, 1, keepdim=True)  # log p(c | x)


def discrete_elbo(q_logits: torch.Tensor) -> torch.Tensor:
    """sum_k q(k|x) log p(x|k) - KL(q || uniform) for every image: [8]."""
    q = torch.softmax(q_logits, -1)
    return (q * log_px_c).sum(-1) - categorical_kl_uniform(q_logits)


q_other = torch.randn(8, K_toy, generator=g, dtype=DT)
gap = log_px - discrete_elbo(q_other)
kl_to_post = kl_divergence(Categorical(logits=q_other), Categorical(logits=log_post))
print(f"sum over the 8 images of p(x): {fmt(log_px.exp().sum(), 6)}")
print(
    f"q = posterior:  max |ELBO - log p(x)| = {(discrete_elbo(log_post) - log_px).abs().max():.1e}"
)
print(f"random q:       gaps {[fmt(v, 3) for v in gap[:4]]} ...")
print(f"           KL(q || p(c|x)) {[fmt(v, 3) for v in kl_to_post[:4]]} ...")
assert abs(log_px.exp().sum() - 1) < 1e-12
assert (discrete_elbo(log_post) - log_px).abs().max() < 1e-12
assert (gap - kl_to_post).abs().max() < 1e-12 and (gap > 0).all()

# %% [markdown]
# **The gradient problem.** The expectation $\sum_k q(k\mid\mathbf x)\log p(\mathbf x\mid k)$
# can be summed exactly here, but with $L$ variables there are $K^L$ terms (for the model of
# §5, $10^{20}$), so it must be estimated from samples. A sample $c$ is an integer: it does not
# move when the logits move a little, and then jumps. The pathwise derivative is zero almost
# everywhere and says nothing. The score-function estimator of Lecture 02 is unbiased but noisy.
# The rest of the lecture builds two biased but useful pathwise alternatives.
#
# ## 2. Sampling a categorical by perturbing its logits: the Gumbel-max trick
#
# A **standard Gumbel** variable has distribution function $F(g) = \exp(-e^{-g})$; it is made
# from a uniform number by inverting $F$: $g = -\log(-\log u)$, $u\sim\operatorname{U}(0, 1)$.
# Its density is $f(g) = e^{-g}F(g)$.
#
# **Claim.** If $g_1,\dots,g_K$ are independent standard Gumbel and $\ell_k = \log\pi_k +
# \text{const}$, then $c = \arg\max_k(\ell_k + g_k)$ has $P(c = k) = \pi_k$.
#
# **Derivation.** Adding the same constant to all logits does not change the arg-max, so take
# $\ell_k = \log\pi_k$. The variable $m_k = \ell_k + g_k$ has distribution function
# $F(m - \ell_k) = \exp(-\pi_k e^{-m})$. Index $k$ wins when $m_j < m_k$ for every $j\neq k$;
# conditioning on $m_k = m$,
#
# $$
# P(c = k) = \int \underbrace{\pi_k e^{-m} \exp(-\pi_k e^{-m})}_{\text{density of } m_k}
# \prod_{j\ne k}\exp(-\pi_j e^{-m})\,dm
# = \int \pi_k e^{-m}\exp\big(-e^{-m}\textstyle\sum_j \pi_j\big)\,dm .
# $$
#
# With $\sum_j\pi_j = 1$ and the substitution $t = e^{-m}$ ($dt = -e^{-m}dm$) this is
# $\pi_k\int_0^\infty e^{-t}\,dt = \pi_k$. $\square$
#
# So sampling a categorical becomes a deterministic function of the logits and of noise that
# does not depend on them — the shape of a reparametrization. What is still missing is a
# useful derivative: the arg-max is piecewise constant.
#
# **Check 2: Gumbel-max frequencies match the softmax.** 200 000 draws by hand from
# `torch.rand` with $K = 6$ logits. Each frequency $\hat\pi_k$ has standard error
# $\sqrt{\pi_k(1-\pi_k)/n}$; we require every $|\hat\pi_k - \pi_k|$ within 4.5 standard errors,
# and a Pearson $\chi^2$ statistic below $20.5$ (the $0.999$ quantile of $\chi^2_5$).

# %%
n_draws = 200_000
logits6 = torch.tensor([1.5, 0.0, -1.0, 0.5, -2.0, 1.0], dtype=DT)
probs6 = torch.softmax(logits6, 0)
u = torch.rand(n_draws, 6, generator=g, dtype=DT)
gumbel = -torch.log(-torch.log(u))
c = (logits6 + gumbel).argmax(-1)  # the Gumbel-max sample
freq = torch.bincount(c, minlength=6).to(DT) / n_draws
se = (probs6 * (1 - probs6) / n_draws).sqrt()
chi2 = (n_draws * (freq - probs6) ** 2 / probs6).sum()
print("softmax(logits):  ", [f"{v:.4f}" for v in probs6])
print("Gumbel-max freq.: ", [f"{v:.4f}" for v in freq])
print(
    f"max |freq - p| / s.e. = {fmt(((freq - probs6).abs() / se).max(), 3)} (< 4.5),"
    f"  chi^2 = {fmt(chi2, 3)} (< 20.5)"
)
assert ((freq - probs6).abs() / se).max() < 4.5 and chi2 < 20.5
# the Gumbel noise itself: mean = Euler's constant 0.5772, variance pi^2 / 6 = 1.645
print(f"Gumbel noise: mean {gumbel.mean():.3f} (0.577), variance {gumbel.var():.3f} (1.645)")
assert abs(gumbel.mean() - 0.5772) < 0.01 and abs(gumbel.var() - math.pi**2 / 6) < 0.02

# %% [markdown]
# ## 3. The Gumbel-softmax relaxation and its temperature
#
# Replace the one-hot vector of the arg-max by a softmax of the same perturbed logits, sharpened
# by a **temperature** $\tau > 0$:
#
# $$
# \mathbf y = \operatorname{softmax}\big((\boldsymbol\ell + \mathbf g)/\tau\big),\qquad
# y_k = \frac{\exp((\ell_k + g_k)/\tau)}{\sum_j\exp((\ell_j + g_j)/\tau)} .
# $$
#
# $\mathbf y$ is a point of the probability simplex, a smooth function of the logits for fixed
# noise, so $\nabla_{\boldsymbol\ell} f(\mathbf y)$ exists and is an ordinary reparametrization
# gradient. Its distribution is the **Concrete** or **Gumbel-softmax** distribution
# (`torch.distributions.RelaxedOneHotCategorical`). Two limits, for fixed noise:
#
# - $\tau \to 0$: dividing by $\tau$ blows up the gaps between the perturbed logits, and the
#   softmax tends to the one-hot vector of their arg-max — *the* Gumbel-max sample. Gradients get
#   large and noisy.
# - $\tau \to\infty$: all exponents tend to 0, and $\mathbf y \to (1/K, \dots, 1/K)$, the centre
#   of the simplex, whatever the logits. Gradients are smooth but describe a different model.
#
# In between, the relaxed sample is not a category: a decoder trained on $\mathbf y$ is not quite
# the decoder of the discrete model, and the gradient is biased. One anneals $\tau$ from about 1
# towards 0.5 during training. For any $\tau$, the arg-max of $\mathbf y$ is an exact categorical
# sample (softmax preserves order).
#
# The **straight-through** variant uses the one-hot arg-max in the forward pass and the relaxed
# sample's gradient in the backward pass: $\mathbf y_{\text{hard}} = \operatorname{onehot}
# + (\mathbf y - \operatorname{sg}[\mathbf y])$, where $\operatorname{sg}$ stops the gradient
# (`.detach()`).
#
# **Check 3: the temperature, measured.** For $K = 5$ and 20 000 noise draws shared across
# temperatures we measure the mean largest coordinate $\mathbb E\max_k y_k$ (1 for a one-hot
# vector, $1/K$ at the centre) and the mean distance to the centre. At $\tau = 0.02$ the relaxed
# samples must be within $0.05$ of one-hot on average and have the same arg-max as the Gumbel-max
# samples; at $\tau = 1000$ they must lie within $10^{-2}$ of the centre. Our sampler and
# `RelaxedOneHotCategorical` must agree in mean within $0.015$ (about 4.5 standard errors of
# the difference of two means of 40 000 samples), and the
# straight-through gradient must equal the relaxed gradient exactly.

# %%
K5 = 5
logits5 = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5], dtype=DT)
g5 = -torch.log(-torch.log(torch.rand(20_000, K5, generator=g, dtype=DT)))
hard5 = (logits5 + g5).argmax(-1)
print(f"{'tau':>7s}  E max_k y_k   E |y - centre|")
taus = [0.02, 0.1, 0.5, 1.0, 2.0, 10.0, 1000.0]
max_coord = {}
for tau in taus:
    y = torch.softmax((logits5 + g5) / tau, -1)
    max_coord[tau] = y.max(-1).values.mean().item()
    dist = (y - 1 / K5).norm(dim=-1).mean().item()
    print(f"{tau:7g}  {max_coord[tau]:11.4f}   {dist:14.4f}")
    if tau == 0.02:
        assert max_coord[tau] > 0.95 and torch.equal(y.argmax(-1), hard5)
    if tau == 1000.0:
        assert dist < 1e-2
assert all(
    max_coord[a] > max_coord[b] for a, b in zip(taus, taus[1:], strict=False)
)  # sharper when colder

ours = gumbel_softmax_sample(logits5.expand(40_000, K5), 0.5, generator=g)
torch.manual_seed(3)
ref = RelaxedOneHotCategorical(torch.tensor(0.5, dtype=DT), logits=logits5).sample((40_000,))
print("mean sample, ours:                    ", [f"{v:.3f}" for v in ours.mean(0)])
print("mean sample, RelaxedOneHotCategorical:", [f"{v:.3f}" for v in ref.mean(0)])
assert (ours.mean(0) - ref.mean(0)).abs().max() < 0.015

# straight-through: one-hot forward, the relaxed sample's gradient backward
lg = logits5.clone().requires_grad_(True)
w = torch.randn(K5, generator=g, dtype=DT)
y_hard = gumbel_softmax_sample(lg, 0.5, hard=True, generator=torch.Generator().manual_seed(9))
(grad_hard,) = torch.autograd.grad((w * y_hard).sum(), lg)
y_soft = gumbel_softmax_sample(lg, 0.5, generator=torch.Generator().manual_seed(9))
(grad_soft,) = torch.autograd.grad((w * y_soft).sum(), lg)
print(
    f"hard sample {y_hard.detach().tolist()}; max |grad_hard - grad_soft| = "
    f"{(grad_hard - grad_soft).abs().max():.1e}"
)
assert set(y_hard.detach().tolist()) == {0.0, 1.0} and torch.equal(grad_hard, grad_soft)

# %% [markdown]
# The figure shows relaxed samples for $K = 3$ on the simplex (a triangle whose corners are the
# three one-hot vectors) at four temperatures: at low temperature they crowd into the corners, in
# proportions given by the probabilities; at high temperature they collapse to the centre.

# %%
logits3 = torch.tensor([1.0, 0.0, -0.5], dtype=DT)
g3 = -torch.log(-torch.log(torch.rand(1500, 3, generator=g, dtype=DT)))
corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for ax, tau in zip(axes, [0.1, 0.5, 1.0, 5.0], strict=True):
    y3 = torch.softmax((logits3 + g3) / tau, -1).numpy()
    xy = y3 @ corners  # barycentric coordinates -> the plane
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="0.3", lw=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.4, c=y3.argmax(1), cmap="viridis")
    for k, (cx, cy) in enumerate(corners):
        ax.annotate(
            f"c = {k + 1}",
            (cx, cy),
            ha="center",
            va="top" if cy == 0 else "bottom",
            xytext=(0, -4 if cy == 0 else 4),
            textcoords="offset points",
        )
    ax.set_title(f"tau = {tau}")
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.15, 1.0)
    ax.set_aspect("equal")
    ax.set_axis_off()
fig.suptitle(
    "Gumbel-softmax samples on the 3-category simplex, p = "
    + ", ".join(f"{v:.2f}" for v in torch.softmax(logits3, 0))
)
plt.show()

# %% [markdown]
# ## 4. The VQ-VAE: a deterministic posterior and straight-through gradients
#
# The VQ-VAE takes a different route: it removes the sampling. An encoder produces $P$ continuous
# vectors $\mathbf z_e^{(1)}, \dots, \mathbf z_e^{(P)} \in\mathbb R^D$ per image (one per
# position — for images, per patch of a feature map). A **codebook** $\mathbf e_1, \dots,
# \mathbf e_K\in\mathbb R^D$ is learned, and each vector is replaced by its nearest code:
#
# $$
# c^{(p)} = \arg\min_k \big\|\mathbf z_e^{(p)} - \mathbf e_k\big\|^2,\qquad
# \mathbf z_q^{(p)} = \mathbf e_{c^{(p)}} .
# $$
#
# Read as a posterior, $q(c^{(p)}\mid\mathbf x)$ is one-hot on the nearest code. With the uniform
# prior over $K$ codes, §1 gives $\mathrm{KL} = \log K - 0$ per position, a constant, so
#
# $$
# \mathrm{ELBO}(\mathbf x) = \log p(\mathbf x\mid\mathbf z_q) - P\log K .
# $$
#
# Only the reconstruction term is trained; the prior is fitted afterwards (in practice by an
# autoregressive model over the codes, which is what makes VQ-VAEs generative).
#
# **Straight-through.** $\mathbf z_q$ is piecewise constant in $\mathbf z_e$, so the chain rule
# gives the encoder nothing. The straight-through estimator pretends the quantizer is the
# identity in the backward pass,
# $\frac{\partial\log p(\mathbf x\mid\mathbf z_q)}{\partial\phi} \approx
# \frac{\partial\log p(\mathbf x\mid\mathbf z_q)}{\partial\mathbf z_q}
# \frac{\partial\mathbf z_e}{\partial\phi}$, implemented as
# $\mathbf z_q = \mathbf z_e + \operatorname{sg}[\mathbf e_c - \mathbf z_e]$: the value is
# $\mathbf e_c$, the Jacobian with respect to $\mathbf z_e$ is $I$. It is a good approximation
# when $\mathbf z_e$ lies close to its code, which the next two terms encourage.
#
# **Codebook and commitment losses.** The codes receive no gradient from the reconstruction
# term, so they are trained by their own loss; and the encoder must be kept from drifting away
# from the codes. The training loss per image is
#
# $$
# \mathcal L = -\log p(\mathbf x\mid\mathbf z_q)
# + \sum_p \big\|\operatorname{sg}[\mathbf z_e^{(p)}] - \mathbf e_{c^{(p)}}\big\|^2
# + \beta\sum_p \big\|\mathbf z_e^{(p)} - \operatorname{sg}[\mathbf e_{c^{(p)}}]\big\|^2 .
# $$
#
# The gradients follow from $\nabla_{\mathbf a}\|\mathbf a - \mathbf b\|^2 = 2(\mathbf a -
# \mathbf b)$ and the stop-gradients:
#
# - codebook term: $\nabla_{\mathbf e_k} = 2\sum_{p:\,c^{(p)} = k}(\mathbf e_k -
#   \mathbf z_e^{(p)})$, and nothing to the encoder;
# - commitment term: $\nabla_{\mathbf z_e^{(p)}} = 2\beta(\mathbf z_e^{(p)} - \mathbf
#   e_{c^{(p)}})$, and nothing to the codebook;
# - reconstruction term: the decoder and (straight through) the encoder, nothing to the codebook.
#
# A gradient step on the codebook term with step size $1/(2n_k)$, where $n_k$ vectors chose code
# $k$, moves $\mathbf e_k$ to $\mathbf e_k - \frac{1}{n_k}\sum_{p}(\mathbf e_k - \mathbf
# z_e^{(p)})$ = **the mean of its vectors**: the codebook loss is a gradient form of the
# $k$-means update. Like $k$-means it can leave codes that no vector chooses — **dead codes** —
# untouched forever; codebook usage is measured by the **perplexity**
# $\exp H(\hat p)$ of the empirical code frequencies $\hat p$ (1 if one code is used, $K$ if all
# are used equally).
#
# **Check 4: the nearest-code search, the straight-through Jacobian and the loss gradients.**
# (a) `vq_nearest` against `torch.cdist(...).argmin(1)` on 5000 vectors and 64 codes;
# (b) the gradient of $\sum \mathbf w\odot\mathbf z_q$ with respect to $\mathbf z_e$ equals
# $\mathbf w$ (Jacobian $I$), and the codebook gets none; (c) autograd gradients of the codebook
# and commitment terms against the formulas above, including which parameters get *no* gradient;
# (d) one step of size $1/(2n_k)$ moves every used code to the mean of its vectors. Float64,
# tolerance $10^{-12}$.

# %%
x_vq = torch.randn(5000, 8, generator=g, dtype=DT)
codebook = torch.randn(64, 8, generator=g, dtype=DT)
idx_fused, sq_fused = vq_nearest(x_vq, codebook)
idx_cdist = torch.cdist(x_vq, codebook).argmin(1)
sq_direct = (x_vq - codebook[idx_cdist]).square().sum(1)
print(
    f"(a) vq_nearest vs cdist().argmin: {int((idx_fused == idx_cdist).sum())} of 5000 agree, "
    f"max |d2 - d2_direct| = {(sq_fused - sq_direct).abs().max():.1e}"
)
assert torch.equal(idx_fused, idx_cdist) and (sq_fused - sq_direct).abs().max() < 1e-12

torch.manual_seed(0)
vq = VectorQuantizer(n_codes=6, code_dim=3, beta=0.25).to(DT)
with torch.no_grad():
    vq.codebook.copy_(torch.randn(6, 3, generator=g, dtype=DT))
z_e = torch.randn(40, 3, generator=g, dtype=DT, requires_grad=True)
out = vq(z_e)
e_sel = vq.codebook.detach()[out.indices]
w = torch.randn(40, 3, generator=g, dtype=DT)
grad_ze, grad_cb = torch.autograd.grad((w * out.z_q).sum(), [z_e, vq.codebook], allow_unused=True)
print(
    f"(b) straight-through: max |dL/dz_e - w| = {(grad_ze - w).abs().max():.1e}, "
    f"codebook gradient: {grad_cb}"
)
assert (out.z_q - e_sel).abs().max() < 1e-12  # the value is the code (up to rounding)
assert torch.equal(grad_ze, w) and grad_cb is None

gcb = torch.autograd.grad(out.codebook_loss.sum(), [z_e, vq.codebook], allow_unused=True)
gcm = torch.autograd.grad(out.commitment_loss.sum(), [z_e, vq.codebook], allow_unused=True)
derived_cb = torch.zeros(6, 3, dtype=DT).index_add_(0, out.indices, 2 * (e_sel - z_e.detach()))
derived_cm = 2 * vq.beta * (z_e.detach() - e_sel)
print(
    f"(c) codebook loss:   to encoder {gcb[0]}, to codebook max err "
    f"{(gcb[1] - derived_cb).abs().max():.1e}"
)
print(
    f"    commitment loss: to codebook {gcm[1]}, to encoder max err "
    f"{(gcm[0] - derived_cm).abs().max():.1e}"
)
assert gcb[0] is None and (gcb[1] - derived_cb).abs().max() < 1e-12
assert gcm[1] is None and (gcm[0] - derived_cm).abs().max() < 1e-12

counts = torch.bincount(out.indices, minlength=6).to(DT)
used = counts > 0
stepped = vq.codebook.detach() - gcb[1] / (2 * counts.clamp(min=1))[:, None]
means_k = torch.zeros(6, 3, dtype=DT).index_add_(0, out.indices, z_e.detach())
means_k = means_k / counts.clamp(min=1)[:, None]
print(
    f"(d) codes used {int(used.sum())} of 6; after one step, max |e_k - mean of its vectors| = "
    f"{(stepped[used] - means_k[used]).abs().max():.1e}"
)
assert (stepped[used] - means_k[used]).abs().max() < 1e-12
assert torch.equal(stepped[~used], vq.codebook.detach()[~used])  # dead codes do not move

# %% [markdown]
# ## 5. Two trained models
#
# `python tools/train_lecture07.py` (about 8 minutes on one CPU thread) trained two MLP models on
# the 60 000 dynamically binarized training images for 8 epochs each (Adam, batches of 100), and
# wrote `data/checkpoints/l07_vqvae.safetensors`, `l07_catvae.safetensors` and `l07_results.json`:
#
# - a **VQ-VAE** with $P = 16$ code vectors of size $D = 8$ per image and $K = 64$ codes
#   ($\beta = 0.25$), encoder 784-256-256-128, Bernoulli decoder 128-256-256-784;
# - a **categorical VAE** with $L = 20$ variables of $C = 10$ categories, encoder
#   784-256-256-200, Bernoulli decoder on the 200 relaxed one-hot values, trained with
#   Gumbel-softmax samples and the exact KL, the temperature annealed per epoch as
#   $\tau = \max(0.5, e^{-0.1\,\text{epoch}})$.
#
# Both codes hold at most $16\log 64 = 66.5$ and $20\log 10 = 46.1$ nats. We load both and
# recompute on the 10 000 test images the stored figures: the VQ-VAE's reconstruction NLL,
# its ELBO and its codebook usage, and the categorical VAE's ELBO of the *discrete* model (one
# exact categorical sample per image, so it is a true lower bound on $\log p(\mathbf x)$, not the
# relaxed training objective). Tolerance: $10^{-3}$ nats.

# %%
results = json.loads((CKPT / "l07_results.json").read_text())
stored = results["models"]
settings = results["settings"]
vqvae = VQVAE(**settings["vqvae"])
load_model(vqvae, CKPT / "l07_vqvae.safetensors")  # verifies the SHA-256 sidecar
catvae = CategoricalVAE(**settings["catvae"])
load_model(catvae, CKPT / "l07_catvae.safetensors")
vqvae.eval()
catvae.eval()

with torch.no_grad():
    nll_vq = vqvae.recon_nll(x_test).mean().item()
    codes_test = vqvae.codes(x_test)  # [10000, 16]
    counts_vq, perplexity_vq, used_vq = codebook_usage(codes_test, vqvae.n_codes)
    elbo_vq = -nll_vq - vqvae.n_positions * math.log(vqvae.n_codes)
    elbo_cat = (
        catvae.elbo(x_test, 1, generator=torch.Generator().manual_seed(settings["eval_seed"]))
        .mean()
        .item()
    )
    kl_cat = categorical_kl_uniform(catvae.logits(x_test)).sum(-1).mean().item()

rows = [
    ("VQ-VAE  -log p(x|z_q)", nll_vq, stored["vqvae"]["recon_nll"]),
    ("VQ-VAE  ELBO = -NLL - P log K", elbo_vq, stored["vqvae"]["elbo"]),
    ("VQ-VAE  perplexity of code use", perplexity_vq, stored["vqvae"]["perplexity"]),
    ("cat.VAE ELBO (discrete, 1 sample)", elbo_cat, stored["catvae"]["elbo"]),
    ("cat.VAE KL(q || uniform)", kl_cat, stored["catvae"]["kl"]),
]
print(f"{'':34s} {'recomputed':>11s} {'stored':>11s}")
for name, mine, theirs in rows:
    print(f"{name:34s} {fmt(mine, 5):>11s} {fmt(theirs, 5):>11s}")
    assert abs(mine - theirs) < 1e-3
print(f"VQ-VAE codes used: {used_vq} of {vqvae.n_codes} (stored {stored['vqvae']['codes_used']})")
assert used_vq == stored["vqvae"]["codes_used"]
assert counts_vq.tolist() == stored["vqvae"]["code_counts"]
assert kl_cat <= catvae.n_latent * math.log(catvae.n_categories)

# %% [markdown]
# On the test set the VQ-VAE reconstructs better ($-\log p(\mathbf x\mid\mathbf z_q) \approx 222$
# nats against about 245 for the categorical VAE): its code is richer and chosen
# deterministically, and it uses all 64 codes, with a perplexity of 55. But its ELBO pays the
# full $P\log K = 66.5$ nats for that code, whereas the categorical VAE's encoder stays close to
# its uniform prior and pays only about 12 of the 46.1 nats it could spend, so its ELBO is about
# 32 nats higher ($-257$ against $-289$). A VQ-VAE is not meant to keep the uniform prior: an
# autoregressive model fitted to its codes afterwards would recover much of the difference.
#
# The first figure shows test images, their reconstructions by the two models (decoded from the
# nearest codes, and from the most probable category of every variable), and images decoded from
# random prior codes of each model. The second shows how often each of the 64 codes is used on the
# test set.

# %%
sel = torch.cat([torch.nonzero(test_labels == k)[0] for k in range(10)])  # one image per class
g_prior = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(5, 1, figsize=(10, 6.6))
image_grid(x_test[sel], nrow=10, ax=axes[0], title="test images (binarized)")
image_grid(
    vqvae.reconstruct(x_test[sel]),
    nrow=10,
    ax=axes[1],
    title="VQ-VAE reconstructions (P = 16 codes of K = 64)",
)
image_grid(
    catvae.reconstruct(x_test[sel]),
    nrow=10,
    ax=axes[2],
    title="categorical VAE reconstructions (L = 20 variables, C = 10)",
)
random_codes = torch.randint(0, vqvae.n_codes, (10, vqvae.n_positions), generator=g_prior)
image_grid(
    vqvae.decode_codes(random_codes),
    nrow=10,
    ax=axes[3],
    title="VQ-VAE decoded from uniformly random codes (the prior is not learned)",
)
image_grid(
    catvae.sample(10, generator=g_prior),
    nrow=10,
    ax=axes[4],
    title="categorical VAE decoded from uniform prior samples",
)
plt.show()

order = torch.argsort(counts_vq, descending=True)
freq_vq = counts_vq[order].double() / counts_vq.sum()
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.bar(np.arange(vqvae.n_codes), freq_vq.numpy(), color="C0")
ax.axhline(1 / vqvae.n_codes, color="C3", ls="--", label=f"uniform use, 1/K = 1/{vqvae.n_codes}")
ax.set_xlabel("code, sorted by frequency")
ax.set_ylabel("fraction of test positions")
ax.set_title(
    f"VQ-VAE codebook usage on the test set: {used_vq} of {vqvae.n_codes} codes used, "
    f"perplexity {perplexity_vq:.1f}"
)
ax.legend()
plt.show()

# %% [markdown]
# ## 6. Exercises
#
# ### Exercise 1: the Gumbel-max trick
#
# Implement `my_gumbel_max_sample(logits, u)`: for logits of shape $[\dots, C]$ and uniform
# numbers `u` of the same shape, return the integer indices $\arg\max_c(\ell_c + g_c)$ with
# $g_c = -\log(-\log u_c)$, shape $[\dots]$. Then draw 100 000 samples for the logits
# `[0, 1, 2]` and compare their frequencies with the softmax.


# %%
def my_gumbel_max_sample(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    return (logits - torch.log(-torch.log(u))).argmax(-1)
    ### END SOLUTION


check_gumbel_max_sample(my_gumbel_max_sample)

# %%
ex_logits = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
ex_u = torch.rand(100_000, 3, generator=torch.Generator().manual_seed(5), dtype=DT)
ex_freq = torch.bincount(my_gumbel_max_sample(ex_logits, ex_u), minlength=3) / 100_000
print(
    "frequencies",
    [f"{v:.3f}" for v in ex_freq],
    " softmax",
    [f"{v:.3f}" for v in torch.softmax(ex_logits, 0)],
)

# %% [markdown]
# ### Exercise 2: the KL of a categorical encoder to the uniform prior
#
# Implement `my_categorical_kl_uniform(logits)`: for logits $[\dots, C]$ return
# $\mathrm{KL}(\operatorname{Cat}(\operatorname{softmax}(\boldsymbol\ell))\,\|\,
# \operatorname{Unif}_C)$ in nats, shape $[\dots]$, without NaN for one-hot encoders. Then use it
# to compute the average KL of the trained categorical VAE per latent variable on the test set,
# and compare with $\log 10$: which variables carry information?


# %%
def my_categorical_kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    log_q = torch.log_softmax(logits, dim=-1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])
    ### END SOLUTION


check_categorical_kl_uniform(my_categorical_kl_uniform)

# %%
with torch.no_grad():
    kl_per_var = my_categorical_kl_uniform(catvae.logits(x_test)).mean(0)
print("KL per latent variable (nats):", [f"{v:.2f}" for v in kl_per_var])
print(f"log C = {math.log(10):.3f}; total {kl_per_var.sum():.2f} nats")

# %% [markdown]
# **Further exercises (no check).**
#
# 1. Train the VQ-VAE of §5 for one epoch with $K = 512$ codes (use the training script's
#    functions with a smaller `N_TRAIN`) and measure the perplexity. How many codes die? Try
#    restarting each dead code at a random encoder output after every epoch.
# 2. Fit a prior to the VQ-VAE's codes: the empirical frequency of each code per position
#    ($16 \times 64$ numbers). How much does the ELBO improve over $-P\log K$ on the test set?
# 3. Estimate the gradient of $\mathbb E_{q}[f(c)]$ with respect to the logits for a simple $f$
#    by the score-function estimator, by Gumbel-softmax at $\tau \in\{0.1, 0.5, 1\}$ and exactly
#    (by enumeration). Plot bias and variance against $\tau$.
#
# ## Summary
#
# - With a categorical latent and a uniform prior, the ELBO keeps its form and its KL term is
#   $\log K - H(q)$, between 0 and $\log K$ per variable; checked against `torch.distributions`
#   and against the exact $\log p(\mathbf x)$ of an enumerable model.
# - Sampling a category is not differentiable. The **Gumbel-max trick** writes the sample as the
#   arg-max of the logits plus Gumbel noise (derived, and verified by frequencies); replacing the
#   arg-max by a softmax at temperature $\tau$ gives the **Gumbel-softmax** relaxation, one-hot
#   as $\tau\to 0$ and uniform as $\tau\to\infty$ (measured), with a biased reparametrization
#   gradient; the straight-through version decodes hard samples.
# - The **VQ-VAE** uses a deterministic nearest-code posterior (ELBO $= \log p(\mathbf x\mid
#   \mathbf z_q) - P\log K$), the straight-through gradient for the encoder, a codebook loss that
#   is a gradient form of $k$-means, and a commitment loss; where each gradient goes was checked
#   with autograd. Unused (dead) codes are measured by the perplexity.
# - Trained on Fashion-MNIST, the VQ-VAE (all 64 codes used, perplexity 55) reconstructs
#   better than the categorical VAE, but decoding uniformly random codes gives blends of garment
#   parts, and its ELBO pays the full $P\log K$; the categorical VAE keeps its encoder close to
#   the uniform prior (about 12 nats), has the higher ELBO, and decodes prior samples to blurry
#   but garment-like images. Both sets of figures were recomputed from the checkpoints.
#
# ## References
#
# - {cite}`oord2017neural` — the VQ-VAE: nearest-code posterior, codebook and commitment losses.
# - {cite}`jang2017categorical` — Gumbel-softmax and its straight-through variant.
# - {cite}`maddison2017concrete` — the Concrete distribution and the Gumbel-max trick.
# - {cite}`bengio2013estimating` — straight-through estimators for discrete units.
# - {cite}`rolfe2017discrete` — discrete VAEs.
# - {cite}`kingma2014auto` — the VAE.
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.
