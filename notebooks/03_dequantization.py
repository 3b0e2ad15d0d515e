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
# # Lecture 03 — Discrete data and dequantization
#
# Images are stored as integers: a pixel of an 8-bit image takes one of 256 values, a pixel of
# scikit-learn's 8×8 digits one of 17. Most density models of this course (Gaussian decoders,
# flows, diffusion) are *continuous*. This lecture asks what happens when a continuous density is
# fitted to integer data, and how to repair it.
#
# **What you will learn**
#
# - why maximum likelihood with a continuous density on discrete data is ill-posed: the
#   likelihood can be made arbitrarily large by squeezing mass onto the integers;
# - **uniform dequantization** $y = x + u$, $u \sim U[0,1)^D$, and the proof (Jensen's inequality)
#   that the log-likelihood of dequantized data lower-bounds the log-probability of the discrete
#   data — with the gap written as a KL divergence, checked by numerical integration;
# - **bits per dimension**, and the $\log_2 256 = 8$ bits per dimension that appear when data are
#   rescaled to $[0,1)$ (a change of variables, checked numerically);
# - **discrete likelihoods** (categorical, discretized logistic) as the alternative: exact
#   probabilities that sum to one;
# - how to compare all of them fairly, in one table.
#
# **Prerequisites:** Lecture 01 (latent-variable models, Jensen's inequality, the ELBO, EM).
#
# **Follows:** the course's lecture notes on likelihood-based models of images, the part on data
# dequantization.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import integrate, stats
from scipy.special import logsumexp
from torch.distributions import Normal

import dgmlib
from dgmlib.checks import check_dequantized_bpd, check_discretized_logistic
from dgmlib.data import load_digits, load_fashion_mnist
from dgmlib.dequantization import (
    dequantization_bound,
    discretized_logistic_log_prob,
    discretized_normal_log_prob,
    uniform_dequantize,
)
from dgmlib.plot import image_grid
from dgmlib.stats import fmt  # 4 significant digits: stable across runs
from dgmlib.units import log_density_to_integer_units, nats_to_bits_per_dim
from dgmlib.widgets import choose, explore

dgmlib.notebook_setup(0)
torch.set_default_dtype(torch.float64)  # the checks below compare numbers to ~1e-9


# %% [markdown]
# ## 1. Discrete data
#
# We use scikit-learn's handwritten digits: 1797 images of $8\times 8 = 64$ pixels, each an
# integer in $\{0, \dots, 16\}$, so $K = 17$ levels and $D = 64$ dimensions. We keep 1500 images
# for fitting and 297 as held-out data. Almost half of all pixel values are exactly $0$ (the
# background) and many are exactly $16$ (saturated ink): the data pile up on a few integers.

# %%
images, _ = load_digits()
X = (images * 16).round().long().reshape(len(images), -1)  # integers in {0, ..., 16}
K, D = 17, X.shape[1]
perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
X_train, X_test = X[perm[:1500]], X[perm[1500:]]
freq = (torch.bincount(X_train.flatten(), minlength=K) / X_train.numel()).numpy()
print(
    f"levels K = {K}, dimensions D = {D}, train {tuple(X_train.shape)}, test {tuple(X_test.shape)}"
)
print(f"fraction of pixel values equal to 0: {fmt(freq[0])}, equal to 16: {fmt(freq[16])}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.2, 1]})
image_grid(X_train[:16].reshape(-1, 8, 8) / 16, nrow=8, ax=axes[0], title="16 training digits")
axes[1].bar(np.arange(K), freq, color="tab:blue")
axes[1].set_xlabel("pixel value $x$")
axes[1].set_ylabel("fraction of pixel values")
axes[1].set_title("Pixel values are integers in {0, ..., 16}")
axes[1].set_xticks(range(0, K, 2))
plt.show()

# %% [markdown]
# ## 2. A continuous density on integers degenerates
#
# Pool all pixel values $x_1, \dots, x_N$ and let $f_k$ be the fraction equal to $k$. Take a
# two-component density: a narrow Gaussian spike of weight $w$ at $0$ and a broad Gaussian $q$
# for everything else,
#
# $$p_\sigma(x) = w\,\mathcal N(x; 0, \sigma^2) + (1 - w)\, q(x).$$
#
# Its average log-likelihood on the integers is
#
# $$L(\sigma) = \sum_k f_k \log p_\sigma(k)
#   \;\ge\; f_0 \Big(\log w - \tfrac12 \log 2\pi - \log\sigma\Big)
#   + \sum_{k \ne 0} f_k \log\big((1-w)\, q(k)\big),$$
#
# because each mixture term is at most the whole mixture. The right-hand side grows like
# $f_0 \log(1/\sigma)$: as $\sigma \to 0$ the likelihood is unbounded, with slope
# $\mathrm d L / \mathrm d \log(1/\sigma) \to f_0$ (the other terms' dependence on $\sigma$
# vanishes as $\sigma \to 0$). A density is not a probability: $p_\sigma(0)$ can exceed 1,
# and the "best" fit puts infinitely thin spikes on the integers. Nothing here is specific to the
# mixture — any continuous model flexible enough to concentrate mass around the data points,
# e.g. a flow or a Gaussian decoder with a learned variance, can do the same
# {cite}`theis2016note`.
#
# On *dequantized* data (each integer replaced by a uniform random point of $[x, x+1)$, the topic
# of §3) the same family gives $\tilde L(\sigma) = \sum_k f_k\, \mathbb E_{u}[\log p_\sigma(k+u)]$,
# computed below by numerical integration over $u$.

# %%
levels = np.arange(K)
w = freq[0]
rest = freq[1:] / freq[1:].sum()
q_mean = float(np.sum(rest * levels[1:]))
q_std = float(np.sqrt(np.sum(rest * (levels[1:] - q_mean) ** 2)))


def spike_logpdf(y, sigma):
    """log p_sigma(y): spike of weight w at 0 plus the broad Gaussian q (numpy, broadcasts)."""
    return np.logaddexp(
        np.log(w) + stats.norm.logpdf(y, 0.0, sigma),
        np.log1p(-w) + stats.norm.logpdf(y, q_mean, q_std),
    )


def spike_log_mass(k, sigma):
    """log P_sigma(k): the exact mass of the bin [k, k+1) under p_sigma."""
    spike = stats.norm.cdf(k + 1, 0.0, sigma) - stats.norm.cdf(k, 0.0, sigma)
    broad = stats.norm.cdf(k + 1, q_mean, q_std) - stats.norm.cdf(k, q_mean, q_std)
    return np.log(w * spike + (1 - w) * broad)


sigmas = np.logspace(-4, 1, 31)
raw_ll = np.array([np.sum(freq * spike_logpdf(levels, s)) for s in sigmas])
# E_u[log p_sigma(k + u)] for all sigmas at once, by adaptive quadrature over u in [0, 1)
breaks = [b for b in 10 * sigmas if b < 1]  # where the spike's log-density flattens out
deq_ll = sum(
    fk * integrate.quad_vec(lambda u, k=k: spike_logpdf(k + u, sigmas), 0.0, 1.0, points=breaks)[0]
    for k, fk in zip(levels, freq, strict=True)
)
disc_ll = np.array([np.sum(freq * spike_log_mass(levels, s)) for s in sigmas])

# %% [markdown]
# **Check.** (i) On the integers the slope of $L$ against $\log(1/\sigma)$ at the smallest
# widths approaches $f_0$, and how closely can be said in advance. For $\sigma \le 10^{-3}$ the
# spike's density at the levels $k \ge 1$ underflows to $0$, so only the term of level $0$ moves:
# $f_0\log(a/\sigma + b)$ with $a = w/\sqrt{2\pi}$ and $b = (1-w)\,q(0)$. Its slope is
# $f_0/(1 + b\sigma/a)$, so the finite difference between the two smallest widths
# $\sigma_0 < \sigma_1$ lies in $[f_0/(1 + b\sigma_1/a),\, f_0]$. (ii) The quadrature behind
# $\tilde L$ is checked against a Monte Carlo average over $20\,000$ uniform draws of $u$ (the same
# draws for every level and width), within 4 standard errors at every $\sigma$. (iii) With both
# computations verified, Jensen's inequality of §3 must hold: $\tilde L(\sigma)$ never exceeds
# the average log-probability $\sum_k f_k \log P_\sigma(k)$ of the bins $[k, k+1)$ (computed from
# CDF differences).

# %%
slope = (raw_ll[0] - raw_ll[1]) / (np.log(sigmas[1]) - np.log(sigmas[0]))
a_spike = w / math.sqrt(2 * math.pi)
b_broad = (1 - w) * math.exp(stats.norm.logpdf(0.0, q_mean, q_std))
slope_low = w / (1 + b_broad * sigmas[1] / a_spike)
rng_u = np.random.default_rng(0)
u_draws = rng_u.random(20_000)
per_draw = sum(
    fk * spike_logpdf(k + u_draws[:, None], sigmas) for k, fk in zip(levels, freq, strict=True)
)
deq_mc = per_draw.mean(0)
deq_se = per_draw.std(0, ddof=1) / math.sqrt(len(u_draws))
z_deq = np.max(np.abs(deq_mc - deq_ll) / deq_se)
print(f"slope dL/dlog(1/sigma) at sigma=1e-4: {slope:.7f}   f_0 = {w:.7f}")
print(f"   derived range [f_0 / (1 + b sigma_1 / a), f_0] = [{slope_low:.7f}, {w:.7f}]")
print(f"raw L at sigma=1e-4: {fmt(raw_ll[0])} nats (> 0: no probability can do that)")
print(
    f"dequantized: quadrature vs Monte Carlo, largest |difference| / s.e. over sigma: {z_deq:.1f}"
)
print(f"dequantized: max over sigma {fmt(deq_ll.max())} at sigma={fmt(sigmas[deq_ll.argmax()])}")
print(f"max over sigma of (dequantized - discrete): {np.max(deq_ll - disc_ll):.2g} (must be <= 0)")
# 1e-9: float64 round-off on log-likelihoods of size ~2, divided by log(sigma_1 / sigma_0) = 0.38
assert slope_low - 1e-9 <= slope <= w + 1e-9
assert z_deq < 4
assert np.all(deq_ll <= disc_ll + 1e-9)
assert np.all(disc_ll <= 0)  # sanity line: logs of bin probabilities, <= 0 by construction

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.semilogx(sigmas, raw_ll, "o-", ms=3, label="integer data: $L(\\sigma)$")
ax.semilogx(sigmas, deq_ll, "s-", ms=3, label="dequantized data: $\\tilde L(\\sigma)$")
ax.semilogx(
    sigmas, disc_ll, "--", color="gray", label="bin probabilities: $\\sum_k f_k \\log P_\\sigma(k)$"
)
ax.axhline(0.0, color="k", lw=0.8)
ax.set_xlabel("width $\\sigma$ of the spike at 0")
ax.set_ylabel("average log-likelihood (nats)")
ax.set_title("A spike on an integer: unbounded likelihood")
ax.invert_xaxis()
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# **Explore: the width of the spike.** Move the slider `width σ` along the widths of the figure
# above. The left panel shows the log-density $\log p_\sigma(y)$ around the bin $[0, 1)$ of level
# $0$ and three things computed from it: its values at the integers (what $L$ averages), its
# average over the bin (what $\tilde L$ averages for the pixels equal to $0$) and the log of the
# bin's mass $\log P_\sigma(0)$. The right panel marks the same width on the three curves. Narrow
# the spike: the value at $0$ climbs without limit, while the average over the bin falls back,
# since the spike covers a vanishing part of the bin; the mass of the bin stops changing once the
# spike fits inside it, and it never exceeds $0$. That is why the dequantized curve has a best
# width and the integer curve has none.

# %%
spike_grid = np.linspace(-0.5, 2.5, 3001)  # where the log-density is drawn (includes 0, 1, 2)
# E_u[log p_sigma(u)] over the bin [0, 1) of level 0, for every width, by quadrature (as deq_ll)
bin0_deq = integrate.quad_vec(lambda u: spike_logpdf(u, sigmas), 0.0, 1.0, points=breaks)[0]
bin0_log_mass = spike_log_mass(0, sigmas)
LOG_DENSITY_LIM, AVERAGE_LIM = (-12.0, 12.0), (-5.0, 3.0)  # fixed axes (nats)


def draw_spike(axes, sigma: float) -> None:
    """Left: log p_sigma around the bin of 0; right: the width sigma on the curves above."""
    ax1, ax2 = axes
    i, s = list(sigmas).index(sigma), sigma
    ax1.axvspan(0, 1, color="tab:orange", alpha=0.12, label="the bin $[0, 1)$ of level 0")
    ax1.plot(spike_grid, spike_logpdf(spike_grid, s), color="tab:blue", label=r"$\log p_\sigma(y)$")
    ax1.plot(levels[:3], spike_logpdf(levels[:3], s), "o", color="tab:blue", label="at integers")
    ax1.hlines(bin0_deq[i], 0, 1, color="tab:orange", lw=2.5, label=r"$E_u[\log p_\sigma(u)]$")
    ax1.hlines(bin0_log_mass[i], 0, 1, color="gray", ls="--", lw=2, label=r"$\log P_\sigma(0)$")
    ax1.set(xlim=(spike_grid[0], spike_grid[-1]), ylim=LOG_DENSITY_LIM, xlabel="$y$")
    ax1.set(ylabel="log-density (nats)", title=f"The spike at 0, width σ = {s:.2g}")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.semilogx(sigmas, raw_ll, color="tab:blue", label="integer data: $L(\\sigma)$")
    ax2.semilogx(sigmas, deq_ll, color="tab:orange", label="dequantized: $\\tilde L(\\sigma)$")
    ax2.semilogx(sigmas, disc_ll, "--", color="gray", label="bin probabilities")
    ax2.plot([s] * 3, [raw_ll[i], deq_ll[i], disc_ll[i]], "o", color="k")
    ax2.axvline(s, color="k", lw=0.8)
    ax2.axhline(0.0, color="k", lw=0.5, ls=":")
    ax2.set(xlim=(sigmas[-1], sigmas[0]), ylim=AVERAGE_LIM, xlabel="width $\\sigma$ of the spike")
    ax2.set(ylabel="average log-likelihood (nats)", title="All pixel values, at this width")
    ax2.legend(loc="upper left", fontsize=8)


explore(
    draw_spike, ncols=2, figsize=(11.0, 3.8), sigma=choose(sigmas, sigmas[18], "width σ", "{:.2g}")
)

# %% [markdown]
# Read the figure from left to right (the spike narrows). On the integers the log-likelihood
# climbs without bound and crosses $0$ — a region no probability distribution can reach. On
# dequantized data it rises to a best width and then falls back: a spike narrower than a bin
# covers only a sliver of the dequantized points.
#
# ### The degenerate solution is what maximum likelihood finds
#
# We did not have to aim for the spike: plain EM (Lecture 01) finds it by itself. Below, a
# mixture of Gaussians with diagonal covariances is fitted by EM; the same function serves for
# pooled pixel values ($D=1$) here and for whole images ($D=64$) in §5. Each E-step computes the
# responsibilities, each M-step the weighted means and variances; a component whose
# responsibilities sit on a single integer gets variance $0$, so we clamp the standard deviation
# at a floor `min_std` and watch what the floor does. For dequantized data the noise is drawn
# afresh at every iteration, as one would do epoch by epoch with a neural network.


# %%
def diag_gmm_log_prob(params, y):
    """log density of a mixture of diagonal Gaussians at y [..., D] -> [...]."""
    log_pi, mu, std = params
    comp = Normal(mu, std).log_prob(y[..., None, :]).sum(-1)  # [..., C]
    return torch.logsumexp(log_pi + comp, dim=-1)


def fit_diag_gmm(data_fn, init_mu, init_std, num_iters, min_std, weights=None):
    """EM for a mixture of diagonal Gaussians; data_fn() returns the [N, D] data of one iteration,
    optionally with a weight (a count) per row.

    Returns the parameters (log_pi, mu, std) and the average log-likelihood at each iteration."""
    num_comp = init_mu.shape[0]
    log_pi = torch.full((num_comp,), -math.log(num_comp))
    mu, std = init_mu.clone(), init_std.clone()
    history = []
    for _ in range(num_iters):
        y = data_fn()
        log_joint = log_pi + Normal(mu, std).log_prob(y[:, None, :]).sum(-1)  # [N, C]
        log_lik = torch.logsumexp(log_joint, dim=1)
        resp = torch.exp(log_joint - log_lik[:, None])  # E-step: posterior over components
        if weights is not None:
            log_lik, resp = log_lik * weights / weights.mean(), resp * weights[:, None]
        history.append(log_lik.mean().item())
        n_c = resp.sum(0) + 1e-12  # M-step: weighted counts, means, variances
        log_pi = torch.log(n_c / n_c.sum())
        mu = resp.T @ y / n_c[:, None]
        var = torch.einsum("nc,ncd->cd", resp, (y[:, None, :] - mu) ** 2) / n_c[:, None]
        std = var.clamp(min=min_std**2).sqrt()
    return (log_pi, mu, std), history


# integers: EM on all 96000 training pixel values is EM on the 17 levels weighted by their counts
counts = torch.bincount(X_train.flatten(), minlength=K).double()
init_mu = torch.linspace(1.0, 15.0, 4)[:, None]
init_std = torch.full((4, 1), 4.0)
raw_fits = {
    floor: fit_diag_gmm(
        lambda: torch.arange(K).double()[:, None], init_mu, init_std, 60, floor, counts
    )
    for floor in (1e-2, 1e-4, 1e-6)
}
# dequantized: the pixel values of 125 training images (8000 values), fresh noise each iteration
pixels = X_train[:125].reshape(-1, 1)
g_em = torch.Generator().manual_seed(1)
deq_1d, deq_1d_hist = fit_diag_gmm(
    lambda: uniform_dequantize(pixels, K, g_em), init_mu, init_std, 60, 1e-6
)


def show_params(name, params):
    log_pi, mu, std = params
    print(f"{name:>26}: weights {np.round(log_pi.exp().numpy(), 3)}")
    print(f"{'':>26}  means   {np.round(mu[:, 0].numpy(), 3)}")
    print(f"{'':>26}  stds    {[fmt(s) for s in std[:, 0].tolist()]}")


for floor, (params, hist) in raw_fits.items():
    show_params(f"integers, floor {floor:g}", params)
    print(f"{'':>26}  final average log-likelihood {fmt(hist[-1])} nats")
show_params("dequantized", deq_1d)
print(f"{'':>26}  final average log-likelihood {fmt(deq_1d_hist[-1])} nats")

# %% [markdown]
# On the integers EM puts two components exactly on $0$ and $16$, with weights equal to the
# fractions $f_0$ and $f_{16}$, and shrinks their widths to whatever floor we allow. Every
# factor of 100 in the floor then buys the same amount of likelihood.
#
# **Check.** If the collapsed components own exactly the points at $0$ and $16$, lowering the floor
# from $10^{-4}$ to $10^{-6}$ raises the average log-likelihood by
# $(f_0 + f_{16}) \log 100$.

# %%
gain = raw_fits[1e-6][1][-1] - raw_fits[1e-4][1][-1]
predicted = (freq[0] + freq[16]) * math.log(100.0)
print(f"gain from floor 1e-4 -> 1e-6: {fmt(gain)} nats   (f_0 + f_16) log 100 = {fmt(predicted)}")
# The prediction ignores the broad components' share of the points at 0 and 16, of relative size
# about sigma * (their density) / (spike weight), below 1e-4 at these floors; a spike that did not
# collapse would change the gain by f_16 log 100 = 0.42 or more. So 1e-3 separates the two cases.
assert abs(gain - predicted) < 1e-3

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for floor, (_, hist) in raw_fits.items():
    ax.plot(hist, label=f"integers, std floor {floor:g}")
ax.plot(deq_1d_hist, "k", label="dequantized (fresh noise each iteration)")
ax.set_xlabel("EM iteration")
ax.set_ylabel("average log-likelihood (nats)")
ax.set_title("EM on pixel values: the floor decides the 'likelihood'")
ax.legend(fontsize=9)
plt.show()

# %% [markdown]
# ## 3. Uniform dequantization bounds the discrete log-likelihood
#
# **A density defines a discrete distribution.** Give each integer vector $x \in \mathbb Z^D$ the
# mass of its unit cube,
#
# $$P(x) = \int_{[0,1)^D} p(x + u)\,\mathrm du .$$
#
# The cubes $x + [0,1)^D$ tile $\mathbb R^D$ without overlap, so $\sum_{x \in \mathbb Z^D} P(x) =
# \int_{\mathbb R^D} p = 1$: $P$ is a genuine probability distribution, and $\log P(x) \le 0$.
# Its log-likelihood is the number we want to compare models by.
#
# **The bound.** The uniform density on the cube equals 1, so $P(x) = \mathbb E_{u \sim
# U[0,1)^D}[p(x+u)]$. The logarithm is concave; Jensen's inequality gives
#
# $$\log P(x) = \log \mathbb E_u\big[p(x+u)\big] \;\ge\; \mathbb E_u\big[\log p(x+u)\big].$$
#
# Averaging over the data, the right-hand side is $\mathbb E_{x}\mathbb E_u[\log p(x+u)]$ —
# exactly the expected log-likelihood of the continuous model on *dequantized* data $y = x + u$.
# So fitting a continuous density to dequantized data maximizes a lower bound on the discrete
# log-likelihood, and that objective is bounded above by $0$ whatever the model (in integer units;
# §4 deals with rescaled data): the spike of §2 cannot win {cite}`uria2013rnade,theis2016note`.
#
# **The gap is a KL divergence.** Define the model's distribution of the position *inside* the
# cube, $p(u \mid x) = p(x+u)/P(x)$ on $[0,1)^D$. Then
#
# $$\log P(x) - \mathbb E_u[\log p(x+u)] = \mathbb E_u\Big[\log \frac{P(x)}{p(x+u)}\Big]
#   = \mathbb E_u\Big[\log \frac{1}{p(u \mid x)}\Big] = \mathrm{KL}\big(U[0,1)^D \,\big\|\, p(u\mid x)\big) \ge 0 .$$
#
# This is Lecture 01's decomposition $\log p(x) = \text{ELBO} + \mathrm{KL}(q \,\|\, p(z\mid x))$
# with the noise $u$ as latent variable and the uniform as a fixed $q$: the bound is tight only
# when the model is flat inside every cube. Learning $q(u \mid x)$ instead of fixing it gives
# *variational dequantization* {cite}`ho2019flow`.
#
# We verify all of this on the one-dimensional mixture that EM fitted to dequantized pixel values
# above: $P(k)$ by exact CDF differences and by `scipy.integrate.quad`, the bound by quadrature
# and by Monte Carlo over $u$.

# %%
log_pi_1d, mu_1d, std_1d = (t[..., 0] if t.dim() == 2 else t for t in deq_1d)


def p1d_logpdf(y):
    """log density of the fitted 1-D mixture (numpy in, numpy out)."""
    y = np.asarray(y, dtype=float)[..., None]
    comp = stats.norm.logpdf(y, mu_1d.numpy(), std_1d.numpy())
    return logsumexp(log_pi_1d.numpy() + comp, axis=-1)


def p1d_log_mass(k):
    """log P(k) = log of the mass of [k, k+1), from exact CDF differences."""
    k = torch.as_tensor(k)[..., None]
    return torch.logsumexp(log_pi_1d + discretized_normal_log_prob(k, mu_1d, std_1d), dim=-1)


ks = torch.arange(K)
log_P = p1d_log_mass(ks).numpy()
P_quad = np.array([integrate.quad(lambda y: np.exp(p1d_logpdf(y)), k, k + 1)[0] for k in levels])
bound_quad = np.array([integrate.quad(p1d_logpdf, k, k + 1)[0] for k in levels])
# KL(U || p(u|k)) from its definition, with p(u|k) = p(k+u) / P(k) normalised by quadrature
kl_quad = np.array(
    [
        integrate.quad(lambda u, k=k: -(p1d_logpdf(k + u) - np.log(P_quad[k])), 0, 1)[0]
        for k in levels
    ]
)
g_mc = torch.Generator().manual_seed(2)
bound_mc, bound_se = dequantization_bound(
    lambda y: torch.as_tensor(p1d_logpdf(y[..., 0].numpy())),
    ks[:, None],
    20000,
    g_mc,
    return_stderr=True,
)
total_Z = p1d_log_mass(torch.arange(-200, 220)).exp().sum().item()
total_K = np.exp(log_P).sum()

print(" k   P(k)     log P(k)   E_u log p (quad)   E_u log p (MC ± se)    gap      KL(U||p(u|k))")
for k in levels:
    print(
        f"{k:2d}  {np.exp(log_P[k]):.4f}  {log_P[k]:9.4f}  {bound_quad[k]:12.4f}      "
        f"{bound_mc[k].item():9.4f} ± {bound_se[k].item():.4f}   {log_P[k] - bound_quad[k]:7.4f}   {kl_quad[k]:7.4f}"
    )
print(f"sum of P(k) over k = 0..16: {fmt(total_K)}  (the rest lies outside [0, 17))")

# %% [markdown]
# **Check.** Exact CDF differences agree with quadrature of the density (to 1e-10, well above
# `quad`'s own error estimates, below 1e-13 on these smooth integrands); Monte Carlo agrees with
# quadrature for the bound, within 5 standard errors at each of the 17 levels (a 4-s.e. deviation
# somewhere among 17 normal errors would have probability about $10^{-3}$, 5 s.e. far less); and,
# with both sides verified, for *every* level the bound lies below $\log P(k)$. Two sanity lines
# that hold by construction: the masses of all integer bins sum to 1 (the CDF differences
# telescope), and the gap equals the KL column (it is the same integral, rearranged as in the
# derivation above).

# %%
err_mass = np.max(np.abs(np.exp(log_P) - P_quad))
err_kl = np.max(np.abs((log_P - bound_quad) - kl_quad))
z_mc = np.max(np.abs(bound_mc.numpy() - bound_quad) / bound_se.numpy())
assert err_mass < 1e-10
assert z_mc < 5
assert np.all(log_P - bound_quad >= 0)
assert abs(total_Z - 1) < 1e-12 and err_kl < 1e-8  # sanity lines
print("max |P_cdf - P_quad| below 1e-10")
print(f"max |MC - quad| / se = {z_mc:.2f}")
print(f"min over k of log P(k) - E_u log p(k+u) = {np.min(log_P - bound_quad):.2g} (must be >= 0)")
print("sanity: |sum over all integers of P(k) - 1| below 1e-12;  max |gap - KL| below 1e-8")

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.plot(levels, np.log(freq), "o", color="gray", label="data: $\\log f_k$")
ax.plot(levels, log_P, "s", mfc="none", ms=8, label="model: $\\log P(k)$ (exact)")
ax.plot(levels, bound_quad, "v", label="bound: $E_u[\\log p(k+u)]$")
ax.set_xlabel("pixel value $k$")
ax.set_ylabel("log-probability (nats)")
ax.set_title("The dequantization bound lies below $\\log P(k)$ at every level")
ax.set_xticks(range(0, K, 2))
ax.legend(fontsize=9)
plt.show()

# %% [markdown]
# The bound is loosest at $1$ and $15$, next to the two narrow components that EM placed in the
# bins of $0$ and $16$: across $[1, 2)$ the tail of the component at $0.5$ (standard deviation
# $0.3$) falls by orders of magnitude, so $p(u \mid k)$ is far from uniform and the KL is large.
# Where the density is nearly flat across a bin ($k = 2, \dots, 14$) the gap is below $0.01$ nats. Note
# also that $\sum_{k=0}^{16} P(k) < 1$: the density spends some mass below $0$ and above $17$,
# where no data can ever be. §6 removes that waste.
#
# ## 4. Bits per dimension
#
# Likelihoods of data sets of different dimension are compared per dimension and in bits:
#
# $$\text{bpd}(x) = -\frac{\log_2 P(x)}{D} = -\frac{\log P(x)}{D \log 2}.$$
#
# It is the average code length per pixel of a lossless code built from the model. A uniform
# distribution over $K$ levels costs exactly $\log_2 K$ bits per dimension ($4.087$ for digits,
# $8$ for 8-bit images); a model is useful when it beats this. Since $\log P(x) \le 0$, a true
# bpd is never negative. With dequantization we can only report the bound,
# $-\mathbb E_u[\log p(x+u)] / (D\log 2) \;\ge\; \text{bpd}(x)$: an *upper* bound on the bits.
#
# **Rescaled data.** Models usually see $y = (x + u)/K \in [0,1)^D$ rather than $x + u \in [0, K)^D$.
# The map $y \mapsto K y$ has Jacobian $K^D$, so if $p_Y$ is the model's density of $y$, the
# density of $x + u$ is
#
# $$p(x + u) = p_Y\!\Big(\frac{x+u}{K}\Big)\, K^{-D}
#   \quad\Longrightarrow\quad
#   -\frac{\log_2 p(x+u)}{D} = -\frac{\log_2 p_Y(y)}{D} + \log_2 K .$$
#
# A bpd computed naively from the density in $[0,1)$ units is off by $\log_2 K$ — $8$ bits for
# 256 levels — and can even be negative {cite}`theis2016note,dinh2017density`.
#
# **Check** on Fashion-MNIST ($K = 256$, $D = 784$, 2000 test images) {cite}`xiao2017fashion`:
# a per-pixel Gaussian is fitted to dequantized data rescaled to $[0,1)$. We compute the bound
# (i) from the $[0,1)$ density, corrected by $\log_2 256$; (ii) from the *same* Gaussian
# rewritten in integer units (mean and standard deviation times 256), at the same noise draws;
# the two must agree to rounding. (iii) The exact discrete bpd (product of bin masses).
# (iv) For comparison, the same Gaussian with the open outer bins of §6.
#
# For a Gaussian the bound itself has a closed form, which lets us check the Monte Carlo
# estimate and Jensen's inequality without noise: with $\mathbb E_u[(x+u-m)^2] = (x+\tfrac12-m)^2 +
# \tfrac1{12}$ for $u \sim U[0,1)$,
#
# $$\mathbb E_u\big[\log\mathcal N(x+u;\, m, s^2)\big] = -\frac{(x+\tfrac12-m)^2 + \tfrac1{12}}{2s^2}
#   - \log s - \tfrac12\log 2\pi$$
#
# per pixel. The Monte Carlo bound (ii) must agree with it within 4 standard errors (of the
# average over the 4 noise draws per image), and for every image the exact $\log P(x)$ must lie
# above it.

# %%
fm, _ = load_fashion_mnist("test")
F_int = fm[:2000].reshape(2000, -1).long()
K_f, D_f = 256, F_int.shape[1]
g_f = torch.Generator().manual_seed(3)
y_unit = uniform_dequantize(F_int, K_f, g_f, scale=True)
m_unit, s_unit = y_unit.mean(0), y_unit.std(0)  # the per-pixel Gaussian, in [0, 1) units


def gauss_log_density(y, mean, std):
    return Normal(mean, std).log_prob(y).sum(-1)


u_eval = torch.rand((4, *F_int.shape), generator=g_f)  # 4 noise draws per image, shared below
lp_unit = gauss_log_density((F_int + u_eval) / K_f, m_unit, s_unit).mean(0)
lp_int = gauss_log_density(F_int + u_eval, K_f * m_unit, K_f * s_unit).mean(0)
naive_bpd = nats_to_bits_per_dim(-lp_unit.mean().item(), D_f)
corrected_bpd = nats_to_bits_per_dim(
    -log_density_to_integer_units(lp_unit, D_f, K_f).mean().item(), D_f
)
integer_bpd = nats_to_bits_per_dim(-lp_int.mean().item(), D_f)
exact_lp = discretized_normal_log_prob(F_int, K_f * m_unit, K_f * s_unit).sum(-1)
exact_bpd = nats_to_bits_per_dim(-exact_lp.mean().item(), D_f)
open_lp = discretized_normal_log_prob(F_int, K_f * m_unit, K_f * s_unit, K_f).sum(-1)
open_bpd = nats_to_bits_per_dim(-open_lp.mean().item(), D_f)
m_int, s_int = K_f * m_unit, K_f * s_unit  # the same Gaussian in integer units
closed_lp = (
    -0.5 * ((F_int + 0.5 - m_int) ** 2 + 1 / 12) / s_int**2
    - torch.log(s_int)
    - 0.5 * math.log(2 * math.pi)
).sum(-1)  # E_u[log p(x + u)] per image, exactly
closed_bpd = nats_to_bits_per_dim(-closed_lp.mean().item(), D_f)
lp_draws = gauss_log_density(F_int + u_eval, m_int, s_int)  # [4, N]: one value per noise draw
mc_se = ((lp_draws.var(0) / len(u_eval)).sum().sqrt() / len(F_int)).item()  # s.e. of lp_int.mean()
mc_minus_closed = lp_int.mean().item() - closed_lp.mean().item()
jensen_gap = exact_lp - closed_lp  # log P(x) - E_u log p(x + u) per image, nats
for label, value in (
    ("naive: from the [0,1) density", naive_bpd),
    ("(i)   corrected by +log2(256) = +8", corrected_bpd),
    ("(ii)  same density in integer units", integer_bpd),
    ("      the bound in closed form", closed_bpd),
    ("(iii) exact, bins [x, x+1)", exact_bpd),
    ("(iv)  exact, open outer bins (see §6)", open_bpd),
    ("uniform over 256 levels", math.log2(K_f)),
):
    print(f"{label:<40}{fmt(value):>8} bits/dim")
print(
    f"Monte Carlo bound minus closed form: {mc_minus_closed:+.3f} nats per image (s.e. {mc_se:.3f})"
)
print(
    f"exact log P(x) minus the bound: {jensen_gap.mean():.2f} nats per image on average "
    f"({nats_to_bits_per_dim(jensen_gap.mean().item(), D_f):.4f} bits/dim), "
    f"smallest over the images {jensen_gap.min():.2f}"
)
assert abs(corrected_bpd - integer_bpd) < 1e-9  # the same numbers in two units: round-off only
assert abs(mc_minus_closed) < 4 * mc_se
assert torch.all(jensen_gap >= 0)

# %% [markdown]
# The naive number is negative: read at face value, it would compress images into less than
# nothing. Corrected, the per-pixel Gaussian costs just under the 8 bits per pixel of the uniform
# distribution — one Gaussian per pixel describes pixels that are mostly exactly $0$ with a broad
# tail of ink very poorly. Its exact discrete bpd is only a little lower (the density is nearly
# flat inside most bins, so the KL gap is small). Giving the tail below $0$ to the level $0$
# (open outer bins, (iv)) helps far more: much of the Gaussian's mass was spent where no pixel
# value can be.
#
# ## 5. Whole images: dequantized training against training on integers
#
# Back to the digits, now as 64-dimensional vectors. We fit two continuous models, each in two
# ways: a **diagonal Gaussian** (closed-form maximum likelihood) and a **mixture of 10 diagonal
# Gaussians** (EM, 40 iterations, initialised at 10 random training images), once on the integers
# (with a standard-deviation floor) and once on dequantized data (fresh noise every iteration).
# For the dequantized fits we report the bound (Monte Carlo over the noise: 64 draws per held-out
# image, 8 per training image) and the
# exact discrete log-likelihood of the same density, $\log P(x) = \log \sum_c \pi_c \prod_d
# P_{c,d}(x_d)$, where $P_{c,d}$ is the mass of the bin $[x_d, x_d + 1)$ under component $c$.


# %%
def bpd(log_probs):
    """Average bits per dimension of a batch of log-probabilities (nats, all D dims together)."""
    return nats_to_bits_per_dim(-log_probs.mean().item(), D)


def diag_gmm_exact_log_prob(params, x_int, num_levels=None):
    """Exact log P(x) of the discretized mixture (closed bins, or open outer bins)."""
    log_pi, mu, std = params
    per_dim = discretized_normal_log_prob(x_int[:, None, :], mu, std, num_levels)  # [N, C, D]
    return torch.logsumexp(log_pi + per_dim.sum(-1), dim=-1)


results = {}  # model name -> (train bpd, test bpd, what the number is)
g5 = torch.Generator().manual_seed(5)

# integer-trained: one diagonal Gaussian (two floors) and a mixture of 10 by EM
for floor in (1e-3, 1e-6):
    gauss_raw = (
        torch.zeros(1),
        X_train.double().mean(0)[None],
        X_train.double().std(0).clamp(min=floor)[None],
    )
    results[f"diag. Gaussian, integers, std floor {floor:g}"] = (
        bpd(diag_gmm_log_prob(gauss_raw, X_train.double())),
        bpd(diag_gmm_log_prob(gauss_raw, X_test.double())),
        "density, not a probability",
    )
init_idx = torch.randperm(len(X_train), generator=g5)[:10]
init_mu, init_std = X_train[init_idx].double() + 0.5, torch.full((10, D), 3.0)
gmm_raw, _ = fit_diag_gmm(lambda: X_train.double(), init_mu, init_std, 40, 1e-6)
results["10-Gaussian mixture, integers, std floor 1e-06"] = (
    bpd(diag_gmm_log_prob(gmm_raw, X_train.double())),
    bpd(diag_gmm_log_prob(gmm_raw, X_test.double())),
    "density, not a probability",
)

# dequantized: the same two models, with fresh noise (the Gaussian's MLE is closed-form)
y_train = uniform_dequantize(X_train, K, g5)
gauss_deq = (torch.zeros(1), y_train.mean(0)[None], y_train.std(0)[None])
gmm_deq, _ = fit_diag_gmm(lambda: uniform_dequantize(X_train, K, g5), init_mu, init_std, 40, 1e-6)
for name, params in (("diag. Gaussian", gauss_deq), ("10-Gaussian mixture", gmm_deq)):
    log_density = lambda y, p=params: diag_gmm_log_prob(p, y)  # noqa: E731
    bound_train = dequantization_bound(log_density, X_train, 8, g5)
    bound_test, se_test = dequantization_bound(log_density, X_test, 64, g5, return_stderr=True)
    exact_test = diag_gmm_exact_log_prob(params, X_test)
    results[f"{name}, dequantized: bound"] = (bpd(bound_train), bpd(bound_test), "upper bound")
    results[f"{name}, dequantized: exact, bins [x, x+1)"] = (
        bpd(diag_gmm_exact_log_prob(params, X_train)),
        bpd(exact_test),
        "exact",
    )
    results[f"{name}, dequantized: exact, open outer bins"] = (
        bpd(diag_gmm_exact_log_prob(params, X_train, K)),
        bpd(diag_gmm_exact_log_prob(params, X_test, K)),
        "exact",
    )
gap = exact_test - bound_test  # for the mixture: per held-out image, in nats

n_floor = int((gmm_raw[2] <= 1e-6).sum())
print(
    f"EM on integers: {n_floor} of {gmm_raw[2].numel()} standard deviations sit at the floor 1e-6"
)
print(f"EM on dequantized data: smallest standard deviation {fmt(gmm_deq[2].min().item())}\n")
for name, (tr, te, kind) in results.items():
    print(f"{name:<58} train {fmt(tr):>9}  test {fmt(te):>9}   ({kind})")

# %% [markdown]
# **Check.** For every held-out image the exact $\log P(x)$ of the dequantized mixture lies above
# its Monte Carlo bound (allowing 4 standard errors of the estimate); the integer-trained mixture
# reports a "bpd" below zero on its training data, impossible for a probability.

# %%
raw_name = "10-Gaussian mixture, integers, std floor 1e-06"
print(
    f"held-out images with exact log P above the Monte Carlo bound: {int((gap > 0).sum())} of {len(gap)}"
)
print(
    f"min over images of (log P - bound) = {fmt(gap.min().item())} nats, "
    f"largest standard error {fmt(se_test.max().item())}"
)
print(f"mixture trained on integers: training 'bpd' {fmt(results[raw_name][0])}")
assert torch.all(gap > -4 * se_test)
assert results[raw_name][0] < 0

# %% [markdown]
# ## 6. Discrete likelihoods: model the integers directly
#
# The other way out is to give the model a discrete likelihood from the start
# {cite}`oord2016pixel,salimans2017pixelcnn`.
#
# **Categorical.** One probability vector per pixel, $P(x_d = k) = \theta_{d,k}$. Maximum
# likelihood is the table of frequencies (we add one pseudo-count per level so that unseen values
# keep a small probability). It sums to one by construction, but it knows nothing about the order
# of the levels: $7$ is no closer to $8$ than to $0$, and 256 levels need 255 parameters per pixel.
#
# **Discretized logistic.** Keep a continuous distribution with its sense of order — a logistic
# with location $\mu$ and scale $s$, CDF $F(t) = \operatorname{sigmoid}((t - \mu)/s)$ — but use
# only its bin masses, and let the two outer bins absorb the tails:
#
# $$P(x) = F(b_x) - F(a_x), \qquad
#   [a_x, b_x) = \begin{cases} (-\infty, 1) & x = 0,\\ [x, x+1) & 0 < x < K-1,\\ [K-1, \infty) & x = K-1. \end{cases}$$
#
# The sum telescopes: $\sum_{x=0}^{K-1} P(x) = F(\infty) - F(-\infty) = 1$, exactly. No mass is
# wasted outside the data range (compare $\sum_{k=0}^{16} P(k) < 1$ in §3), and a pile-up of data
# at $0$ or $K-1$ is captured by the tail mass — the reason PixelCNN++ uses it
# {cite}`salimans2017pixelcnn`. The discretized normal of §5 with open outer bins is the same
# construction with a Gaussian CDF; for numerical stability both are computed from log-CDFs
# (`dgmlib.dequantization`; Exercise 1 asks you to write the logistic one).
#
# **Check.** The 256 masses sum to one for random parameters, including extreme ones.

# %%
g6 = torch.Generator().manual_seed(6)
loc = torch.rand(1000, generator=g6) * 400 - 72  # locations from -72 to 328
scale = torch.exp(torch.rand(1000, generator=g6) * 12 - 7)  # scales from 1e-3 to 150
levels_256 = torch.arange(256)[:, None]
sums_log = discretized_logistic_log_prob(levels_256, loc, scale, 256).exp().sum(0)
sums_norm = discretized_normal_log_prob(levels_256, loc, scale, 256).exp().sum(0)
for name, sums in (("logistic", sums_log), ("normal", sums_norm)):
    # float64 sum of 256 masses computed in log space: round-off ~1e-14; a lost tail or a
    # double-counted bin would show at the level of the mass involved
    assert (sums - 1).abs().max() < 1e-12
    print(
        f"discretized {name:<8}: |sum over 256 levels - 1| below 1e-12 for all 1000 parameter pairs"
    )

# %% [markdown]
# Now fit three discrete models to the digits by maximizing their exact log-likelihood: the
# per-pixel categorical (closed form), a per-pixel discretized logistic (gradient ascent with
# Adam on $\mu_d$ and $\log s_d$), and a mixture of 10 products of categoricals (EM).

# %%
counts_train = torch.nn.functional.one_hot(X_train, K).sum(0).double()  # [D, K] histograms
flat_train = torch.nn.functional.one_hot(X_train, K).reshape(len(X_train), D * K).double()
flat_test = torch.nn.functional.one_hot(X_test, K).reshape(len(X_test), D * K).double()

# per-pixel categorical with one pseudo-count per level
log_theta = torch.log((counts_train + 1.0) / (counts_train + 1.0).sum(-1, keepdim=True))  # [D, K]
results["categorical per pixel"] = (
    bpd(flat_train @ log_theta.reshape(-1)),
    bpd(flat_test @ log_theta.reshape(-1)),
    "exact",
)

# per-pixel discretized logistic: gradient ascent on the exact log-likelihood, which for
# independent pixels only needs each pixel's histogram of values
loc = X_train.double().mean(0).clone().requires_grad_(True)
log_scale = torch.zeros(D, requires_grad=True)
opt = torch.optim.Adam([loc, log_scale], lr=0.05)
all_levels = torch.arange(K)[None, :]  # [1, K] against loc, scale [D, 1]
for _ in range(300):
    opt.zero_grad()
    log_p = discretized_logistic_log_prob(all_levels, loc[:, None], log_scale.exp()[:, None], K)
    loss = -(counts_train * log_p).sum() / len(X_train)
    loss.backward()
    opt.step()
log_p_logistic = log_p.detach().reshape(-1)  # [D * K] table of log P(x_d = k)
results["discretized logistic per pixel"] = (
    bpd(flat_train @ log_p_logistic),
    bpd(flat_test @ log_p_logistic),
    "exact",
)

# mixture of 10 products of categoricals, by EM (one-hot data times log-probability tables)
resp = torch.rand(len(X_train), 10, generator=g6)
resp = resp / resp.sum(1, keepdim=True)
for _ in range(40):
    n_c = resp.sum(0)
    log_pi_cat = torch.log(n_c / n_c.sum())
    c = (resp.T @ flat_train).reshape(10, D, K) + 1.0  # weighted counts plus one pseudo-count
    log_theta_c = torch.log(c / c.sum(-1, keepdim=True)).reshape(10, D * K)
    resp = torch.softmax(log_pi_cat + flat_train @ log_theta_c.T, dim=1)


def cat_mixture_log_prob(flat_one_hot):
    return torch.logsumexp(log_pi_cat + flat_one_hot @ log_theta_c.T, dim=1)


results["mixture of 10 categorical products"] = (
    bpd(cat_mixture_log_prob(flat_train)),
    bpd(cat_mixture_log_prob(flat_test)),
    "exact",
)
for name in list(results)[-3:]:
    tr, te, kind = results[name]
    print(f"{name:<40} train {fmt(tr):>6}  test {fmt(te):>6}   ({kind})")

# %% [markdown]
# ## 7. One table, the same data
#
# All numbers are bits per dimension on the digits (lower is better); "test" is the 297 held-out
# images. The uniform distribution over 17 levels costs $\log_2 17 = 4.087$.

# %%
print(f"{'model':<58}{'train':>10}{'test':>10}   what the number is")
print("-" * 108)
for name, (tr, te, kind) in results.items():
    print(f"{name:<58}{fmt(tr):>10}{fmt(te):>10}   {kind}")
print(f"{'uniform over 17 levels':<58}{fmt(math.log2(K)):>10}{fmt(math.log2(K)):>10}   exact")

# the pixels that are 0 in every training image, and both per-pixel models without them
constant = torch.nonzero((X_train == 0).all(0)).flatten()
others = torch.ones(D, dtype=torch.bool)
others[constant] = False
_, mu_floor, std_floor = gauss_raw  # the last diagonal Gaussian fitted above: floor 1e-6
gauss_pixel_lp = Normal(mu_floor, std_floor).log_prob(X_test.double())  # [N, D] per pixel
cat_pixel_lp = log_theta[torch.arange(D), X_test]  # [N, D] log-probabilities per pixel
n_others = int(others.sum())
print(
    f"\n{len(constant)} pixels are 0 in every training image (row, column): "
    f"{[(int(i) // 8, int(i) % 8) for i in constant]}"
)
bpd_others = {
    name: nats_to_bits_per_dim(-lp[:, others].sum(1).mean().item(), n_others)
    for name, lp in (("gauss", gauss_pixel_lp), ("cat", cat_pixel_lp))
}
print(
    f"test bpd on the other {n_others} pixels: diag. Gaussian, floor 1e-06 "
    f"{fmt(bpd_others['gauss'])} | categorical per pixel {fmt(bpd_others['cat'])}"
)

# %% [markdown]
# How to read it:
#
# - **Integer-trained densities** report numbers that depend on an arbitrary floor and can be
#   pushed below zero by lowering it. They are not bits of anything; never put them in a table
#   next to real likelihoods. The single Gaussian with floor $10^{-6}$ seems to beat the exact
#   per-pixel categorical only because three border pixels (printed below the table) are $0$ in
#   every training image and get the floor as their standard deviation: on the other 61 pixels it
#   is far behind. The mixture "wins" on its training data and is
#   absurd on held-out images, where one pixel a single level away from a collapsed component
#   costs about $1/(2 \cdot 10^{-12})$ nats under it.
# - **Dequantized densities** report an *upper bound* on their own discrete bpd; the exact value
#   of the same density is lower by the dequantization gap. Both are honest, but only comparable
#   with other models' bounds or exact values if one says which is which.
# - **Open outer bins** make a large difference on this data: half of the pixels are $0$, and a
#   Gaussian centred near $0$ wastes up to half its mass below the data range.
# - **Discrete likelihoods** are exact and, on data with so few levels, strong: the categorical
#   mixture is the best model here. With 256 levels and neural networks the picture changes —
#   order-aware discrete likelihoods (discretized logistic mixtures) and dequantized flows are
#   the common choices {cite}`salimans2017pixelcnn,ho2019flow`, and the latter may report only a
#   bound {cite}`theis2016note`.
#
# ## Exercises
#
# ### Exercise 1 — the discretized logistic likelihood
#
# Implement `my_discretized_logistic_log_prob(x_int, loc, scale, num_levels)`: the elementwise
# log-probability of the integers `x_int` under a logistic with location `loc` and scale `scale`
# (all broadcast together), discretized to bins $[x, x+1)$, with open outer bins $(-\infty, 1)$
# and $[K-1, \infty)$ when `num_levels` $= K$ is given. Work in log space: $\log
# \operatorname{sigmoid}(z) = -\operatorname{softplus}(-z)$, and $\log(e^a - e^b) = a +
# \log(-\operatorname{expm1}(b - a))$. Far in the upper tail both CDF values round to 1; use the
# symmetry $\operatorname{sigmoid}(b) - \operatorname{sigmoid}(a) = \operatorname{sigmoid}(-a) -
# \operatorname{sigmoid}(-b)$ there.


# %%
def my_discretized_logistic_log_prob(x_int, loc, scale, num_levels=None):
    ### BEGIN SOLUTION
    x = torch.as_tensor(x_int).double()
    za, zb = (x - loc) / scale, (x + 1.0 - loc) / scale
    bottom = torch.zeros_like(x, dtype=torch.bool) if num_levels is None else x == 0
    top = torch.zeros_like(x, dtype=torch.bool) if num_levels is None else x == num_levels - 1
    upper = (za > 0) & ~bottom  # above the location: use the mirrored CDF

    def log_cdf(z):
        return -torch.nn.functional.softplus(-z)

    minus_inf = torch.tensor(-math.inf)
    log_hi = torch.where(upper, log_cdf(-za), torch.where(top, torch.tensor(0.0), log_cdf(zb)))
    log_lo = torch.where(
        upper,
        torch.where(top, minus_inf, log_cdf(-zb)),
        torch.where(bottom, minus_inf, log_cdf(za)),
    )
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=0.0)))
    ### END SOLUTION


check_discretized_logistic(my_discretized_logistic_log_prob)

# %% [markdown]
# ### Exercise 2 — bits per dimension of a model of rescaled data
#
# A model gives log-densities of data rescaled to $[0,1)^D$. Implement
# `my_dequantized_bpd(log_density_unit, x_int, num_levels, num_samples, generator)` returning, for
# each row of the integer matrix `x_int` $[N, D]$, the Monte Carlo dequantization bound in bits per
# dimension: draw `num_samples` noise vectors $u$ with `torch.rand(..., generator=generator)`, form
# $y = (x + u)/K$, average $\log p_Y(y)$ over the samples, apply the change of variables of §4 and
# convert to bits per dimension. `log_density_unit` maps a tensor $[\dots, D]$ to $[\dots]$.


# %%
def my_dequantized_bpd(log_density_unit, x_int, num_levels, num_samples, generator):
    ### BEGIN SOLUTION
    n, d = x_int.shape
    u = torch.rand((num_samples, n, d), generator=generator, dtype=torch.float64)
    y = (x_int.double() + u) / num_levels
    log_p_int = log_density_unit(y).mean(0) - d * math.log(num_levels)
    return -log_p_int / (d * math.log(2.0))
    ### END SOLUTION


check_dequantized_bpd(my_dequantized_bpd)

# %% [markdown]
# ### Exercise 3 (optional, open-ended) — variational dequantization
#
# Section 3 showed that the gap of the uniform bound is $\mathrm{KL}(U \,\|\, p(u \mid x))$. Replace
# the uniform by a learned $q(u \mid x)$ on $[0,1)$ — for the one-dimensional mixture, a Beta
# distribution per level $k$ — and maximize $\mathbb E_{q}[\log p(k+u) - \log q(u \mid k)]$. Check
# that it is still $\le \log P(k)$ and that it is tighter than the uniform bound at $k = 0$ and
# $k = 16$ {cite}`ho2019flow`.
#
# ## Summary
#
# - A continuous density assigns *densities*, not probabilities, to integers; maximum likelihood
#   can push them to infinity by collapsing mass onto the integers. EM finds this degenerate
#   solution on pixel values by itself, and the reported likelihood is set by an arbitrary floor.
# - Any density $p$ induces a discrete distribution $P(x) = \int_{[0,1)^D} p(x+u)\,\mathrm du$
#   that sums to one. Fitting $p$ to uniformly dequantized data $x + u$ maximizes
#   $\mathbb E_u[\log p(x+u)] \le \log P(x) \le 0$ (Jensen), a bounded objective; the gap is
#   $\mathrm{KL}(U \,\|\, p(u \mid x))$, the ELBO gap of Lecture 01 with $u$ as latent variable.
# - Bits per dimension are $-\log_2 P(x)/D$. A density of data rescaled to $[0,1)$ needs
#   $+\log_2 K$ per dimension ($+8$ for 8-bit images) before it is comparable.
# - Discrete likelihoods (categorical, discretized logistic with open outer bins) give exact
#   probabilities that sum to one and waste no mass outside the data range.
# - Always say whether a bpd is exact or a bound, and never report a density on integers as a
#   likelihood.
#
# ## References
#
# - {cite}`uria2013rnade` — uniform noise added to discrete data to train a continuous density.
# - {cite}`theis2016note` — the dequantization bound and the pitfalls of evaluating generative models.
# - {cite}`dinh2017density` — a flow trained on dequantized, rescaled images, reported in bits per dimension.
# - {cite}`salimans2017pixelcnn` — the discretized logistic mixture likelihood.
# - {cite}`oord2016pixel` — 256-way categorical pixel likelihoods.
# - {cite}`ho2019flow` — variational dequantization.
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.
