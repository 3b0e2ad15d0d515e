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
# replaces the arg-max by a softmax with a temperature, giving a differentiable sample and a
# biased gradient; how biased, and at what price in variance, is measured at the end against an
# exact gradient.
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
#   their stored test figures recomputed;
# - the **bias and variance of the relaxed, straight-through and score-function gradients**
#   against the exact gradient by enumeration, as functions of $\tau$: the relaxed gradient is
#   unbiased for a relaxed objective, and its bias vanishes linearly as $\tau\to 0$ while its
#   variance grows like $1/\tau$; the straight-through gradient's bias does not vanish (its limit
#   is a trapezoid rule); the limits derived, and checked against $10^6$ samples.
#
# **Prerequisites:** Lecture 01 (the ELBO and KL divergences), Lecture 02 (the VAE, the
# reparametrization trick, score-function gradients), Lecture 06 (the prior's role in the KL term).
#
# **Follows:** the part on discrete VAE latents in the course's lecture notes (lecture 7 of the
# *Deep Generative Models* slides: the discrete ELBO, the VQ-VAE's deterministic posterior and
# straight-through gradient, the Gumbel-max trick and the Gumbel-softmax relaxation). The
# derivations and checks below are worked out independently.

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy import integrate, optimize, stats
from torch.distributions import Categorical, RelaxedOneHotCategorical, kl_divergence

from dgmlib import notebook_setup, pretrained, set_threads
from dgmlib.checks import check_categorical_kl_uniform, check_gumbel_max_sample
from dgmlib.data import binarize_fixed, load_fashion_mnist
from dgmlib.kernels import vq_nearest
from dgmlib.models import VectorQuantizer
from dgmlib.models.discrete import (
    categorical_kl_uniform,
    codebook_usage,
    gumbel_softmax_sample,
    sample_gumbel,
)
from dgmlib.plot import image_grid
from dgmlib.stats import fmt
from dgmlib.widgets import explore

DEVICE = notebook_setup(0)  # seeds, plot style; the trained models of section 5 run on DEVICE
set_threads(1)  # one thread: small tensor operations are fastest and reproducible
DT = torch.float64  # the checks run in double precision


def sig(v: float, digits: int = 2) -> str:
    """Like fmt, but never in e-notation: 76000, 0.00022 (Monte Carlo z-scores, variances)."""
    r = float(f"{float(v):.{digits}g}")
    return f"{r:.{max(digits - 1 - math.floor(math.log10(abs(r))), 0)}f}" if r else "0"


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
assert torch.allclose(kl_ours, kl_ref, atol=1e-12, rtol=0)
assert abs(extremes[0]) < 1e-12 and abs(extremes[1] - math.log(5)) < 1e-12
print(f"uniform q: |KL| below 1e-12   one-hot q: {fmt(extremes[1])}   log K = {fmt(math.log(5))}")

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
assert abs(log_px.exp().sum() - 1) < 1e-12
assert (discrete_elbo(log_post) - log_px).abs().max() < 1e-12
assert (gap - kl_to_post).abs().max() < 1e-12 and (gap > 0).all()
print(f"sum over the 8 images of p(x): {fmt(log_px.exp().sum(), 6)}")
print("q = posterior:  max |ELBO - log p(x)| below 1e-12")
print(f"random q:       gaps {[fmt(v, 3) for v in gap[:4]]} ...")
print(f"           KL(q || p(c|x)) {[fmt(v, 3) for v in kl_to_post[:4]]} ...")
print("                max |gap - KL(q || p(c|x))| over the 8 images below 1e-12")

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
# and a Pearson $\chi^2$ statistic below the $0.999$ quantile of $\chi^2_5$ (computed with
# `scipy.stats` and printed). The Gumbel noise itself must have mean $\gamma$ (Euler's constant)
# and variance $\pi^2/6$ within 4 standard errors; with $N$ draws these are
# $\sqrt{(\pi^2/6)/N}$ for the mean and $\frac{\pi^2}{6}\sqrt{(\kappa - 1)/N}$ for the sample
# variance, where $\kappa = 27/5$ is the kurtosis of the Gumbel distribution.

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
chi2_crit = stats.chi2.ppf(0.999, df=5)  # fixed before sampling
print(
    f"max |freq - p| / s.e. = {fmt(((freq - probs6).abs() / se).max(), 3)} (< 4.5),"
    f"  chi^2 = {fmt(chi2, 3)} (< {fmt(chi2_crit, 3)}, the 0.999 quantile of chi^2_5)"
)
assert ((freq - probs6).abs() / se).max() < 4.5 and chi2 < chi2_crit
# the Gumbel noise itself: mean = Euler's constant, variance pi^2 / 6, kurtosis 27 / 5
n_g, var_g = gumbel.numel(), math.pi**2 / 6
z_mean = (gumbel.mean() - np.euler_gamma) / math.sqrt(var_g / n_g)
z_var = (gumbel.var() - var_g) / (var_g * math.sqrt((27 / 5 - 1) / n_g))
print(
    f"Gumbel noise: mean {gumbel.mean():.3f} (gamma = {np.euler_gamma:.4f}, z = {z_mean:.1f}), "
    f"variance {gumbel.var():.3f} (pi^2/6 = {var_g:.4f}, z = {z_var:.1f})"
)
assert abs(z_mean) < 4 and abs(z_var) < 4

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
# the decoder of the discrete model, and the gradient is biased (§6 measures by how much). One
# anneals $\tau$ from about 1 towards 0.5 during training. For any $\tau$, the arg-max of $\mathbf y$ is an exact categorical
# sample (softmax preserves order).
#
# The **straight-through** variant uses the one-hot arg-max in the forward pass and the relaxed
# sample's gradient in the backward pass: $\mathbf y_{\text{hard}} = \operatorname{onehot}
# + (\mathbf y - \operatorname{sg}[\mathbf y])$, where $\operatorname{sg}$ stops the gradient
# (`.detach()`).
#
# **Check 3: the temperature, measured against the two limits.** For $K = 5$ and 20 000 noise
# draws shared across temperatures we measure the mean largest coordinate $\mathbb E\max_k y_k$
# (1 for a one-hot vector, $1/K$ at the centre) and the mean distance to the centre. How fast the
# samples approach a corner as $\tau\to 0$, and the centre as $\tau\to\infty$, can be computed
# without sampling.
#
# *Near $\tau = 0$.* Let $k$ be the winning index, $m_j = \ell_j + g_j$ the perturbed logits and
# $d_j = m_k - m_j > 0$ ($j\ne k$) the gaps. The integral of §2, with $m_j = m_k - x$ held fixed
# as well and $t = e^{-m_k}$ ($\int_0^\infty t e^{-ct}dt = 1/c^2$), gives the joint density
#
# $$
# P(c = k,\ d_j\in[x, x + \delta x]) = \frac{\pi_k\pi_j e^{x}}{\big(1 + \pi_j(e^{x} - 1)\big)^2}\,
# \delta x ,
# $$
#
# which equals $\pi_k\pi_j\,\delta x$ at $x = 0$. Write $e_j = e^{-d_j/\tau}$ and $S = \sum_{j\ne
# k} e_j$; then $1 - \max_k y_k = S/(1 + S)$, and since $e_j \le S$,
#
# $$
# \sum_{j\ne k}\frac{e_j}{1 + e_j} - \sum_{i\ne j}e_ie_j \;\le\; \frac{S}{1+S} \;\le\;
# \sum_{j\ne k}\frac{e_j}{1 + e_j} .
# $$
#
# The right side has the expectation $U(\tau) = \sum_k\sum_{j\ne k}\pi_k\pi_j\int_0^\infty
# \sigma(-x/\tau)\,e^{x}\big(1 + \pi_j(e^x - 1)\big)^{-2}dx$ ($\sigma$ the logistic function), one
# integral per pair, computed by quadrature. For the correction: given $k$ and $t$, the gaps are
# independent with densities $\pi_j t e^{x}\exp(-\pi_j t(e^x - 1)) \le \pi_j t e^{x}$, so
# $\mathbb E[e_j\mid t] \le \pi_j t\,\tau/(1-\tau)$; $t$ is exponential with $\mathbb E t^2 = 2$,
# and the correction is at most $\frac{2\tau^2}{(1-\tau)^2}\sum_k\pi_k\sum_{i\ne j;\ i,j\ne k}
# \pi_i\pi_j$. Both sides are $\tau\log 2\,(1 - \sum_k\pi_k^2) + O(\tau^2)$
# ($\int_0^\infty\sigma(-s)\,ds = \log 2$): the distance to one-hot shrinks linearly in $\tau$,
# with a slope set by the probability $1 - \sum_k\pi_k^2$ that two independent draws differ.
#
# *Near $\tau = \infty$.* Let $u_j = m_j - \bar m$ (the perturbed logits minus their mean), $j^*$
# the winner and $r = \max u - \min u$. As a function of $s = 1/\tau$,
# $f(s) = \operatorname{softmax}(s\mathbf u)_{j^*}$ has $f(0) = 1/K$, $f'(0) = u_{j^*}/K$ and
# $f'' = f\,[(u_{j^*} - \mathbb E u)^2 - \operatorname{Var}u]$ under $\operatorname{softmax}(s
# \mathbf u)$, with $f \le e^{sr}/K$; so $\max_k y_k = 1/K + u_{j^*}/(K\tau) + R$ with $|R| \le r^2e^{r/\tau}/(2K\tau^2)$.
# The largest perturbed logit is itself Gumbel, with location $\log\sum_j e^{\ell_j}$ (its
# distribution function is $\prod_j\exp(-e^{-(m-\ell_j)}) = \exp(-e^{-(m - \log\sum_j
# e^{\ell_j})})$), so $\mathbb E u_{j^*} = \log\sum_j e^{\ell_j} - \bar\ell$ exactly (the two
# Euler constants cancel): $(\mathbb E\max_k y_k - 1/K)\,K\tau \to \log\sum_j e^{\ell_j} - \bar
# \ell$.
#
# Tolerances, fixed in advance: at $\tau = 0.02$ the measured $1 - \mathbb E\max_k y_k$ must lie
# between the two bounds widened by 4 standard errors of the sample mean; at $\tau = 1000$ the
# measured $(\mathbb E\max_k y_k - 1/K)K\tau$ must match the limit within 4 standard errors plus
# the bound on $K\tau|R|$. At $\tau = 0.02$ the relaxed samples also have the arg-max of the
# Gumbel-max samples (a sanity line: the softmax preserves order).
#
# **Check 3b: the sampler against the Concrete density, sharp in $\tau$.** A change of variables
# from the Gumbel noise to $\mathbf y$ gives the density of the Gumbel-softmax distribution in
# closed form {cite:p}`maddison2017concrete,jang2017categorical`, with respect to the first
# $K - 1$ coordinates of the simplex:
#
# $$
# p_\tau(\mathbf y) = (K-1)!\,\tau^{K-1}\prod_{k=1}^K\frac{e^{\ell_k}\,y_k^{-\tau-1}}{\sum_j
# e^{\ell_j}y_j^{-\tau}} .
# $$
#
# We compare its logarithm with `RelaxedOneHotCategorical.log_prob` on our samples (float64;
# the terms are below $10^3$ in size, so round-off stays below $10^{-12}$; tolerance
# $10^{-10}$). Then we estimate $\tau$ from 40 000 samples by maximum likelihood with the logits
# held fixed. The score is $\partial_\tau\log p_\tau = (K-1)/\tau - \sum_k\log y_k +
# K\sum_j w_j\log y_j$ with $\mathbf w = \operatorname{softmax}(\boldsymbol\ell - \tau\log\mathbf
# y)$; its root is $\hat\tau$, and the standard error of $\hat\tau$ is $1/\sqrt{n\hat I}$ with the
# observed information $\hat I$, the sample mean of $(K-1)/\tau^2 + K\operatorname{Var}_{\mathbf
# w}(\log\mathbf y)$. For a correct sampler $z = (\hat\tau - \tau)/\text{s.e.}$ is close to
# standard normal, and we accept when $|z| < 4$ (the false-alarm probability is printed). We run
# the test on our sampler and on `RelaxedOneHotCategorical`, both at $\tau = 0.5$, and on our
# sampler called with $1.2\tau$ and $0.8\tau$ in place of $\tau$ — a sampler with a 20 % error in
# its temperature — which the test must reject. Finally the mean samples of the two samplers are
# compared coordinate by coordinate, in units of the standard error of their difference
# ($|z| < 4$), and the straight-through gradient must equal the relaxed gradient exactly.

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
        assert torch.equal(y.argmax(-1), hard5)  # sanity: the softmax preserves order

# near tau = 0: 1 - E max_k y_k between two bounds computed by quadrature (no sampling)
pi5 = torch.softmax(logits5, 0).tolist()
n5 = len(g5)


def gap_density(x: float, p: float) -> float:
    """p e^x / (1 + p (e^x - 1))^2, written to stay finite for large x."""
    return p * math.exp(-x) / (p + (1 - p) * math.exp(-x)) ** 2


def one_hot_bounds(tau: float) -> tuple[float, float]:
    """Lower and upper bound on 1 - E max_k y_k (tau < 1)."""
    upper = 0.0
    for p_j in pi5:
        # tau * int_0^inf sigma(-s) h_j(tau s) ds; sigma(-s) < 1e-26 beyond s = 60
        integral = integrate.quad(
            lambda s, p=p_j: gap_density(tau * s, p) / (1 + math.exp(s)), 0, 60, epsabs=1e-14
        )[0]
        upper += (1 - p_j) * tau * integral  # sum over k != j of pi_k = 1 - pi_j
    pairs = sum(
        pi5[k] * pi5[i] * pi5[j]
        for k in range(K5)
        for i in range(K5)
        for j in range(K5)
        if len({i, j, k}) == 3
    )
    return upper - 2 * tau**2 / (1 - tau) ** 2 * pairs, upper


tau_lo = 0.02
gap_lo = 1 - torch.softmax((logits5 + g5) / tau_lo, -1).max(-1).values
se_lo = gap_lo.std().item() / math.sqrt(n5)
lower_lo, upper_lo = one_hot_bounds(tau_lo)
first_order = tau_lo * math.log(2) * (1 - sum(p * p for p in pi5))
print(
    f"tau = {tau_lo}: 1 - E max_k y_k = {gap_lo.mean():.5f} +- {se_lo:.5f} (s.e.); bounds "
    f"[{lower_lo:.5f}, {upper_lo:.5f}]; first order tau log 2 (1 - sum pi^2) = {first_order:.5f}"
)
assert lower_lo - 4 * se_lo < gap_lo.mean() < upper_lo + 4 * se_lo

# near tau = infinity: (E max_k y_k - 1/K) K tau -> logsumexp(logits) - mean(logits)
tau_hi = 1000.0
u5 = (logits5 + g5) - (logits5 + g5).mean(-1, keepdim=True)
slope = (torch.softmax(u5 / tau_hi, -1).max(-1).values - 1 / K5) * K5 * tau_hi
r5 = u5.max(-1).values - u5.min(-1).values
remainder = (r5**2 * torch.exp(r5 / tau_hi) / (2 * tau_hi)).mean().item()  # bound on K tau |R|
se_hi = slope.std().item() / math.sqrt(n5)
slope_limit = (torch.logsumexp(logits5, 0) - logits5.mean()).item()
print(
    f"tau = {tau_hi:g}: (E max_k y_k - 1/K) K tau = {slope.mean():.4f} +- {se_hi:.4f} (s.e.); "
    f"limit log sum exp(l) - mean(l) = {slope_limit:.4f}; remainder bound {remainder:.4f}"
)
assert abs(slope.mean() - slope_limit) < 4 * se_hi + remainder

ours = gumbel_softmax_sample(logits5.expand(40_000, K5), 0.5, generator=g)
torch.manual_seed(3)
ref = RelaxedOneHotCategorical(torch.tensor(0.5, dtype=DT), logits=logits5).sample((40_000,))


def concrete_log_density(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log p_tau(y) of the Concrete distribution, by the closed form: [n]."""
    k, log_y = y.shape[-1], y.log()
    return (
        math.lgamma(k)
        + (k - 1) * math.log(tau)
        + (logits - (tau + 1) * log_y).sum(-1)
        - k * torch.logsumexp(logits - tau * log_y, -1)
    )


def fit_tau(y: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    """Maximum-likelihood temperature for samples y [n, K] and its standard error."""
    k, log_y = y.shape[-1], y.log()

    def score_and_info(tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.softmax(logits - tau * log_y, -1)
        mean_w = (w * log_y).sum(-1)
        score = (k - 1) / tau - log_y.sum(-1) + k * mean_w
        info = (k - 1) / tau**2 + k * ((w * log_y**2).sum(-1) - mean_w**2)
        return score, info

    tau_hat = optimize.brentq(lambda t: score_and_info(t)[0].mean().item(), 0.05, 5.0, xtol=1e-10)
    return tau_hat, 1 / math.sqrt(len(y) * score_and_info(tau_hat)[1].mean().item())


lp_ref = RelaxedOneHotCategorical(torch.tensor(0.5, dtype=DT), logits=logits5).log_prob(ours)
assert (concrete_log_density(ours, logits5, 0.5) - lp_ref).abs().max() < 1e-10
print("closed-form Concrete log-density vs RelaxedOneHotCategorical.log_prob: max diff below 1e-10")
print(f"MLE of tau, n = 40000, accept if |z| < 4 (false alarm {2 * stats.norm.sf(4):.1e}):")
tests = [
    ("ours, tau = 0.5", ours, True),
    ("RelaxedOneHotCategorical, tau = 0.5", ref, True),
]
for factor, seed in [(1.2, 11), (0.8, 12)]:
    wrong = gumbel_softmax_sample(
        logits5.expand(40_000, K5), 0.5 * factor, generator=torch.Generator().manual_seed(seed)
    )
    tests.append((f"ours called with tau x {factor} = {0.5 * factor:.1f}", wrong, False))
for name, samples, should_pass in tests:
    tau_hat, se_tau = fit_tau(samples, logits5)
    z = (tau_hat - 0.5) / se_tau
    print(
        f"  {name:36s} tau_hat = {tau_hat:.4f} +- {se_tau:.4f}   z = {z:6.1f}   "
        + ("accepted" if abs(z) < 4 else "rejected")
    )
    assert (abs(z) < 4) == should_pass

se_diff = (ours.var(0) / len(ours) + ref.var(0) / len(ref)).sqrt()
z_diff = (ours.mean(0) - ref.mean(0)) / se_diff
print("mean sample, ours:                    ", [f"{v:.3f}" for v in ours.mean(0)])
print("mean sample, RelaxedOneHotCategorical:", [f"{v:.3f}" for v in ref.mean(0)])
print("difference / s.e. of the difference:  ", [f"{v:.1f}" for v in z_diff])
assert z_diff.abs().max() < 4

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


def draw_simplex(ax, y3: np.ndarray, title: str) -> None:
    """Points y3 [n, 3] of the simplex as a triangle (barycentric coordinates), coloured by
    their arg-max."""
    xy = y3 @ corners  # barycentric coordinates -> the plane
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="0.3", lw=1)
    ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.4, c=y3.argmax(1), cmap="viridis", vmin=0, vmax=2)
    for k, (cx, cy) in enumerate(corners):
        ax.annotate(
            f"c = {k + 1}",
            (cx, cy),
            ha="center",
            va="top" if cy == 0 else "bottom",
            xytext=(0, -4 if cy == 0 else 4),
            textcoords="offset points",
        )
    ax.set(xlim=(-0.15, 1.15), ylim=(-0.15, 1.0), aspect="equal", title=title)
    ax.set_axis_off()


fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for ax, tau in zip(axes, [0.1, 0.5, 1.0, 5.0], strict=True):
    draw_simplex(ax, torch.softmax((logits3 + g3) / tau, -1).numpy(), f"tau = {tau}")
fig.suptitle(
    "Gumbel-softmax samples on the 3-category simplex, p = "
    + ", ".join(f"{v:.2f}" for v in torch.softmax(logits3, 0))
)
plt.show()

# %% [markdown]
# **Explore: the temperature.** Move the slider $\tau$ (logarithmic, from about 1/20 to 20) and
# watch the same 1500 noise draws: on the left, the relaxed samples $\mathbf y$ on the simplex,
# coloured by their arg-max (an exact categorical sample at every $\tau$); on the right, the mean of
# each coordinate $\mathbb E y_k$ beside the probabilities $\pi_k$. At small $\tau$ the points sit
# in the corners and the means are the probabilities: a decoder that is linear in $\mathbf y$ sees
# the discrete model. As $\tau$ grows the points leave the corners for the centre, and the means
# drift to $1/K$: the relaxed model forgets the encoder's probabilities, while the colours (the
# arg-max) do not change.

# %%
pi3 = torch.softmax(logits3, 0).numpy()
g3_explore = sample_gumbel((1500, 3), torch.Generator().manual_seed(30), DT)  # fixed noise


def draw_temperature(axes: np.ndarray, tau: float) -> None:
    """Relaxed samples at temperature tau on the simplex, and their mean coordinates."""
    y3 = torch.softmax((logits3 + g3_explore) / tau, -1).numpy()
    draw_simplex(axes[0], y3, f"relaxed samples, tau = {tau:.2f}")
    ks = np.arange(3)
    axes[1].bar(ks - 0.2, pi3, width=0.4, color="0.7", label="π_k (the categorical)")
    axes[1].bar(ks + 0.2, y3.mean(0), width=0.4, color="C0", label="E y_k (relaxed)")
    axes[1].axhline(1 / 3, color="k", ls=":", lw=1, label="1/K (the centre)")
    axes[1].set(
        xticks=ks,
        xticklabels=[f"c = {k + 1}" for k in ks],
        ylim=(0, 0.75),
        ylabel="probability / mean coordinate",
        title="mean of the relaxed sample",
    )
    axes[1].legend(loc="upper right")


explore(
    draw_temperature,
    ncols=2,
    figsize=(10, 3.8),
    tau=widgets.FloatLogSlider(value=0.5, base=10, min=-1.3, max=1.3, step=0.05, description="tau"),
)

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
assert torch.equal(idx_fused, idx_cdist) and (sq_fused - sq_direct).abs().max() < 1e-12
print(
    f"(a) vq_nearest vs cdist().argmin: {int((idx_fused == idx_cdist).sum())} of 5000 agree, "
    "max |d2 - d2_direct| below 1e-12"
)

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
assert gcb[0] is None and (gcb[1] - derived_cb).abs().max() < 1e-12
assert gcm[1] is None and (gcm[0] - derived_cm).abs().max() < 1e-12
print(f"(c) codebook loss:   to encoder {gcb[0]}, to codebook max err below 1e-12")
print(f"    commitment loss: to codebook {gcm[1]}, to encoder max err below 1e-12")

counts = torch.bincount(out.indices, minlength=6).to(DT)
used = counts > 0
stepped = vq.codebook.detach() - gcb[1] / (2 * counts.clamp(min=1))[:, None]
means_k = torch.zeros(6, 3, dtype=DT).index_add_(0, out.indices, z_e.detach())
means_k = means_k / counts.clamp(min=1)[:, None]
assert (stepped[used] - means_k[used]).abs().max() < 1e-12
assert torch.equal(stepped[~used], vq.codebook.detach()[~used])  # dead codes do not move
print(
    f"(d) codes used {int(used.sum())} of 6; after one step, max |e_k - mean of its vectors| "
    "below 1e-12; the unused code has not moved"
)

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
# The two codes hold at most $P\log K$ and $L\log C$ nats (printed below). We load both models by
# name (`dgmlib.pretrained.load` rebuilds each from the build spec stored with its weights and
# verifies its SHA-256) and recompute on the 10 000 test images the stored figures: the VQ-VAE's
# reconstruction NLL, its ELBO and its codebook usage, and the categorical VAE's KL and the ELBO of
# its *discrete* model, not the relaxed training objective. That ELBO is estimated with one exact
# categorical sample per image: an unbiased estimate of the discrete model's ELBO, which is a lower
# bound on $\log p(\mathbf x)$ (a single image's estimate can exceed its $\log p(\mathbf x)$; the
# bound holds in expectation). Its Monte Carlo standard error on the test-set mean is estimated from
# a second, independent sample per image: for two draws $a_i, b_i$, $(a_i - b_i)^2/2$ is an unbiased
# estimate of the variance of either. Recomputed and stored figures come from the same float32 code,
# whose round-off in sums of 784 pixel terms is of relative order $10^{-6}$, a few $10^{-4}$ nats
# here: tolerance $10^{-3}$ nats. The KL is also recomputed independently with `torch.distributions`
# in float64; float32 round-off in the 200 terms per image stays below $10^{-4}$ nats, the
# tolerance.

# %%
results = pretrained.results("l07")  # made by tools/train_lecture07.py
stored = {name: model["test"] for name, model in results["models"].items()}  # test figures
settings = results["settings"]
vqvae = pretrained.load("l07_vqvae", device=DEVICE)  # rebuilt from its spec, SHA-256 verified
catvae = pretrained.load("l07_catvae", device=DEVICE)
x_dev = x_test.to(DEVICE)

with torch.no_grad():
    nll_vq = -vqvae.log_px_z(x_dev).mean().item()
    codes_test = vqvae.codes(x_dev).cpu()  # [10000, 16]
    counts_vq, perplexity_vq, used_vq = codebook_usage(codes_test, vqvae.n_codes)
    elbo_vq = -nll_vq - vqvae.kl  # the KL of the deterministic posterior: P log K
    elbo_cat_i = catvae.elbo(
        x_dev, 1, generator=torch.Generator(DEVICE).manual_seed(settings["eval_seed"])
    ).cpu()
    elbo_cat = elbo_cat_i.mean().item()
    # a second, independent sample per image for the Monte Carlo standard error
    elbo_cat_b = catvae.elbo(
        x_dev, 1, generator=torch.Generator(DEVICE).manual_seed(settings["eval_seed"] + 1)
    ).cpu()
    se_cat = ((elbo_cat_i - elbo_cat_b).double().square().mean() / 2 / len(x_test)).sqrt().item()
    logits_cat = catvae.logits(x_dev).cpu()
    kl_cat = categorical_kl_uniform(logits_cat).sum(-1).mean().item()
    uniform10 = Categorical(logits=torch.zeros(catvae.n_categories, dtype=DT))
    kl_cat_ref = kl_divergence(Categorical(logits=logits_cat.double()), uniform10).sum(-1).mean()

rows = [
    ("VQ-VAE  -log p(x|z_q)", nll_vq, -stored["vqvae"]["log_px_z"]),
    ("VQ-VAE  ELBO = -NLL - P log K", elbo_vq, stored["vqvae"]["elbo"]),
    ("VQ-VAE  perplexity of code use", perplexity_vq, stored["vqvae"]["perplexity"]),
    ("cat.VAE ELBO (discrete, 1 sample)", elbo_cat, stored["catvae"]["elbo"]),
    ("cat.VAE KL(q || uniform)", kl_cat, stored["catvae"]["kl"]),
    ("cat.VAE -log p(x|c) = -ELBO - KL", -elbo_cat - kl_cat, -stored["catvae"]["log_px_z"]),
]
print(f"{'':34s} {'recomputed':>11s} {'stored':>11s}")
for name, mine, theirs in rows:
    print(f"{name:34s} {fmt(mine, 5):>11s} {fmt(theirs, 5):>11s}")
    assert abs(mine - theirs) < 1e-3
print(f"VQ-VAE codes used: {used_vq} of {vqvae.n_codes} (stored {stored['vqvae']['codes_used']})")
assert used_vq == stored["vqvae"]["codes_used"]
assert counts_vq.tolist() == stored["vqvae"]["code_counts"]
assert abs(kl_cat - kl_cat_ref) < 1e-4
print(f"cat.VAE KL by torch.distributions (float64): {kl_cat_ref:.3f} (|difference| below 1e-4)")
print(
    f"code capacity: P log K = {vqvae.n_positions} log {vqvae.n_codes} = "
    f"{vqvae.n_positions * math.log(vqvae.n_codes):.3f} nats, L log C = {catvae.n_latent} log "
    f"{catvae.n_categories} = {catvae.n_latent * math.log(catvae.n_categories):.3f} nats"
)
print(
    f"cat.VAE ELBO - VQ-VAE ELBO = {elbo_cat - elbo_vq:.1f} nats; Monte Carlo s.e. of the "
    f"one-sample ELBO on the test set: {se_cat:.2f} nats (the VQ-VAE's ELBO is deterministic)"
)

# %% [markdown]
# On the test set the VQ-VAE reconstructs better ($-\log p(\mathbf x\mid\mathbf z_q) \approx 222$
# nats against about 245 for the categorical VAE): its code is richer and chosen
# deterministically, and it uses all 64 codes, with a perplexity of 55. But its ELBO pays the
# full $P\log K = 66.5$ nats for that code, whereas the categorical VAE's encoder stays close to
# its uniform prior and pays only about 12 of the 46.1 nats it could spend, so its ELBO is about
# 32 nats higher ($-257$ against $-289$), far beyond the Monte Carlo standard error of its
# one-sample estimate. A VQ-VAE is not meant to keep the uniform prior: an
# autoregressive model fitted to its codes afterwards would recover much of the difference.
#
# The first figure shows test images, their reconstructions by the two models (decoded from the
# nearest codes, and from the most probable category of every variable), and images decoded from
# random prior codes of each model. The second shows how often each of the 64 codes is used on the
# test set.

# %%
sel = torch.cat([torch.nonzero(test_labels == k)[0] for k in range(10)])  # one image per class
g_prior = torch.Generator(DEVICE).manual_seed(0)
fig, axes = plt.subplots(5, 1, figsize=(10, 6.6))
image_grid(x_test[sel], nrow=10, ax=axes[0], title="test images (binarized)")
image_grid(
    vqvae.reconstruct(x_dev[sel]),
    nrow=10,
    ax=axes[1],
    title="VQ-VAE reconstructions (P = 16 codes of K = 64)",
)
image_grid(
    catvae.reconstruct(x_dev[sel]),
    nrow=10,
    ax=axes[2],
    title="categorical VAE reconstructions (L = 20 variables, C = 10)",
)
image_grid(
    vqvae.sample(10, generator=g_prior, mean=True),
    nrow=10,
    ax=axes[3],
    title="VQ-VAE decoded from uniformly random codes (the prior is not learned)",
)
image_grid(
    catvae.sample(10, generator=g_prior, mean=True),
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
# ## 6. How biased is the Gumbel-softmax gradient?
#
# §3 called the relaxed gradient biased, and §5 trained a model with it anyway. Here the bias is
# measured, together with the variance that comes with it, against the exact gradient of a model
# small enough to enumerate, and derived in the limit $\tau\to 0$.
#
# **The model.** One categorical variable with $K = 4$ categories, logits $\boldsymbol\theta$,
# $\boldsymbol\pi = \operatorname{softmax}(\boldsymbol\theta)$, and the objective
#
# $$
# f(\boldsymbol\theta) = \mathbb E_{c\sim\operatorname{Cat}(\boldsymbol\pi)}\, g(\mathbf e_c)
# = \sum_{k=1}^K \pi_k\, g(\mathbf e_k),\qquad
# \frac{\partial f}{\partial\theta_j} = \pi_j\big(g(\mathbf e_j) - f\big)
# $$
#
# (from $\partial\pi_k/\partial\theta_j = \pi_k(\delta_{kj} - \pi_j)$). For $g$ we take the
# reconstruction term of a discrete VAE: the log-likelihood $\log p(\mathbf x\mid\mathbf y)$ of
# a fixed binary image $\mathbf x$ of 6 pixels under a fixed decoder with Bernoulli means
# $\sigma(\mathbf y W + \mathbf b)$, the entries of $W$ of size about 3 so that the sigmoids
# saturate. It is defined at every point $\mathbf y$ of the simplex, not only at the vertices
# $\mathbf e_k$, so a relaxed sample can be decoded.
#
# **Three estimators from one draw** of Gumbel noise $\mathbf G$, with $\mathbf y =
# \operatorname{softmax}((\boldsymbol\theta + \mathbf G)/\tau)$ and $\mathbf h = \mathbf e_c$,
# $c = \arg\max_k(\theta_k + G_k)$, an exact categorical sample (§2). The Jacobian of the
# softmax is $\partial\mathbf y/\partial\boldsymbol\theta = (\operatorname{diag}\mathbf y -
# \mathbf y\mathbf y^\top)/\tau$.
#
# - (a) **relaxed**: $\hat{\mathbf g}_R = \nabla_{\boldsymbol\theta}\, g(\mathbf y) =
#   \tau^{-1}(\operatorname{diag}\mathbf y - \mathbf y\mathbf y^\top)\nabla g(\mathbf y)$;
# - (b) **straight-through**: $\hat{\mathbf g}_{ST} = \tau^{-1}(\operatorname{diag}\mathbf y -
#   \mathbf y\mathbf y^\top)\nabla g(\mathbf h)$, the derivative of $g$ at the hard sample pulled
#   back through the Jacobian of the relaxed one;
# - (c) **score function** {cite:p}`williams1992simple,mohamed2020monte`: $\hat{\mathbf g}_{SF} =
#   g(\mathbf h)(\mathbf h - \boldsymbol\pi)$, from $\nabla_{\boldsymbol\theta}\log\pi_c =
#   \mathbf e_c - \boldsymbol\pi$. Its mean is $\sum_k\pi_k g(\mathbf e_k)(\mathbf e_k -
#   \boldsymbol\pi) = \nabla f$: unbiased, and independent of $\tau$.
#
# **What the relaxed estimator is unbiased for.** For fixed $\tau$, $\hat{\mathbf g}_R$ is
# bounded (by $\max|\nabla g|/\tau$), so derivative and expectation can be exchanged:
# $\mathbb E\,\hat{\mathbf g}_R = \nabla f_\tau$, the gradient of the **relaxed objective**
# $f_\tau(\boldsymbol\theta) = \mathbb E_{\mathbf G}\, g(\mathbf y_\tau)$. The bias is
# $\nabla f_\tau - \nabla f$, the gradient of the difference between two objectives, and
# $f_\tau\ne f$ as soon as the relaxed samples are not vertices.
#
# **As $\tau\to 0$ the relaxed bias vanishes.** Move $\boldsymbol\theta$ from the sample into the
# density: with $\mathbf v = \boldsymbol\theta + \mathbf G$, $f_\tau(\boldsymbol\theta) = \int
# g(\operatorname{softmax}(\mathbf v/\tau))\,p(\mathbf v - \boldsymbol\theta)\,d\mathbf v$, where
# $p(\mathbf u) = \prod_k\exp(-u_k - e^{-u_k})$ is the Gumbel density. Since
# $-\partial_{u_k}\log p = 1 - e^{-u_k}$, differentiating under the integral gives
#
# $$
# \nabla f_\tau(\boldsymbol\theta) = \mathbb E\big[g(\mathbf y_\tau)\,(1 - e^{-\mathbf G})\big]
# \qquad\text{(coordinate by coordinate)},
# $$
#
# an identity that uses no derivative of $g$ and holds at $\tau = 0$ too, with $\mathbf h$ in
# place of $\mathbf y_\tau$. As $\tau\to 0$, $\mathbf y_\tau\to\mathbf h$ for almost every
# $\mathbf G$; $g$ is bounded and continuous on the simplex and $|1 - e^{-G_k}|$ is integrable
# ($e^{-G_k}$ is exponentially distributed), so by dominated convergence $\nabla f_\tau\to\nabla
# f$. For any $g$ continuous on the simplex, the mean of the relaxed gradient converges to the
# true gradient: "the gradient estimate is biased" holds at every fixed $\tau > 0$, not in the
# limit. What does not converge is shown next.
#
# **Rates and limits, from the edges of the simplex.** For small $\tau$, $\mathbf y$ is far from a
# vertex only when the two largest perturbed logits $m_k, m_j$ are within $O(\tau)$ of each
# other; then, up to exponentially small terms, $\mathbf y$ lies on the edge $\mathbf y = t\,
# \mathbf e_j + (1 - t)\,\mathbf e_k$ with $t = \sigma(x/\tau)$ and the gap $x = m_j - m_k$. By the
# joint density of §3, $x$ has density $\pi_k\pi_j$ near 0. On the edge
# $(\operatorname{diag}\mathbf y - \mathbf y\mathbf y^\top)\mathbf v = t(1 - t)(v_j - v_k)
# (\mathbf e_j - \mathbf e_k)$, so $\hat{\mathbf g}_R = \tau^{-1}\sigma'(x/\tau)\,D_{kj}(t)\,
# (\mathbf e_j - \mathbf e_k)$, where $D_{kj}(t) = \partial_j g - \partial_k g$ at the edge point is
# the derivative of $g$ along the edge. Substituting $x = \tau s$, $t = \sigma(s)$, $dt =
# \sigma'(s)\,ds$, $\sigma' = t(1 - t)$:
#
# - **relaxed mean** $\to\sum_{k<j}\pi_k\pi_j\int_0^1 D_{kj}(t)\,dt\,(\mathbf e_j - \mathbf e_k) =
#   \sum_{k<j}\pi_k\pi_j\big(g(\mathbf e_j) - g(\mathbf e_k)\big)(\mathbf e_j - \mathbf e_k) =
#   \nabla f$: the fundamental theorem of calculus on every edge;
# - **straight-through mean**: $\nabla g$ is taken at the vertex, $\mathbf e_k$ for $t < 1/2$ and
#   $\mathbf e_j$ for $t > 1/2$, so the limit is $\sum_{k<j}\pi_k\pi_j\,\tfrac12\big(D_{kj}(0) +
#   D_{kj}(1)\big)(\mathbf e_j - \mathbf e_k)$ — the **trapezoid rule** for the same integrals. It
#   is exact when $g$ is quadratic along every edge ($D_{kj}$ linear); for the saturating decoder
#   it is not, and **the straight-through gradient stays biased as $\tau\to 0$**;
# - **variance**: $\mathbb E|\hat{\mathbf g}_R|^2 \approx \sum_{k<j}\pi_k\pi_j\int\tau^{-2}
#   \sigma'(x/\tau)^2 D_{kj}^2\,|\mathbf e_j - \mathbf e_k|^2\,dx$, so $\operatorname{tr}\operatorname
#   {Cov}\approx V/\tau$ with $V_R = 2\sum_{k<j}\pi_k\pi_j\int_0^1 t(1 - t)\,D_{kj}(t)^2\,dt$ and,
#   from $\int_{1/2}^1 t(1 - t)\,dt = 1/12$, $V_{ST} = 2\sum_{k<j}\pi_k\pi_j\big(D_{kj}(0)^2 +
#   D_{kj}(1)^2\big)/12$: **both variances grow like $1/\tau$**;
# - **relaxed objective**: $f_\tau = f + \tau A + O(\tau^2)$ with $A = \sum_{k<j}\pi_k\pi_j
#   I_{kj}$ and $I_{kj} = \int_{-\infty}^{\infty}\big[g(\mathbf y(s)) - g(\text{nearest vertex})
#   \big]ds = \int_0^1\big[g(t\mathbf e_j + (1 - t)\mathbf e_k) - g(\text{nearest vertex})\big]
#   \frac{dt}{t(1 - t)}$. $I_{kj}$ does not depend on $\boldsymbol\theta$, so with
#   $\nabla_{\boldsymbol\theta}(\pi_k\pi_j) = \pi_k\pi_j(\mathbf e_k + \mathbf e_j -
#   2\boldsymbol\pi)$ the **relaxed bias is $\tau\nabla A + O(\tau^2)$**: it vanishes linearly.
#
# The neglected terms — three logits within $O(\tau)$ of each other (probability $O(\tau^2)$,
# gradient $O(1/\tau)$), the change of the gap's density across the window — are one order of
# $\tau$ smaller. At the other end, as $\tau\to\infty$, $\mathbf y$ tends to the centre of the
# simplex and the Jacobian to 0: both pathwise estimators vanish, and their bias tends to
# $|\nabla f|$. Bias is bought down only with variance. $V_R$, $V_{ST}$, $A$ and the trapezoid
# limit are one-dimensional integrals, computed by quadrature below.
#
# **Check 6: the three estimators against the exact gradient.** $n = 10^6$ Gumbel draws, shared
# by all temperatures (common random numbers), in float64. For every estimator and $\tau$: the
# mean $\hat{\mathbf m}$, the standard error of each coordinate, the bias $\hat{\mathbf b} =
# \hat{\mathbf m} - \nabla f$ and the trace of the covariance. The $\pm$ after $|\hat{\mathbf
# b}|$ is $\sqrt{\operatorname{tr}\widehat{\operatorname{Cov}}/n}$, the root mean square of
# $|\hat{\mathbf m} - \mathbb E\hat{\mathbf g}|$, which bounds the error of $|\hat{\mathbf b}|$
# (triangle inequality). A mean *agrees* with a target when every coordinate is within 4
# standard errors of it; a bias is *significant* when one coordinate is beyond 4. By the central
# limit theorem a true agreement fails the first test, and a zero bias passes the second, with
# probability below $3\cdot 10^{-4}$ for $K = 4$ coordinates. Fixed before sampling:
#
# - (a) the score-function mean agrees with $\nabla f$, and its $\operatorname{tr}\operatorname
#   {Cov}$ with the exact $\sum_k\pi_k g(\mathbf e_k)^2|\mathbf e_k - \boldsymbol\pi|^2 -
#   |\nabla f|^2$ (enumeration) within 4 standard errors of the variance estimate;
# - (b) the biases are significant where the first-order theory says $n$ draws resolve them. A
#   bias $b$ shows at 4 standard errors when $b > 4\sqrt{V/(\tau n)}$: with $b\approx
#   \tau|\nabla A|$ (relaxed) when $\tau > \tau^*_R = (16V_R/(n|\nabla A|^2))^{1/3}$, with $b$ the
#   trapezoid-rule error $b_{ST}$ (straight-through) when $\tau > \tau^*_{ST} = 16V_{ST}/
#   (nb_{ST}^2)$. We require a significant bias at every $\tau\ge 2\tau^*$ of the grid;
# - (c) at the smallest $\tau = 10^{-3}$, the derived limits: the relaxed mean agrees with
#   $\nabla f$, the straight-through mean with the trapezoid limit, $\tau\operatorname{tr}
#   \operatorname{Cov}$ with $V_R$ and $V_{ST}$, and $(f_\tau - f)/\tau$ with $A$, each within 4
#   standard errors ($f_\tau - f$ is measured with common random numbers, as the mean of
#   $g(\mathbf y_\tau) - g(\mathbf h)$). The neglected terms are $O(\tau)$ relative, of order
#   $10^{-3}$ here, far below the Monte Carlo errors: only a fraction of order $\tau$ of the
#   draws lands near an edge;
# - (d) the relaxed estimator is unbiased for $\nabla f_\tau$: at $\tau\in\{0.1, 1, 3\}$,
#   $\nabla f_\tau$ is estimated twice more — by central finite differences of $f_\tau$ with step
#   $h = 10^{-5}$ on an independent set of $2\cdot 10^5$ draws, the same draws at
#   $\boldsymbol\theta\pm h\mathbf e_j$ (common random numbers keep the variance of the difference
#   quotient bounded as $h\to 0$; its truncation error, of order $h^2/\tau^3$, and its round-off,
#   of order $10^{-16}|g|/h$, are below $10^{-5}$, far below its standard error), and by the
#   Gumbel-score identity above on the main draws. The relaxed mean must agree with both, and the
#   finite difference must differ significantly from $\nabla f$.
#
# First the model, the exact gradient, and a sanity line: the closed-form per-sample gradients
# against autograd through `gumbel_softmax_sample` (tolerance $10^{-12}$, float64 round-off on
# numbers of size below $10^2$).

# %%
# the model: K = 4 categories, a fixed decoder with 6 Bernoulli pixels and a fixed image x
g_est = torch.Generator().manual_seed(70)
K_e, D_e = 4, 6
theta = torch.tensor([1.0, 0.0, -0.5, 0.5], dtype=DT)
W_dec = 3.0 * torch.randn(K_e, D_e, generator=g_est, dtype=DT)
b_dec = torch.randn(D_e, generator=g_est, dtype=DT)
x_fixed = (torch.rand(D_e, generator=g_est, dtype=DT) < 0.5).to(DT)
vertices = torch.eye(K_e, dtype=DT)
sign_x = 2 * x_fixed - 1


def g_fn(y: torch.Tensor) -> torch.Tensor:
    """log p(x | y) of the fixed image under the decoder, for y on the simplex: [..., K] -> [...]."""
    return F.logsigmoid((y @ W_dec + b_dec) * sign_x).sum(-1)  # log sigma(a) or log sigma(-a)


def g_grad(y: torch.Tensor) -> torch.Tensor:
    """Its gradient with respect to y: [..., K]."""
    return (x_fixed - torch.sigmoid(y @ W_dec + b_dec)) @ W_dec.T


def through_softmax(y: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """(diag y - y y^T) v / tau row by row: v pulled back through y = softmax((theta + G) / tau)."""
    return y * (v - (y * v).sum(-1, keepdim=True)) / tau


# the exact gradient by enumeration, and the same by autograd of the enumerated objective
pi_e = torch.softmax(theta, 0)
g_vert, grad_vert = g_fn(vertices), g_grad(vertices)  # g and its gradient at the K vertices
f_exact = (pi_e * g_vert).sum()
grad_exact = pi_e * (g_vert - f_exact)
th = theta.clone().requires_grad_(True)
(grad_auto,) = torch.autograd.grad((torch.softmax(th, 0) * g_vert).sum(), th)
assert (grad_auto - grad_exact).abs().max() < 1e-12  # sanity: pi_j (g_j - f) is the derivative
print(f"g at the vertices: {[fmt(v, 3) for v in g_vert]},  f(theta) = {fmt(f_exact, 4)}")
print(
    f"exact gradient: {[fmt(v, 3) for v in grad_exact]},  |grad f| = {fmt(grad_exact.norm(), 3)}"
    "  (closed form vs autograd below 1e-12)"
)

# the per-sample formulas against autograd through dgmlib's sampler (same noise, same seed)
m_chk, tau_chk = 1000, 0.5
g_chk = sample_gumbel((m_chk, K_e), torch.Generator().manual_seed(71), DT)
y_chk = torch.softmax((theta + g_chk) / tau_chk, -1)
closed = {
    False: through_softmax(y_chk, g_grad(y_chk), tau_chk),
    True: through_softmax(y_chk, grad_vert[y_chk.argmax(-1)], tau_chk),
}
for hard in (False, True):
    th_rep = theta.expand(m_chk, K_e).clone().requires_grad_(True)
    y_lib = gumbel_softmax_sample(
        th_rep, tau_chk, hard=hard, generator=torch.Generator().manual_seed(71)
    )
    (auto,) = torch.autograd.grad(g_fn(y_lib).sum(), th_rep)
    assert (auto - closed[hard]).abs().max() < 1e-12
print(
    "relaxed and straight-through per-sample gradients, closed form vs autograd through "
    "gumbel_softmax_sample: max difference below 1e-12"
)


# %%
# the limits as tau -> 0, from one-dimensional integrals along the edges of the simplex
def edge_point(k: int, j: int, t: float) -> torch.Tensor:
    return t * vertices[j] + (1 - t) * vertices[k]


def edge_slope(k: int, j: int, t: float) -> float:
    """D_kj(t): the derivative of g along the edge from e_k to e_j, at t e_j + (1 - t) e_k."""
    v = g_grad(edge_point(k, j, t))
    return (v[j] - v[k]).item()


def edge_excess(k: int, j: int, t: float) -> float:
    """[g(edge point) - g(nearest vertex)] / (t (1 - t)), the integrand of I_kj."""
    nearest = g_vert[j] if t > 0.5 else g_vert[k]
    return (g_fn(edge_point(k, j, t)) - nearest).item() / (t * (1 - t))


def quad(fun, a: float, b: float) -> float:
    return integrate.quad(fun, a, b, epsabs=1e-12, epsrel=1e-12)[0]


V_relaxed = V_st = A_coef = 0.0
st_limit = torch.zeros(K_e, dtype=DT)
grad_A = torch.zeros(K_e, dtype=DT)
for k in range(K_e):
    for j in range(k + 1, K_e):
        w_kj = (pi_e[k] * pi_e[j]).item()
        d0, d1 = edge_slope(k, j, 0.0), edge_slope(k, j, 1.0)
        V_relaxed += (
            2 * w_kj * quad(lambda t, k=k, j=j: t * (1 - t) * edge_slope(k, j, t) ** 2, 0, 1)
        )
        V_st += 2 * w_kj * (d0**2 + d1**2) / 12
        st_limit += w_kj * (d0 + d1) / 2 * (vertices[j] - vertices[k])
        I_kj = quad(lambda t, k=k, j=j: edge_excess(k, j, t), 0, 0.5) + quad(
            lambda t, k=k, j=j: edge_excess(k, j, t), 0.5, 1
        )
        A_coef += w_kj * I_kj
        grad_A += w_kj * I_kj * (vertices[k] + vertices[j] - 2 * pi_e)
st_limit_bias = (st_limit - grad_exact).norm().item()
sf_trcov = (pi_e * g_vert**2 * (vertices - pi_e).square().sum(-1)).sum() - grad_exact.square().sum()
print("derived (quadrature and enumeration, no sampling):")
print(
    f"  relaxed: E grad -> grad f; bias ~ tau |grad A|, |grad A| = {fmt(grad_A.norm(), 3)}; "
    f"tr Cov ~ V_R / tau, V_R = {fmt(V_relaxed, 3)}"
)
print(
    f"  straight-through: E grad -> the trapezoid rule, |limit - grad f| = {fmt(st_limit_bias, 3)}"
    f" ({100 * st_limit_bias / grad_exact.norm():.0f} % of |grad f|); tr Cov ~ V_ST / tau, "
    f"V_ST = {fmt(V_st, 3)}"
)
print(f"  relaxed objective: f_tau - f ~ tau A, A = {fmt(A_coef, 3)}")
print(f"  score function: unbiased, tr Cov = {fmt(sf_trcov, 4)} (for every tau)")

# %%
n_mc = 1_000_000
G_mc = sample_gumbel((n_mc, K_e), torch.Generator().manual_seed(72), DT)  # shared by every tau
c_mc = (theta + G_mc).argmax(-1)  # the exact categorical samples (Gumbel-max)
h_mc = F.one_hot(c_mc, K_e).to(DT)
g_hard = g_vert[c_mc]


def summarise(est: torch.Tensor, target: torch.Tensor) -> dict:
    """Mean, bias against `target` with its error scale, max |z| over coordinates, tr Cov."""
    n = len(est)
    mean = est.mean(0)
    dev2 = (est - mean).square()
    se = (dev2.sum(0) / (n - 1) / n).sqrt()
    sq = dev2.sum(-1)
    z = (mean - target) / se
    return {
        "mean": mean,
        "se": se,
        "bias": (mean - target).norm().item(),
        "err": math.sqrt(sq.mean().item() / n),  # RMS of |mean - E|: bounds the error of |bias|
        "zmax": z.abs().max().item(),
        "trcov": sq.sum().item() / (n - 1),
        "trcov_se": sq.std().item() / math.sqrt(n),
    }


sf = summarise(g_hard[:, None] * (h_mc - pi_e), grad_exact)
z_sf_var = (sf["trcov"] - sf_trcov.item()) / sf["trcov_se"]
print(
    f"score function: |bias| = {fmt(sf['bias'], 2)} +- {fmt(sf['err'], 2)}, max |z| = "
    f"{sf['zmax']:.1f} (< 4); tr Cov = {fmt(sf['trcov'], 3)} +- {fmt(sf['trcov_se'], 2)} "
    f"(exact {fmt(sf_trcov, 4)}, z = {z_sf_var:.1f})"
)
assert sf["zmax"] < 4 and abs(z_sf_var) < 4

taus_grad = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
# first-order thresholds above which a bias is resolved at 4 s.e. with n_mc samples
tau_star_relaxed = (16 * V_relaxed / (n_mc * grad_A.norm().item() ** 2)) ** (1 / 3)
tau_star_st = 16 * V_st / (n_mc * st_limit_bias**2)
print(
    f"bias resolvable (first order) above tau* = {fmt(tau_star_relaxed, 2)} (relaxed), "
    f"{fmt(tau_star_st, 2)} (straight-through); asserted significant for tau >= 2 tau*"
)
print(
    f"{'tau':>6s} | {'f_tau - f':>19s} | {'relaxed |bias|':>18s} {'max|z|':>6s} "
    f"{'tau |grad A|':>12s} {'tr Cov':>7s} | {'straight-th. |bias|':>19s} {'max|z|':>6s} "
    f"{'tr Cov':>7s}"
)
measured = {}
taus_fd = (0.1, 1.0, 3.0)  # where grad f_tau is also estimated in two other ways (below)
gumbel_score = 1 - torch.exp(-G_mc)  # -d/dG log(Gumbel density), coordinate by coordinate
for tau in taus_grad:
    y_mc = torch.softmax((theta + G_mc) / tau, -1)
    relaxed_mc = through_softmax(y_mc, g_grad(y_mc), tau)
    rel = summarise(relaxed_mc, grad_exact)
    st = summarise(through_softmax(y_mc, grad_vert[c_mc], tau), grad_exact)
    g_relaxed = g_fn(y_mc)
    excess = g_relaxed - g_hard  # f_tau - f with common random numbers
    if tau in taus_fd:  # the same draws, the Gumbel-score identity: z of the difference
        diff = relaxed_mc - g_relaxed[:, None] * gumbel_score
        rel["z_score"] = (diff.mean(0) / (diff.std(0) / math.sqrt(n_mc))).abs().max().item()
    rel["excess"], rel["excess_se"] = excess.mean().item(), excess.std().item() / math.sqrt(n_mc)
    measured[tau] = (rel, st)
    print(
        f"{tau:6g} | {fmt(rel['excess'], 3):>8s} +- {fmt(rel['excess_se'], 2):>7s} | "
        f"{fmt(rel['bias'], 2):>7s} +- {fmt(rel['err'], 2):>7s} {sig(rel['zmax']):>6s} "
        f"{fmt(tau * grad_A.norm(), 2):>12s} {sig(rel['trcov'], 3):>7s} | "
        f"{fmt(st['bias'], 2):>8s} +- {fmt(st['err'], 2):>7s} {sig(st['zmax']):>6s} "
        f"{sig(st['trcov'], 3):>7s}"
    )
    if tau >= 2 * tau_star_relaxed:
        assert rel["zmax"] > 4
    if tau >= 2 * tau_star_st:
        assert st["zmax"] > 4

# tau -> 0: the measurement at the smallest tau against the derived limits
tau0 = taus_grad[0]
rel0, st0 = measured[tau0]
z_st_lim = ((st0["mean"] - st_limit) / st0["se"]).abs().max().item()
checks = [
    ("tau tr Cov, relaxed", tau0 * rel0["trcov"], tau0 * rel0["trcov_se"], V_relaxed),
    ("tau tr Cov, straight-through", tau0 * st0["trcov"], tau0 * st0["trcov_se"], V_st),
    ("(f_tau - f) / tau", rel0["excess"] / tau0, rel0["excess_se"] / tau0, A_coef),
]
print(f"tau = {tau0:g}, against the limits derived above:")
print(f"  relaxed mean - grad f:               max |z| = {rel0['zmax']:.1f} (< 4)")
print(f"  straight-through mean - its limit:   max |z| = {z_st_lim:.1f} (< 4)")
assert rel0["zmax"] < 4 and z_st_lim < 4
for name, value, se_v, limit in checks:
    z = (value - limit) / se_v
    print(f"  {name:34s} {fmt(value, 3)} +- {fmt(se_v, 2)}   limit {fmt(limit, 3)}   z = {z:.1f}")
    assert abs(z) < 4

# %%
# the relaxed estimator is unbiased for the gradient of the relaxed objective f_tau
n_fd, h_fd = 200_000, 1e-5
G_fd = sample_gumbel((n_fd, K_e), torch.Generator().manual_seed(73), DT)  # independent of G_mc
print(
    f"{'tau':>4s}  grad f_tau: relaxed mean vs finite difference (CRN)   vs Gumbel-score identity"
    "   finite difference vs grad f"
)
for tau in taus_fd:
    fd = torch.stack(
        [
            (
                g_fn(torch.softmax((theta + h_fd * e + G_fd) / tau, -1))
                - g_fn(torch.softmax((theta - h_fd * e + G_fd) / tau, -1))
            )
            / (2 * h_fd)
            for e in vertices
        ],
        -1,
    )
    rel = measured[tau][0]
    z_fd = (rel["mean"] - fd.mean(0)) / (rel["se"].square() + fd.var(0) / n_fd).sqrt()
    z_exact = (fd.mean(0) - grad_exact) / (fd.std(0) / math.sqrt(n_fd))
    print(
        f"{tau:4g}  max |z| = {z_fd.abs().max():.1f} (< 4){'':27s}max |z| = "
        f"{rel['z_score']:.1f} (< 4){'':8s}max |z| = {sig(z_exact.abs().max())} (> 4)"
    )
    assert z_fd.abs().max() < 4 and rel["z_score"] < 4 and z_exact.abs().max() > 4

# %% [markdown]
# The score-function estimator is unbiased, and its variance is the one computed by enumeration.
# The relaxed estimator's bias is significant from $\tau = 0.1$ up; where it is resolved and
# $\tau$ is still small ($\tau = 0.03$ and $0.1$) it is close to the first-order term
# $\tau|\nabla A|$, and below that it sinks into the Monte Carlo error, as derived: at $\tau =
# 10^{-3}$ its mean agrees with the exact gradient. The straight-through bias does not go away:
# from $\tau = 0.3$ down to $10^{-3}$ it stays near the trapezoid-rule error, and at $\tau =
# 10^{-3}$ its mean agrees with the trapezoid limit rather than with $\nabla f$. Both variances
# grow like $1/\tau$ with the derived constants $V_R$ and $V_{ST}$. The relaxed objective lies
# above $f$ at every $\tau$ of the grid (by $\tau A$ for small $\tau$), and the relaxed estimator
# is unbiased for *its* gradient, which differs significantly from $\nabla f$ (d).
#
# The figure shows the trade-off. Left, the bias against $\tau$ with its first-order line and
# the two limits; middle, the variance with the derived asymptotes $V/\tau$; right, the mean
# squared error of an average of $M$ independent gradient samples, $|\mathbf b|^2 +
# \operatorname{tr}\operatorname{Cov}/M$, with $|\mathbf b|^2$ estimated without its Monte Carlo
# part ($|\hat{\mathbf b}|^2 - \operatorname{tr}\widehat{\operatorname{Cov}}/n$).

# %%
tg = np.array(taus_grad)
rel_b = np.array([measured[t][0]["bias"] for t in taus_grad])
rel_e = np.array([measured[t][0]["err"] for t in taus_grad])
st_b = np.array([measured[t][1]["bias"] for t in taus_grad])
st_e = np.array([measured[t][1]["err"] for t in taus_grad])
rel_v = np.array([measured[t][0]["trcov"] for t in taus_grad])
st_v = np.array([measured[t][1]["trcov"] for t in taus_grad])
# |bias|^2 without the Monte Carlo part err^2 (E |mean - target|^2 = |bias|^2 + tr Cov / n)
rel_b2 = np.clip(rel_b**2 - rel_e**2, 0, None)
st_b2 = np.clip(st_b**2 - st_e**2, 0, None)

fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
ax = axes[0]
for b, e, col, name in [(rel_b, rel_e, "C0", "relaxed"), (st_b, st_e, "C1", "straight-through")]:
    ax.errorbar(tg, b, yerr=[np.minimum(e, 0.9 * b), e], fmt="o-", color=col, label=name)
small = tg <= 0.3
ax.plot(
    tg[small], tg[small] * grad_A.norm().item(), "C0--", lw=1, label=r"first order $\tau|\nabla A|$"
)
ax.axhline(st_limit_bias, color="C1", ls="--", lw=1, label="straight-through limit (trapezoid)")
ax.axhline(grad_exact.norm().item(), color="0.5", ls=":", lw=1, label=r"$|\nabla f|$")
ax.plot(tg, rel_e, color="C0", ls=":", lw=1, label="Monte Carlo error of the relaxed mean")
ax.set(xscale="log", yscale="log", xlabel=r"$\tau$", ylabel="|bias| = |mean - exact gradient|")
ax.set_title("bias (score function: unbiased)")
ax.legend(fontsize=7)
ax = axes[1]
ax.plot(tg, rel_v, "o-", color="C0", label="relaxed")
ax.plot(tg, st_v, "o-", color="C1", label="straight-through")
ax.plot(tg, V_relaxed / tg, "C0--", lw=1, label=r"$V_R/\tau$")
ax.plot(tg, V_st / tg, "C1--", lw=1, label=r"$V_{ST}/\tau$")
ax.axhline(sf_trcov.item(), color="C2", label="score function (exact)")
ax.set(xscale="log", yscale="log", xlabel=r"$\tau$", ylabel="tr Cov of one gradient sample")
ax.set_title("variance")
ax.legend(fontsize=7)
ax = axes[2]
print("mean squared error of an average of M gradient samples, |bias|^2 + tr Cov / M:")
for M, shade in [(1, 0.25), (100, 0.5), (10_000, 0.8)]:
    mse = rel_b2 + rel_v / M
    best = int(np.argmin(mse))
    ax.plot(tg, mse, "o-", color=plt.cm.Blues(shade), label=f"relaxed, M = {M}")
    ax.axhline(sf_trcov.item() / M, color=plt.cm.Greens(shade), ls="--", label=f"score f., M = {M}")
    print(
        f"  M = {M:6d}: relaxed, best tau on the grid {tg[best]:g} (MSE {fmt(mse[best], 2)}); "
        f"straight-through {fmt(np.min(st_b2 + st_v / M), 2)}; score function "
        f"{fmt(sf_trcov / M, 2)}"
    )
ax.set(xscale="log", yscale="log", xlabel=r"$\tau$", ylabel="mean squared error")
ax.set_title("the trade-off")
ax.legend(fontsize=7)
fig.suptitle("gradient estimators for E_c g(c), K = 4, against the exact gradient (n = 10^6 draws)")
plt.show()

# %% [markdown]
# With a single sample the two biased estimators beat the score function by orders of
# magnitude; its variance is large here because $g$ is far from 0, which a baseline would reduce
# (Exercise 3 below). With more samples the best temperature moves down. For small $\tau$,
# minimizing $\tau^2|\nabla A|^2 + V_R/(\tau M)$ gives $\tau_{\text{opt}} = (V_R/(2M|\nabla
# A|^2))^{1/3}$ and an error that falls only like $M^{-2/3}$, while the unbiased estimator's
# falls like $1/M$: at $M = 10^4$ the two are already of the same order. In training, a gradient
# is averaged over a minibatch and over many steps, and the bias is what averaging cannot remove;
# annealing $\tau$ trades it against variance — except for the straight-through estimator,
# whose bias annealing does not remove at all.

# %% [markdown]
# ## 7. Exercises
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
    kl_per_var = my_categorical_kl_uniform(catvae.logits(x_dev)).mean(0).cpu()
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
# 3. Give the score-function estimator of §6 a constant baseline, $(g(\mathbf h) - \beta)(\mathbf
#    h - \boldsymbol\pi)$. Show that it stays unbiased, find the $\beta$ that minimizes the trace
#    of its covariance (by enumeration), and redraw the right panel of the §6 figure. From which
#    $M$ on does it beat the relaxed estimator at its best $\tau$?
# 4. Repeat §6 with $g$ quadratic in $\mathbf y$. Which of the derived limits change, and why
#    does the straight-through bias now vanish as $\tau\to 0$?
#
# ## Summary
#
# - With a categorical latent and a uniform prior, the ELBO keeps its form and its KL term is
#   $\log K - H(q)$, between 0 and $\log K$ per variable; checked against `torch.distributions`
#   and against the exact $\log p(\mathbf x)$ of an enumerable model.
# - Sampling a category is not differentiable. The **Gumbel-max trick** writes the sample as the
#   arg-max of the logits plus Gumbel noise (derived, and verified by frequencies); replacing the
#   arg-max by a softmax at temperature $\tau$ gives the **Gumbel-softmax** relaxation, one-hot
#   as $\tau\to 0$ and uniform as $\tau\to\infty$ (measured, at the rates derived for both
#   limits), with a biased reparametrization gradient; the straight-through version decodes hard
#   samples. The sampler's temperature was checked by maximum likelihood under the closed-form
#   Concrete density, a test that rejects a 20 % error in $\tau$.
# - The **VQ-VAE** uses a deterministic nearest-code posterior (ELBO $= \log p(\mathbf x\mid
#   \mathbf z_q) - P\log K$), the straight-through gradient for the encoder, a codebook loss that
#   is a gradient form of $k$-means, and a commitment loss; where each gradient goes was checked
#   with autograd. Unused (dead) codes are measured by the perplexity.
# - Trained on Fashion-MNIST, the VQ-VAE (all 64 codes used, perplexity 55) reconstructs
#   better than the categorical VAE, but decoding uniformly random codes gives blends of garment
#   parts, and its ELBO pays the full $P\log K$; the categorical VAE keeps its encoder close to
#   the uniform prior (about 12 nats), has the higher ELBO, and decodes prior samples to blurry
#   but garment-like images. Both sets of figures were recomputed from the checkpoints.
# - Against the exact gradient of an enumerable model, the **relaxed** Gumbel-softmax gradient is
#   unbiased for the relaxed objective $f_\tau$ (checked by finite differences and by a
#   Gumbel-score identity), not for $f$; its bias vanishes linearly as $\tau\to 0$ for any $g$
#   continuous on the simplex, while its variance grows like $1/\tau$. The **straight-through**
#   gradient's limit is the trapezoid rule along the edges of the simplex, biased unless $g$ is
#   quadratic along them; its variance also grows like $1/\tau$. All limits were derived as
#   one-dimensional integrals and matched by $10^6$ samples; the **score function** is unbiased
#   but, without a baseline, far noisier, and catches up only when many samples are averaged.
#
# ## References
#
# - {cite}`oord2017neural` — the VQ-VAE: nearest-code posterior, codebook and commitment losses.
# - {cite}`jang2017categorical` — Gumbel-softmax and its straight-through variant.
# - {cite}`maddison2017concrete` — the Concrete distribution and the Gumbel-max trick.
# - {cite}`bengio2013estimating` — straight-through estimators for discrete units.
# - {cite}`williams1992simple` — the score-function (REINFORCE) estimator.
# - {cite}`mohamed2020monte` — Monte Carlo gradient estimators, their bias and variance.
# - {cite}`rolfe2017discrete` — discrete VAEs.
# - {cite}`kingma2014auto` — the VAE.
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.
