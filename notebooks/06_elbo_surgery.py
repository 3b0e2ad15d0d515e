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
# # Lecture 06 — ELBO surgery and learned priors
#
# Every VAE so far had the same prior, $p(\mathbf z) = \mathcal N(0, I)$, chosen for convenience
# and never questioned. Its only role in training is the KL term of the ELBO, which pulls each
# posterior $q(\mathbf z\mid\mathbf x)$ towards it. This lecture takes that term apart. Averaged
# over a data set, it splits *exactly* into two pieces: the information the code carries about
# which data point it came from, and the mismatch between the prior and the distribution of all
# codes together — the **aggregated posterior**. Only the second piece depends on the prior, and
# it vanishes when the prior *is* the aggregated posterior. That prior is too expensive and
# memorises the training set, so we learn approximations of it instead: a mixture of Gaussians,
# the VampPrior, and a normalizing flow. In two dimensions we can finally see what goes wrong with
# $\mathcal N(0, I)$: **prior holes**, regions the prior favours but no image is encoded to.
#
# **What you will learn**
#
# - **ELBO surgery** {cite:p}`hoffman2016elbo`: the average KL term equals
#   $I_q(n;\mathbf z) + \mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$, with
#   $0 \le I_q \le \log N$ — derived, then checked on Gaussian encoders where every term is known;
# - the decomposition measured on the trained VAE of Lecture 02 over all 60 000 training images;
# - the same KL term as **cross-entropy minus entropy**: the prior sees the posteriors only
#   through the aggregated posterior, the entropy term widens each posterior, the cross-entropy
#   term pulls them into the prior's mass; closed forms checked against Monte Carlo, and the
#   link to the surgery identity;
# - the **optimal prior** is the aggregated posterior; compared numerically with other priors,
#   and its overfitting measured on test images;
# - three **learned priors** — a mixture of Gaussians, the **VampPrior**
#   {cite:p}`tomczak2018vae` and a **RealNVP flow prior** {cite:p}`dinh2017density` — each checked
#   against an independent computation (torch.distributions, the explicit mixture formula, an
#   autograd Jacobian), and how to train a VAE with a prior that has no closed-form KL;
# - eight VAEs trained with the four priors (2 and 10 latent dimensions), compared by test ELBO,
#   importance-sampled NLL and the surgery terms;
# - **prior holes**, drawn in a two-dimensional latent space, measured, and decoded;
# - the **over-regularisation** of $\mathcal N(0, I)$, measured: its cost in the bound, how much
#   of it a refitted prior recovers, and what it does to the encoder (inactive units, the
#   information carried).
#
# **Prerequisites:** Lecture 01 (the ELBO, KL divergences), Lecture 02 (the VAE and its
# checkpoint), Lecture 05 (the importance-weighted estimate of the negative log-likelihood).
# Entropy and mutual information are recalled where they are used.
#
# **Follows:** the course's lecture notes on ELBO surgery and VAE priors (lecture 7 of the
# *Deep Generative Models* slides: the surgery theorem, the optimal prior, the flow-based prior),
# and the part on the VAE prior in the hand-written notes on deep latent-variable models (the
# aggregated posterior and its holes). The derivations and checks below are worked out
# independently.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import dgmlib
from dgmlib import pretrained
from dgmlib.bounds import estimate_nll
from dgmlib.checks import check_aggregate_posterior_log_prob, check_mixture_prior_log_prob
from dgmlib.data import binarize_fixed, load_fashion_mnist
from dgmlib.diagnostics import active_units
from dgmlib.distributions import (
    LOG_2PI,
    gaussian_log_prob,
    kl_normal_std_normal,
    standard_normal_log_prob,
)
from dgmlib.models import VAE, MixtureOfGaussiansPrior
from dgmlib.plot import image_grid
from dgmlib.stats import fmt, mean_se
from dgmlib.surgery import (
    aggregate_posterior_log_prob,
    average_kl_standard_normal,
    elbo_surgery,
    prior_holes,
    sample_aggregate_posterior,
    summarize_surgery,
    surgery_samples,
)
from dgmlib.widgets import choose, explore

dgmlib.notebook_setup(0)  # seeds and plot style
dgmlib.set_threads(1)  # one thread: small tensor operations are fastest and reproducible
DT = torch.float64  # the surgery checks run in double precision


@torch.no_grad()
def encode_all(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs (mu, logvar) for every image of x, in float64: [N, Z] each."""
    mu, logvar = zip(*(model.encode(xb) for xb in x.split(5000)), strict=True)
    return torch.cat(mu).to(DT), torch.cat(logvar).to(DT)


# the data of every section: both splits binarized once with seed 0 (as in Lectures 02 and 05)
train_images, train_labels = load_fashion_mnist("train")
test_images, _ = load_fashion_mnist("test")
x_train = binarize_fixed(train_images, seed=0).unsqueeze(1)  # [60000, 1, 28, 28]
x_test = binarize_fixed(test_images, seed=0).unsqueeze(1)  # [10000, 1, 28, 28]
N_TRAIN = len(x_train)
print(f"training images: {N_TRAIN}, log N = {math.log(N_TRAIN):.4f} nats")

# %% [markdown]
# ## 1. Where the KL term goes: ELBO surgery
#
# Take a training set $\mathbf x_1, \dots, \mathbf x_N$ and an encoder $q(\mathbf z\mid\mathbf x)$.
# Pick an index $n$ uniformly at random and encode $\mathbf x_n$: this defines a joint
# distribution over *index and code*,
#
# $$
# q(n, \mathbf z) = \tfrac1N\, q(\mathbf z\mid\mathbf x_n), \qquad
# q(n) = \tfrac1N, \qquad
# q(\mathbf z) = \frac1N\sum_{n=1}^N q(\mathbf z\mid\mathbf x_n).
# $$
#
# The marginal $q(\mathbf z)$ is the **aggregated posterior**: the distribution of the code of a
# random training image. For a Gaussian encoder it is a mixture of $N$ Gaussians.
#
# The KL term of the ELBO, averaged over the training set, is an expectation under $q(n,
# \mathbf z)$. Add and subtract $\log q(\mathbf z)$ inside it:
#
# $$
# \overline{\mathrm{KL}}
# = \frac1N\sum_n \mathrm{KL}\big(q(\mathbf z\mid\mathbf x_n)\,\|\,p(\mathbf z)\big)
# = \mathbb E_{q(n,\mathbf z)}\Big[\log\frac{q(\mathbf z\mid\mathbf x_n)}{q(\mathbf z)}\Big]
#   + \mathbb E_{q(n,\mathbf z)}\Big[\log\frac{q(\mathbf z)}{p(\mathbf z)}\Big].
# $$
#
# The second integrand depends on $\mathbf z$ only, so its expectation is taken under the marginal
# $q(\mathbf z)$: it is $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$. In the first, the ratio
# $q(\mathbf z\mid\mathbf x_n)/q(\mathbf z)$ equals $q(n,\mathbf z)/(q(n)\,q(\mathbf z))$, so the
# expectation is the KL divergence between the joint and the product of its marginals — the
# **mutual information** $I_q(n;\mathbf z)$ between the index and the code. Hence
#
# $$
# \boxed{\;\overline{\mathrm{KL}}
#   = I_q(n;\mathbf z) + \mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z)\big)\;}
# $$
#
# and, for the ELBO averaged over the data set,
#
# $$
# \frac1N\sum_n \mathrm{ELBO}(\mathbf x_n)
# = \underbrace{\frac1N\sum_n \mathbb E_{q(\mathbf z\mid\mathbf x_n)}\log p(\mathbf x_n\mid\mathbf z)}_{\text{reconstruction}}
# - I_q(n;\mathbf z) - \mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z)\big).
# $$
#
# **Two bounds on the information.** $I_q \ge 0$, as any KL divergence. For the upper bound, the
# mixture contains the component of $\mathbf x_n$ with weight $1/N$, so
# $q(\mathbf z) \ge q(\mathbf z\mid\mathbf x_n)/N$ for every $n$ and $\mathbf z$:
#
# $$
# \log q(\mathbf z\mid\mathbf x_n) - \log q(\mathbf z) \le \log N
# \quad\text{pointwise, hence}\quad I_q(n;\mathbf z) \le \log N .
# $$
#
# (Equivalently: $I_q = H(n) - H(n\mid\mathbf z)$ and a discrete entropy is non-negative.) The bound
# is reached when the posteriors do not overlap — the code then names its image — and
# $I_q = 0$ when every image has the same posterior.
#
# **What it means.** The KL term pays for two different things. $I_q$ is the price of
# *information*: a decoder can only reconstruct $\mathbf x_n$ from $\mathbf z$ if the code tells
# which image it came from, and this part is paid whatever the prior. Only
# $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$ involves the prior, and it asks the prior to match
# the *aggregated* posterior, not each posterior. With $N = 60\,000$ images $\log N \approx
# 11.0$ nats, so whatever a model spends on KL beyond 11 nats per image is, necessarily, mismatch
# between the codes and the prior.
#
# **Monte Carlo.** Draw $(n_i, \mathbf z_i) \sim q(n, \mathbf z)$ and average the three per-draw
# terms $\log q(\mathbf z_i\mid\mathbf x_{n_i}) - \log p(\mathbf z_i)$,
# $\log q(\mathbf z_i) - \log p(\mathbf z_i)$ and $\log q(\mathbf z_i\mid\mathbf x_{n_i}) -
# \log q(\mathbf z_i)$; the identity then holds draw by draw. The expensive part is
# $\log q(\mathbf z_i)$, a mixture of $N$ Gaussians at each draw: `dgmlib.surgery` evaluates it
# with `dgmlib.kernels.mixture_logpdf`, which never forms the $M \times N \times Z$ tensor.
#
# **Check: three encoders whose terms are known.** $N = 2000$ data points $x_n \sim \mathcal N(0,
# I_2)$, prior $\mathcal N(0, I_2)$, and three Gaussian encoders:
#
# 1. *uninformative*: $q(\mathbf z\mid x_n) = \mathcal N(0, I)$ for every $n$ — every term is 0;
# 2. *separated*: the posteriors sit on a square grid of spacing $0.1$ with standard deviation
#    $0.005$ — twenty standard deviations apart, so they do not overlap and $I_q = \log N$;
# 3. *Gaussian channel*: $q(\mathbf z\mid x_n) = \mathcal N(a x_n, v I)$ with $a = 1.5$,
#    $v = 0.25$. For large $N$ the aggregated posterior is close to the Gaussian $G$ with the mean
#    $m_d$ and variance $s_d^2 = a^2\operatorname{Var}(x_d) + v$ of the codes (for
#    $N \to \infty$, $\bar q = \mathcal N(0, (a^2 + v) I)$), so per dimension
#    $I_q \approx \tfrac12\log(s_d^2/v)$ — the capacity formula, entropy of the code minus
#    entropy of its noise — and $\mathrm{KL}(q(\mathbf z)\,\|\,p) \approx \tfrac12(s_d^2 +
#    m_d^2 - 1 - \log s_d^2)$.
#
# The average KL is exact in all three (a closed form per data point), and so are the terms of
# cases 1 and 2. The formulas of case 3 are not, and their error is known in sign and bounded in
# size. Because $G$ has the mean and variance of $q(\mathbf z)$ and $\log p$ is quadratic,
# $H[q(\mathbf z)] = H[G] - \mathrm{KL}(q(\mathbf z)\,\|\,G)$ and $\mathbb E_q \log p =
# \mathbb E_G \log p$: the true $I_q$ lies *below* the capacity formula and the true marginal KL
# *above* its formula, both by $\mathrm{KL}(q(\mathbf z)\,\|\,G) \ge 0$. That divergence is at
# most $\mathrm{KL}(q(\mathbf z)\,\|\,\bar q)$ ($G$ is the closest diagonal Gaussian), which is
# at most $\log(1 + \chi^2(q(\mathbf z)\,\|\,\bar q))$ (Jensen's inequality); and for $N$
# random data points the expected $\chi^2$ divergence of the mixture from its mean $\bar q$ is
# exactly $(C^Z - 1)/N$ with $C = (a^2 + v)/(v\sqrt{2\pi})$. Averaged over data sets the error
# of case 3 is therefore at most $\log(1 + (C^Z - 1)/N)$, printed below; we allow $0.02$ nats for
# it, more than twice that bound, since one data set can exceed the average.
#
# **Checks.** (i) The Monte Carlo average KL agrees with the closed form within 4 standard errors;
# $I_q$ and the marginal KL agree with their exact values within 4 standard errors (plus $0.02$
# nats in case 3). (ii) Every draw satisfies $\log q(\mathbf z\mid\mathbf x_n) - \log q(\mathbf z)
# \le \log N$ to $10^{-9}$ (the mixture kernel expands the squares $(\mathbf z - \boldsymbol\mu)^2$,
# whose float64 round-off is about $10^{-10}$ when $\sigma = 0.005$). (iii) The information is
# estimated a second way, without the index $n_i$ each code was drawn from:
# $I_q = \log N - \mathbb E_{q(\mathbf z)}\, H[q(n\mid\mathbf z)]$, with the posterior over the
# index $q(n\mid\mathbf z_i) \propto q(\mathbf z_i\mid\mathbf x_n)$ computed for every $n$ by one
# matrix product (not by the mixture kernel). This Rao–Blackwellised estimate averages over $n$
# given $\mathbf z_i$ what the first one samples, so the per-draw difference of the two has mean
# exactly zero: they must agree within 4 standard errors of that difference, plus $10^{-9}$ for
# round-off where both are exact. The three per-draw terms satisfy the identity by construction;
# the cell asserts it only as a sanity line.


# %%
@torch.no_grad()
def index_entropy(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Entropy H[q(n | z_i)] of the posterior over the data index at each code: [M], nats.

    q(n | z_i) is proportional to q(z_i | x_n); its [M, N] log-terms come from one matrix product
    per chunk (the square (z - mu)^2 / var expanded, in float64 after centring on the mean of mu).
    Uses neither the index each z_i was drawn from nor dgmlib's mixture kernel.
    """
    centre = mu.mean(0)
    m, w = mu - centre, torch.exp(-logvar)
    b = torch.cat([-0.5 * w, m * w], 1).T  # [2Z, N]
    const = -0.5 * (logvar + m * m * w).sum(1)  # [N]; -Z/2 log(2 pi) is common to all n
    entropies = []
    for zc in (z.to(DT) - centre).split(250):
        log_terms = torch.addmm(const, torch.cat([zc * zc, zc], 1), b)  # [chunk, N]
        log_post = log_terms - torch.logsumexp(log_terms, 1, keepdim=True)  # log q(n | z_i)
        entropies.append(-(log_post.exp() * log_post).sum(1))
    return torch.cat(entropies)


g = torch.Generator().manual_seed(1)
n_toy = 2000
x_toy = torch.randn(n_toy, 2, generator=g, dtype=DT)
a_ch, v_ch = 1.5, 0.25
toy = {
    "uninformative": (torch.zeros(n_toy, 2, dtype=DT), torch.zeros(n_toy, 2, dtype=DT)),
    "separated": (  # the first 2000 points of a grid of spacing 0.1, posterior sd 0.005
        0.1
        * torch.cartesian_prod(torch.arange(-22.0, 23.0), torch.arange(-22.0, 23.0))[:n_toy].to(DT),
        torch.full((n_toy, 2), 2 * math.log(0.005), dtype=DT),
    ),
    "Gaussian channel": (a_ch * x_toy, torch.full((n_toy, 2), math.log(v_ch), dtype=DT)),
}
# the Gaussian channel: q(z) is close to the Gaussian with the codes' mean and variance
m_code = a_ch * x_toy.mean(0)
var_code = a_ch**2 * x_toy.var(0, correction=0) + v_ch
exact_toy = {  # (I, KL(q(z) || p)); None: from the identity
    "uninformative": (0.0, 0.0),
    "separated": (math.log(n_toy), None),
    "Gaussian channel": (
        (0.5 * torch.log(var_code / v_ch)).sum().item(),
        (0.5 * (var_code + m_code**2 - 1 - torch.log(var_code))).sum().item(),
    ),
}
# the bound on the expected error of the Gaussian formulas, log(1 + (C^Z - 1) / N)
c_chi2 = (a_ch**2 + v_ch) / (v_ch * math.sqrt(2 * math.pi))
approx_bound = math.log(1 + (c_chi2**2 - 1) / n_toy)
approx_tol = {"uninformative": 0.0, "separated": 0.0, "Gaussian channel": 0.02}
# float64 round-off of the expanded squares: about 2e-16 |z|^2 / sd^2, 1e-10 at sd = 0.005
ROUNDOFF = 1e-9


def r4(v: float) -> float:
    return round(v, 4) + 0.0  # four decimals, no "-0.0000"


print(
    f"{'encoder':18s}  avg KL: MC  exact     I: MC +- s.e.    exact   "
    f"KL(q(z)||p): MC +- s.e.   exact"
)
second = []
for name, (mu_t, lv_t) in toy.items():
    smp = surgery_samples(mu_t, lv_t, standard_normal_log_prob, 5000, generator=g)
    st = summarize_surgery(smp)
    avg_exact = average_kl_standard_normal(mu_t, lv_t)
    i_exact, m_exact = exact_toy[name]
    m_exact = avg_exact - i_exact if m_exact is None else m_exact
    row = [st.avg_kl, avg_exact, st.mutual_info, st.mutual_info_se, i_exact]
    row += [st.marginal_kl, st.marginal_kl_se, m_exact]
    a0, a1, i0, i_se, i1, k0, k_se, k1 = (r4(v) for v in row)
    print(
        f"{name:18s}  {a0:9.4f} {a1:9.4f}   {i0:7.4f} +- {i_se:.4f} {i1:7.4f}   "
        f"{k0:10.4f} +- {k_se:.4f} {k1:9.4f}"
    )
    info_draw = smp.log_q_cond - smp.log_q  # the per-draw information term
    info_rb = math.log(n_toy) - index_entropy(smp.z, mu_t, lv_t)  # without the index n_i
    diff = info_draw - info_rb
    diff_mean, diff_se = mean_se(diff)
    second.append((name, *mean_se(info_rb), diff_mean, diff_se))
    # sanity only (holds by construction): the three per-draw terms satisfy the identity
    per_draw = (smp.log_q_cond - smp.log_p) - (smp.log_q - smp.log_p) - info_draw
    assert per_draw.abs().max() < ROUNDOFF
    # the checks
    assert info_draw.max() <= math.log(n_toy) + ROUNDOFF  # I <= log N, draw by draw
    assert abs(diff_mean) <= 4 * diff_se + ROUNDOFF, name  # two estimates of I agree
    assert abs(st.avg_kl - avg_exact) <= 4 * st.avg_kl_se + ROUNDOFF
    assert abs(st.mutual_info - i_exact) <= 4 * st.mutual_info_se + approx_tol[name] + ROUNDOFF
    assert abs(st.marginal_kl - m_exact) <= 4 * st.marginal_kl_se + approx_tol[name] + ROUNDOFF
print("I without the sampled index, log N - E H[q(n | z)], and its paired difference to I (MC):")
for name, i_rb, i_rb_se, d_mean, d_se in second:
    print(
        f"  {name:18s} {r4(i_rb):7.4f} +- {r4(i_rb_se):.4f}    "
        f"difference {r4(d_mean):7.4f} +- {r4(d_se):.4f}"
    )
print(
    f"Gaussian channel: the formulas err by KL(q(z) || G) >= 0, on average at most "
    f"{approx_bound:.4f} nats (C = {c_chi2:.4f}); tolerance {approx_tol['Gaussian channel']}"
)
print(f"log N = {math.log(n_toy):.4f}: all three encoders agree with the exact terms")

# %% [markdown]
# Between the two extremes, the information grows as the posteriors shrink and separate. Below, 200
# points $x_n \sim \mathcal N(0, I_2)$ are encoded as $\mathcal N(x_n, \sigma^2 I)$ for a range of
# posterior widths $\sigma$. The information saturates at $\log N$; the average KL does not — it
# grows like $-2\log\sigma$ — and everything above $\log N$ is the marginal KL: the aggregated
# posterior becomes 200 spikes, nothing like the prior. At every width the Monte Carlo average KL
# must agree with its closed form within 4 standard errors, and $0 \le I_q \le \log N$.

# %%
n_sweep = 200
x_sweep = torch.randn(n_sweep, 2, generator=g, dtype=DT)
sigmas = np.logspace(0.5, -3, 15)
sweep, sweep_dev = [], []
for sig in sigmas:
    lv_s = torch.full((n_sweep, 2), 2 * math.log(sig), dtype=DT)
    sweep.append(elbo_surgery(x_sweep, lv_s, standard_normal_log_prob, 2000, generator=g))
    avg_exact = average_kl_standard_normal(x_sweep, lv_s)  # closed form
    sweep_dev.append(abs(sweep[-1].avg_kl - avg_exact) / sweep[-1].avg_kl_se)
sweep_I = np.array([s.mutual_info for s in sweep])
print(
    f"average KL, Monte Carlo against the closed form: within {max(sweep_dev):.1f} standard "
    f"errors at all {len(sigmas)} widths; I(n; z) from {sweep_I.min():.3f} to {sweep_I.max():.3f} "
    f"(log N = {math.log(n_sweep):.3f})"
)
assert max(sweep_dev) < 4
assert np.all(sweep_I <= math.log(n_sweep) + 1e-9) and np.all(sweep_I >= 0)

fig, ax = plt.subplots(figsize=(7, 3.8))
ax.semilogx(sigmas, [s.avg_kl for s in sweep], "o-", ms=4, label=r"average KL $\overline{\rm KL}$")
ax.semilogx(sigmas, sweep_I, "s-", ms=4, label=r"mutual information $I_q(n; z)$")
ax.semilogx(
    sigmas, [s.marginal_kl for s in sweep], "^-", ms=4, label=r"$\mathrm{KL}(q(z)\,\|\,p(z))$"
)
ax.axhline(math.log(n_sweep), color="black", ls="--", lw=1, label=r"$\log N$")
ax.invert_xaxis()
ax.set_xlabel(r"posterior standard deviation $\sigma$ (decreasing $\rightarrow$)")
ax.set_ylabel("nats")
ax.set_title(f"ELBO surgery for N = {n_sweep} points encoded as N(x_n, σ² I)")
ax.legend(loc="upper left", fontsize=9)
plt.show()

# %% [markdown]
# **Explore: the width of the posteriors.** Move the slider `width σ` along the widths of the
# figure above (the same 200 points). The left panel shows 2000 codes drawn from the aggregated
# posterior $q(\mathbf z)$ over the prior's circles of radius 1 and 2; the right panel shows, for
# each of these draws, the information term $\log q(\mathbf z\mid\mathbf x_n) - \log q(\mathbf z)$,
# whose mean is $I_q(n;\mathbf z)$. At wide posteriors the codes form one blob that spills beyond
# the prior and the terms sit near $0$: a code says little about its point. As $\sigma$ shrinks,
# the blob breaks into 200 clusters, and the terms pile up against $\log N$ — never beyond it,
# draw by draw, as §1 proved — while the picture on the left looks less and less like the prior:
# the marginal KL of the figure above.

# %%
g_explore = torch.Generator().manual_seed(5)  # a stream of its own: the numbers above stay put


def codes_at_width(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """2000 codes from q(z) [2000, 2] and their information terms [2000] at posterior sd sigma."""
    logvar = torch.full((n_sweep, 2), 2 * math.log(sigma), dtype=DT)
    s = surgery_samples(x_sweep, logvar, standard_normal_log_prob, 2000, generator=g_explore)
    return s.z.numpy(), (s.log_q_cond - s.log_q).numpy()


codes_by_width = [codes_at_width(sigma) for sigma in sigmas]
circle = np.linspace(0, 2 * np.pi, 200)
info_bins = np.linspace(-3.0, math.log(n_sweep) + 0.5, 45)  # fixed axes (nats)


def draw_codes(axes, sigma: float) -> None:
    """Left: codes from q(z) at posterior width sigma; right: their per-draw information terms."""
    ax1, ax2 = axes
    z, info = codes_by_width[list(sigmas).index(sigma)]
    ax1.scatter(x_sweep[:, 0], x_sweep[:, 1], s=6, color="k", marker="x", lw=0.6, label="$x_n$")
    ax1.scatter(z[:, 0], z[:, 1], s=2, alpha=0.4, color="tab:blue", label=r"codes $z \sim q(z)$")
    for r in (1, 2):
        label = "prior: radii 1 and 2" if r == 1 else None
        ax1.plot(r * np.cos(circle), r * np.sin(circle), "--", color="tab:red", lw=1, label=label)
    ax1.set(xlim=(-5, 5), ylim=(-5, 5), aspect="equal", xlabel="$z_1$", ylabel="$z_2$")
    ax1.set_title(f"The aggregated posterior, σ = {sigma:.2g}")
    ax1.legend(loc="upper right", fontsize=7)
    ax2.hist(np.clip(info, info_bins[0], info_bins[-1]), bins=info_bins, color="tab:green")
    ax2.axvline(math.log(n_sweep), color="k", ls="--", label=r"$\log N$")
    ax2.axvline(info.mean(), color="tab:olive", lw=2, label=r"mean: $I_q(n; z)$")
    ax2.set(xlim=(info_bins[0], info_bins[-1]), ylim=(0, len(info)), ylabel="draws (of 2000)")
    ax2.set_xlabel(r"$\log q(z \mid x_n) - \log q(z)$ per draw (nats)")
    ax2.set_title("The information term, draw by draw")
    ax2.legend(loc="upper left")


explore(
    draw_codes, ncols=2, figsize=(11.0, 4.2), sigma=choose(sigmas, sigmas[4], "width σ", "{:.2g}")
)

# %% [markdown]
# ## 2. Surgery of a trained VAE, over the whole training set
#
# Now the real thing: the VAE with $Z = 20$ latent dimensions of Lecture 02 (Burda et al.'s MLP,
# 30 epochs on dynamically binarized Fashion-MNIST, made by `python tools/train_lecture02.py`).
# We encode all 60 000 training images (binarized once with seed 0), compute the average KL
# exactly — it has a closed form per image — and split it by Monte Carlo with 3000 draws from
# $q(n, \mathbf z)$, each draw evaluating the full 60 000-component mixture.
#
# **Check.** As in §1: the Monte Carlo average KL agrees with the exact one within 4 standard
# errors; the information estimated without the sampled indices (the entropy of $q(n\mid\mathbf
# z)$ over all 60 000 images, on the first 1000 draws) agrees with the first estimate within 4
# standard errors of their paired difference; every draw satisfies $\log q(\mathbf z\mid\mathbf
# x_n) - \log q(\mathbf z) \le \log N$ (to $10^{-9}$), so $I_q \le \log N$; and
# $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z)) \ge 0$ within 3 standard errors.

# %%
vae20 = pretrained.load("l02_vae_z20")  # the SHA-256 is checked against the manifest
mu20, lv20 = encode_all(vae20, x_train)
avg_kl_exact = average_kl_standard_normal(mu20, lv20)
smp20 = surgery_samples(
    mu20, lv20, standard_normal_log_prob, 3000, generator=torch.Generator().manual_seed(2)
)
s20 = summarize_surgery(smp20)
print(f"average KL, exact (closed form per image): {fmt(avg_kl_exact)} nats")
print(f"average KL, Monte Carlo:                  {fmt(s20.avg_kl)} +- {fmt(s20.avg_kl_se, 2)}")
print(
    f"  = I(n; z)            {fmt(s20.mutual_info)} +- {fmt(s20.mutual_info_se, 2)}   "
    f"(log N = {s20.log_n:.4f})"
)
print(f"  + KL(q(z) || p(z))   {fmt(s20.marginal_kl)} +- {fmt(s20.marginal_kl_se, 2)}")
c20 = smp20.log_q_cond - smp20.log_q  # the per-draw information term
N_RB = 1000  # the index-free estimate on the first 1000 draws: [1000, 60 000] matrices, ~2 s
info_rb20 = s20.log_n - index_entropy(smp20.z[:N_RB], mu20, lv20)
d20, d20_se = mean_se(c20[:N_RB] - info_rb20)  # mean exactly zero (Rao-Blackwell)
rb_mean, rb_se = mean_se(info_rb20)
print(
    f"  I(n; z) without the sampled index, first {N_RB} draws: {rb_mean:.2f} +- {rb_se:.2f}; "
    f"paired difference to I (MC) {d20 + 0.0:.2f} +- {d20_se:.2f}"
)
print(
    f"largest per-draw information term: {c20.max().item():.4f} (log N = {s20.log_n:.4f}); "
    f"{fmt(100 * (c20 > s20.log_n - 0.01).double().mean().item(), 2)}% of draws within 0.01 of it"
)
# sanity only (holds by construction): the Monte Carlo means satisfy avg KL = I + marginal KL
assert abs(s20.avg_kl - s20.marginal_kl - s20.mutual_info) < 1e-9
# the checks
assert abs(s20.avg_kl - avg_kl_exact) < 4 * s20.avg_kl_se  # against the closed form
assert abs(d20) < 4 * d20_se  # I with and without the sampled index
# I <= log N draw by draw; float64 round-off of the kernel's expanded squares is ~1e-11 here
assert c20.max() <= s20.log_n + 1e-9
assert s20.marginal_kl > -3 * s20.marginal_kl_se  # KL >= 0
print("ELBO surgery checks passed on 60 000 training images")

# %% [markdown]
# About four fifths of the KL term is information: $I_q$ is within one nat of its ceiling
# $\log N$, and about a fifth of the draws sit right at the ceiling, where the code identifies its
# training image exactly. The remaining couple of nats per image is the price of the standard
# normal prior: the aggregated posterior is *not* $\mathcal N(0, I)$. Hoffman and Johnson made the
# same observation on MNIST {cite:p}`hoffman2016elbo`: the information term is close to
# saturated, and the marginal KL — the only part a better prior can remove — is a modest but real
# part of the bound.
#
# ### The same term as cross-entropy minus entropy
#
# A second split works image by image. Write the log-ratio inside the KL divergence as a
# difference of two log-densities:
#
# $$
# \mathrm{KL}\big(q(\mathbf z\mid\mathbf x)\,\|\,p(\mathbf z)\big)
# = \underbrace{\mathbb E_{q(\mathbf z\mid\mathbf x)}\big[-\log p(\mathbf z)\big]}_{H(q(\mathbf z\mid\mathbf x),\;p)}
# - \underbrace{\mathbb E_{q(\mathbf z\mid\mathbf x)}\big[-\log q(\mathbf z\mid\mathbf x)\big]}_{H(q(\mathbf z\mid\mathbf x))},
# $$
#
# the **cross-entropy** from the posterior to the prior minus the **entropy** of the posterior.
# Averaged over the training set, the cross-entropy — linear in its first argument — becomes the
# cross-entropy of the average, that is of the aggregated posterior:
#
# $$
# \overline{\mathrm{KL}}
# = \underbrace{H\big(q(\mathbf z),\,p\big)}_{=\ \frac1N\sum_n H(q(\mathbf z\mid\mathbf x_n),\;p)}
# - \frac1N\sum_{n=1}^N H\big(q(\mathbf z\mid\mathbf x_n)\big).
# $$
#
# The prior appears only in the first term, and sees the posteriors only through their mixture;
# the second term belongs to each posterior alone. For a Gaussian encoder and the standard normal
# prior both are closed forms per image:
#
# $$
# H\big(q(\mathbf z\mid\mathbf x)\big) = \tfrac12\sum_{d=1}^Z\big(1 + \log 2\pi + \log\sigma_d^2\big),
# \qquad
# H\big(q(\mathbf z\mid\mathbf x),\,\mathcal N(0, I)\big)
#   = \tfrac12\sum_{d=1}^Z\big(\log 2\pi + \mu_d^2 + \sigma_d^2\big),
# $$
#
# whose difference is the familiar $\tfrac12\sum_d(\mu_d^2 + \sigma_d^2 - 1 - \log\sigma_d^2)$.
# Averaged, the cross-entropy is $\tfrac Z2\log 2\pi + \tfrac12\,\mathbb E_{q(\mathbf z)}\|\mathbf
# z\|^2$: of the whole aggregated posterior, a standard normal prior sees only the second moment.
#
# **What each term pulls toward.** The ELBO subtracts $\overline{\mathrm{KL}}$, so training lowers
# the cross-entropy and raises the entropy. The entropy term rewards *wide* posteriors,
# $\tfrac12\log\sigma_d^2$ per coordinate, without limit. The cross-entropy term rewards posteriors
# that lie *inside the prior's mass*: against $\mathcal N(0, I)$ it charges $\tfrac12(\mu_d^2 +
# \sigma_d^2)$, pulling each mean to the origin and each posterior narrow. Per coordinate the two
# balance at $\mu_d = 0$, $\sigma_d^2 = 1$ — the prior itself. On their own they erase the code; only
# the reconstruction term pays for posteriors that are narrow and apart.
#
# One consequence follows without training. The first layer of our decoder is linear, so
# multiplying the encoder's mean and standard deviation of coordinate $d$ by $c > 0$, and the
# matching column of decoder weights by $1/c$, leaves the reconstruction unchanged, while the KL
# term changes by $\tfrac12(c^2 - 1)\,\mathbb E_{q(\mathbf z)}[z_d^2] - \log c$ (the first part
# from the cross-entropy, the second from the entropy). Its derivative at $c = 1$ must vanish at a
# stationary point of the ELBO, so there
# $\mathbb E_{q(\mathbf z)}[z_d^2] = 1$ for every coordinate: the standard normal prior fixes the
# scale of each coordinate of the aggregated posterior to its own.
#
# **Back to the surgery.** Add and subtract the entropy $H(q(\mathbf z))$ of the aggregated
# posterior. The cross-entropy is $H(q(\mathbf z)) + \mathrm{KL}(q(\mathbf z)\,\|\,p)$, and the
# average entropy of the posteriors is the conditional entropy $H(\mathbf z\mid n) = H(q(\mathbf
# z)) - I_q(n;\mathbf z)$. In the difference $H(q(\mathbf z))$ cancels and ELBO surgery remains:
# the two splits are one identity, with the entropy of the codes added to both of its terms. The
# cross-entropy carries the marginal KL (the part a prior can change), the average entropy carries
# minus the information.
#
# **Checks.** (i) The closed forms against Monte Carlo on the 3000 draws $(n_i, \mathbf z_i)$ of
# §2. The values $-\log p(\mathbf z_i)$ and $-\log q(\mathbf z_i\mid\mathbf x_{n_i})$ are unbiased
# for the two averages over all 60 000 images, which the closed forms give exactly; each Monte
# Carlo mean must agree with its closed form within 4 standard errors. So must the mean of the
# paired difference between each draw and the closed form of the image it came from: its
# expectation is zero, and it tests the formula image by image rather than only on average.
# (ii) The information as $H(q(\mathbf z)) - \frac1N\sum_n H(q(\mathbf z\mid\mathbf x_n))$ — the
# Monte Carlo entropy of the codes (mixture kernel) minus the closed-form entropy of the image
# drawn — against the estimate of §2 that uses neither, $\log N - \mathbb
# E\,H[q(n\mid\mathbf z)]$, on the first 1000 draws: within 4 standard errors of their paired
# difference. That the two closed forms differ by the closed-form average KL of §2 is algebra, a
# sanity line only.


# %%
def entropy_gaussian(logvar: torch.Tensor) -> torch.Tensor:
    """H(N(mu, diag exp(logvar))) per row: [N, Z] -> [N], nats (it does not depend on mu)."""
    return 0.5 * (1 + LOG_2PI + logvar).sum(1)


def cross_entropy_std_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """H(N(mu, diag exp(logvar)), N(0, I)) = E_q[-log N(z; 0, I)] per row: [N, Z] -> [N], nats."""
    return 0.5 * (LOG_2PI + mu**2 + logvar.exp()).sum(1)


ce_n, ent_n = cross_entropy_std_normal(mu20, lv20), entropy_gaussian(lv20)  # [60 000] each
idx20 = smp20.index  # the image each of the 3000 draws came from
print(
    f"{'average over the 60 000 training images':40s} {'closed form':>11s}   "
    f"{'Monte Carlo':>13s}   draw - its image's closed form"
)
for label, mc, per_image in (
    ("cross-entropy  H(q(z|x), N(0, I))", -smp20.log_p, ce_n),
    ("entropy        H(q(z|x))", -smp20.log_q_cond, ent_n),
):
    exact = per_image.mean().item()
    (m, se), (dm, dse) = mean_se(mc), mean_se(mc - per_image[idx20])
    print(f"{label:40s} {exact:11.2f}   {m:7.2f} +- {se:.2f}   {dm + 0.0:+.3f} +- {dse:.3f}")
    assert abs(m - exact) < 4 * se  # the closed-form average against Monte Carlo
    assert abs(dm) < 4 * dse  # per image, paired
ce_exact, ent_exact = ce_n.mean().item(), ent_n.mean().item()
print(f"{'difference = average KL':40s} {ce_exact - ent_exact:11.2f}")
# sanity only (algebra): cross-entropy minus entropy is the closed-form KL of section 2
assert abs((ce_exact - ent_exact) - avg_kl_exact) < 1e-9

h_codes, h_codes_se = mean_se(-smp20.log_q)  # H(q(z)), by the mixture kernel
print(f"entropy of the codes H(q(z)), Monte Carlo: {h_codes:.2f} +- {h_codes_se:.2f}")
print(
    f"  H(q(z), p) - H(q(z))        = KL(q(z) || p): {ce_exact - h_codes:.2f} +- {h_codes_se:.2f}"
    f"   (section 2: {s20.marginal_kl:.2f} +- {s20.marginal_kl_se:.2f})"
)
info_ent = (-smp20.log_q - ent_n[idx20])[:N_RB]  # per draw: H(q(z)) - H(q(z|x_n)), mean I
f20, f20_se = mean_se(info_ent - info_rb20)  # against the index-free estimate of section 2: 0
print(
    f"  H(q(z)) - mean H(q(z|x))    = I(n; z):       {h_codes - ent_exact:.2f} +- {h_codes_se:.2f}"
    f"   (without the index, first {N_RB} draws: {rb_mean:.2f}; paired difference "
    f"{f20 + 0.0:+.2f} +- {f20_se:.2f})"
)
assert abs(f20) < 4 * f20_se
m2_20 = (mu20**2 + lv20.exp()).mean(0)  # E_q(z)[z_d^2] per coordinate
print(
    f"second moment E_q(z)[z_d^2] of the {len(m2_20)} coordinates: from {m2_20.min().item():.2f} "
    f"to {m2_20.max().item():.2f} (1 at a stationary point of the ELBO)"
)

# %% [markdown]
# The paired differences are within one standard error of zero: the closed forms hold image by
# image. Of the 28.5 nats of cross-entropy, 15.9 are undone by the entropy of the posteriors; both
# are large, and the KL term is their difference. Seen through the aggregated posterior, the same numbers say that the
# codes have an entropy of about 26 nats, that the prior's cross-entropy exceeds it by the marginal
# KL of §2, and that the posteriors' entropy falls short of it by the information. The second
# moments of the coordinates are near 1, as the scaling argument predicts at a stationary point
# — near, not equal: the optimiser has not reached one exactly.
#
# ## 3. The optimal prior
#
# Hold the encoder and the decoder fixed and ask which prior maximises the average ELBO. The
# reconstruction term and $I_q$ do not involve $p$; the third term is
#
# $$
# -\mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z)\big)
#   = \mathbb E_{q(\mathbf z)}\big[\log p(\mathbf z)\big] + H\big[q(\mathbf z)\big].
# $$
#
# So the best prior maximises the **cross-entropy term** $\mathbb E_{q(\mathbf z)}[\log
# p(\mathbf z)]$: it is the maximum-likelihood fit of a density to samples of the aggregated
# posterior. Gibbs' inequality ($\mathrm{KL} \ge 0$) says that no density does better than $q$
# itself, so
#
# $$
# p^\star(\mathbf z) = q(\mathbf z) = \frac1N\sum_{n=1}^N q(\mathbf z\mid\mathbf x_n),
# \qquad
# \frac1N\sum_n \mathrm{KL}\big(q(\mathbf z\mid\mathbf x_n)\,\|\,p^\star\big) = I_q(n;\mathbf z)
# \le \log N .
# $$
#
# Two remarks. The objective is the *forward* KL from $q(\mathbf z)$ to the prior: a prior that
# misses a region where codes live is punished without limit, while one that puts mass where no
# codes live is punished only mildly. Learned priors therefore err on the side of covering too
# much — which is where holes come from (§6). And $p^\star$ is a mixture of all $N$ training
# posteriors: each evaluation touches every training image.
#
# **Check: the aggregated posterior beats every other prior.** On the 3000 draws of §2 we evaluate
# $\mathbb E_{q(\mathbf z)}[\log p(\mathbf z)]$ for five priors: $\mathcal N(0, I)$; the diagonal
# Gaussian with the mean and variances of $q(\mathbf z)$; the full-covariance Gaussian with its
# mean and covariance; the mixture of the posteriors of 500 random training images (a VampPrior
# whose pseudo-inputs are data); and $q(\mathbf z)$ itself. The last must beat each of the others
# by more than 3 standard errors of the paired difference. Its gap to $\mathcal N(0, I)$ is, by
# definition, the Monte Carlo marginal KL of §2; by the surgery identity it must also equal the
# exact average KL minus the information estimated without the sampled indices — two terms
# computed without the mixture kernel's $q(\mathbf z)$. On the first 1000 draws the two must agree
# within 4 standard errors of their paired difference.

# %%
z_q = smp20.z  # 3000 draws from the aggregated posterior
m_q = mu20.mean(0)  # mean of q(z)
cov_q = torch.cov(mu20.T, correction=0) + torch.diag(lv20.exp().mean(0))  # its covariance
sub = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(3))[:500]
priors_q = {
    "N(0, I)": standard_normal_log_prob(z_q),
    "diagonal Gaussian fitted to q(z)": gaussian_log_prob(z_q, m_q, cov_q.diagonal().log()),
    "full-covariance Gaussian fitted to q(z)": torch.distributions.MultivariateNormal(
        m_q, cov_q
    ).log_prob(z_q),
    "mixture of 500 training posteriors": aggregate_posterior_log_prob(z_q, mu20[sub], lv20[sub]),
    "q(z) itself (60 000 posteriors)": smp20.log_q,
}
cross = {k: mean_se(v) for k, v in priors_q.items()}
for k, (v, se) in cross.items():
    print(f"E_q(z)[log p(z)] for {k:40s} {v:9.3f} +- {se:.3f}")
cross = {k: v for k, (v, _) in cross.items()}
best = cross["q(z) itself (60 000 posteriors)"]
gap_std = best - cross["N(0, I)"]
print(f"gap between q(z) and N(0, I): {fmt(gap_std)}, the KL(q(z) || N(0, I)) of section 2")
# the surgery identity per draw: (log q(z) - log p(z)) + I without the index, mean = exact avg KL
e20, e20_se = mean_se((smp20.log_q - smp20.log_p)[:N_RB] + info_rb20)
print(
    f"exact average KL - I(n; z) without the sampled index: {avg_kl_exact - rb_mean:.2f} +- "
    f"{rb_se:.2f}; paired difference to the gap (first {N_RB} draws): "
    f"{e20 - avg_kl_exact:.2f} +- {e20_se:.2f}"
)
assert best == max(cross.values())
assert abs(e20 - avg_kl_exact) < 4 * e20_se
# paired differences: q(z) beats each other prior by more than 3 standard errors
for k, v in priors_q.items():
    if k != "q(z) itself (60 000 posteriors)":
        d, d_se = mean_se(smp20.log_q - v)
        assert d > 3 * d_se, k

# %% [markdown]
# Two lessons. A Gaussian, even with exactly the mean and covariance of the codes, recovers only
# a few hundredths of a nat of the gap: the mismatch between $q(\mathbf z)$ and
# $\mathcal N(0, I)$ lies in the *shape* of the aggregated posterior (clusters and gaps), not in
# its first two moments. And a mixture of the posteriors of 500 training images is far *worse*
# than $\mathcal N(0, I)$: its 500 narrow bumps leave the codes of the other 59 500 images in the
# gaps between them. A mixture prior must either use all the posteriors (the optimal prior) or
# choose its components to cover the codes — which is what the learned priors of §4 do.
#
# **Why not use $p^\star$?** Apart from its cost, it overfits. For a *training* image, the prior
# $q(\mathbf z)$ contains that image's own posterior with weight $1/N$, which caps its KL at
# $\log N$. A *test* image has no component of its own. The cell below compares, on 1000 training
# and 1000 test images, the KL term under $\mathcal N(0, I)$ (exact) with the KL term under
# $p^\star$ (Monte Carlo, 4 draws per image).
#
# **Check.** Averaged over the training set, the gain is $\overline{\mathrm{KL}} - I_q =
# \mathrm{KL}(q(\mathbf z)\,\|\,\mathcal N(0, I))$, so the gain on the 1000 training images
# must match the marginal KL of §2 within 4 combined standard errors (the standard error of a gain
# is that of the per-image gains). And the gain on test images must fall short of the gain on
# training images by more than 4 combined standard errors.

# %%
g_of = torch.Generator().manual_seed(4)


@torch.no_grad()
def kl_gains(x: torch.Tensor, n_draws: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, [len(x)] each: KL(q(z|x) || N(0, I)) (exact), KL(q(z|x) || q_train(z)) (MC)."""
    mu, lv = encode_all(vae20, x)
    eps = torch.randn(n_draws, *mu.shape, generator=g_of, dtype=DT)
    z = (mu + (0.5 * lv).exp() * eps).reshape(-1, mu.shape[1])
    log_q_cond = gaussian_log_prob(z, mu.repeat(n_draws, 1), lv.repeat(n_draws, 1))
    kl_star = (log_q_cond - aggregate_posterior_log_prob(z, mu20, lv20)).reshape(n_draws, -1)
    return kl_normal_std_normal(mu, lv), kl_star.mean(0)


print("                  KL to N(0, I)   KL to q_train(z)       gain")
gains = {}
for split, x in (("train", x_train[:1000]), ("test", x_test[:1000])):
    kl_std, kl_star = kl_gains(x)
    (m_std, _), (m_star, se_star) = mean_se(kl_std), mean_se(kl_star)
    gains[split] = mean_se(kl_std - kl_star)
    print(
        f"1000 {split + ' images':13s}  {m_std:8.3f}        {m_star:8.3f} +- {se_star:.3f}    "
        f"{gains[split][0] + 0.0:6.3f} +- {gains[split][1]:.3f}"
    )
(gain_tr, se_tr), (gain_te, se_te) = gains["train"], gains["test"]
se_match = math.hypot(se_tr, s20.marginal_kl_se)
print(
    f"training gain - KL(q(z) || p(z)) of section 2: {gain_tr - s20.marginal_kl:+.2f} +- "
    f"{se_match:.2f};  training gain - test gain: {gain_tr - gain_te:.2f} +- "
    f"{math.hypot(se_tr, se_te):.2f}"
)
assert abs(gain_tr - s20.marginal_kl) < 4 * se_match  # the optimal prior removes the marginal KL
assert gain_tr - gain_te > 4 * math.hypot(se_tr, se_te)  # the gain does not carry over in full

# %% [markdown]
# On training images the optimal prior removes the marginal KL, as promised. On test images the
# gain is gone: a test code falls between the training posteriors, where the 60 000-bump mixture
# is thin, and what the prior wins on the shape of the clusters it loses in the gaps. The
# aggregated posterior is a kernel density estimate of the codes with the posteriors as kernels,
# and it has the usual weakness of such estimates — it memorises its sample. It is also a poor
# *generative* prior for the same reason: sampling it means picking a training image and
# perturbing its code slightly.
#
# The practical answer is a prior that is *learned* together with the VAE, flexible enough to
# follow the aggregated posterior, but with far fewer than $N$ degrees of freedom. With such a
# prior the KL term has no closed form, and we use the same one-sample Monte Carlo estimate as for
# the rest of the ELBO:
#
# $$
# \mathrm{KL}\big(q(\mathbf z\mid\mathbf x)\,\|\,p_\lambda(\mathbf z)\big) \approx
# \log q(\mathbf z\mid\mathbf x) - \log p_\lambda(\mathbf z),
# \qquad \mathbf z = \boldsymbol\mu(\mathbf x) + \boldsymbol\sigma(\mathbf x)\odot\boldsymbol\epsilon .
# $$
#
# It is unbiased, differentiable in the encoder through the reparametrization, and in the prior's
# parameters $\lambda$ through $\log p_\lambda(\mathbf z)$. The gradient with respect to $\lambda$,
# $-\nabla_\lambda \log p_\lambda(\mathbf z)$ averaged over a mini-batch, is exactly a
# maximum-likelihood step for the prior on the mini-batch's codes — draws from the aggregated
# posterior, as §3 prescribes. `dgmlib.models.VAE` with any prior of `dgmlib.models.priors`
# implements this (and keeps the exact KL when the prior is $\mathcal N(0, I)$, whose closed form
# is registered).
#
# **Check: the Monte Carlo KL is unbiased** where the answer is known: for one test image and the
# standard normal prior, 20 000 one-sample estimates average to the closed-form KL within 4
# standard errors.

# %%
with torch.no_grad():
    mu1, lv1 = vae20.encode(x_test[:1])
    z1 = mu1 + (0.5 * lv1).exp() * torch.randn(20_000, 20, generator=g_of)
    kl_mc = gaussian_log_prob(z1, mu1, lv1) - standard_normal_log_prob(z1)
kl_exact1 = kl_normal_std_normal(mu1, lv1).item()
kl_mc, se1 = mean_se(kl_mc)
print(f"one-sample KL estimates, mean of 20000: {kl_mc:.3f} +- {se1:.3f};  exact: {kl_exact1:.3f}")
assert abs(kl_mc - kl_exact1) < 4 * se1

# %% [markdown]
# ## 4. Three learned priors
#
# ### 4.1 A mixture of Gaussians
#
# $$
# p_\lambda(\mathbf z) = \sum_{k=1}^K \pi_k\, \mathcal N\big(\mathbf z;\, \mathbf m_k,
# \operatorname{diag}\mathbf s_k^2\big), \qquad \pi = \operatorname{softmax}(\boldsymbol\ell),
# \qquad
# \log p_\lambda(\mathbf z) = \operatorname*{logsumexp}_k \big[\log\pi_k + \log\mathcal
# N(\mathbf z;\mathbf m_k, \operatorname{diag}\mathbf s_k^2)\big],
# $$
#
# with learnable means, log-variances and logits $\boldsymbol\ell$ (the softmax keeps the weights
# positive and summing to one). With $K = N$ components fixed at the training posteriors it
# would *be* the optimal prior; with $K = 100$ learned components it is a compressed version of
# it. The log-sum-exp is essential: the component log-densities of a code are often tens or
# hundreds of nats apart, and their exponentials underflow.
#
# All the trained models of this lecture come from one command (about 20 minutes on one CPU
# thread), which writes small checkpoints with SHA-256 sidecars and a JSON of results:
#
# ```
# make checkpoints          # runs: python tools/train_lecture06.py
# ```
#
# It trains eight VAEs with Burda et al.'s MLP architecture (784–200–200–$2Z$ encoder, Bernoulli
# decoder, tanh) for 6 epochs on the 60 000 dynamically binarized training images: latent
# dimension $Z = 2$ (for pictures) and $Z = 10$ (for numbers), each with the four priors
# $\mathcal N(0, I)$, a mixture of 100 Gaussians, a VampPrior with 100 pseudo-inputs and a flow of
# six coupling layers. For one $Z$ the four models start from the same network weights and see the
# same mini-batches.
#
# **Check: the trained mixture prior against `torch.distributions`.** `MixtureSameFamily` of
# `Independent` normals, with the trained parameters of the $Z = 10$ model, at 1000 codes of test
# images. Both are evaluated in double precision, where they must agree to $10^{-9}$: the
# round-off of either is of order $10^{-16}$ times log-terms of at most a few thousand nats, while
# an error in the formula — a missing constant, a variance taken for a standard deviation,
# unnormalised weights — changes $\log p$ by far more.

# %%
results = pretrained.results("l06")  # settings, curves, test figures and surgery terms
priors = ("standard", "mog", "vamp", "flow")
res = {f"z{z}_{p}": results["models"][f"z{z}_{p}"] for z in (2, 10) for p in priors}
# each model rebuilt from the spec stored with its weights (the prior included), hash verified
models = {name: pretrained.load(f"l06_{name}") for name in res}
print("made by:", results["command"])
settings = dict(results["settings"])  # the JSON sorts its keys; show the priors in our order
settings["prior_kwargs"] = {p: settings["prior_kwargs"][p] for p in priors}
keys = ("epochs", "batch_size", "optimizer", "learning_rate", "prior_kwargs", "nll_K")
print(*(f"  {key}: {settings[key]}" for key in keys), sep="\n")
print("checkpoints verified:", ", ".join(r["checkpoint"] for r in res.values()))

with torch.no_grad():
    z_mog = models["z10_mog"].encode(x_test[:1000])[0]
    mog = models["z10_mog"].prior.double()  # float64 for the check only
    reference = MixtureSameFamily(
        Categorical(logits=mog.logits),
        Independent(Normal(mog.means, torch.exp(0.5 * mog.logvars)), 1),
    ).log_prob(z_mog.double())
    ours = mog.log_prob(z_mog.double())
    mog.float()  # back to single precision (float32 -> float64 -> float32 is exact)
err = (ours - reference).abs().max().item()
assert err < 1e-9
print(
    f"max |log p_mog - torch.distributions| over 1000 codes, float64: below 1e-9 "
    f"(log p ~ {fmt(ours.mean())})"
)
w_mog = mog.log_weights().detach().exp()
print(
    f"mixture weights: largest {fmt(w_mog.max(), 3)}, smallest {fmt(w_mog.min(), 3)}; "
    f"{int((w_mog > 0.1 / len(w_mog)).sum())} of {len(w_mog)} components above 1/(10 K)"
)

# %% [markdown]
# ### 4.2 The VampPrior
#
# The optimal prior is a mixture of the encoder's posteriors at the $N$ training images. The
# **variational mixture of posteriors** prior {cite:p}`tomczak2018vae` keeps that form but replaces
# the training images by $K \ll N$ learnable **pseudo-inputs** $\mathbf u_1,\dots,\mathbf u_K$ in
# image space:
#
# $$
# p_\lambda(\mathbf z) = \frac1K\sum_{k=1}^K q_\phi(\mathbf z\mid\mathbf u_k),
# \qquad \lambda = (\mathbf u_1, \dots, \mathbf u_K).
# $$
#
# Each component is the encoder's Gaussian at a pseudo-input, so the prior is a mixture of
# Gaussians whose means and variances are *produced by the encoder*. Two consequences: the prior
# moves with the encoder during training (prior and posterior are coupled — a code region the
# encoder abandons loses its prior mass too), and it costs $K$ extra encoder passes per training
# step. Our pseudo-inputs live in $(0, 1)^{784}$ as the sigmoid of free parameters and start at
# 100 training images.
#
# **Check: the VampPrior is the mixture formula.** We push the trained pseudo-inputs of the
# $Z = 10$ model through its encoder by hand and evaluate $\log\frac1K\sum_k\mathcal
# N(\mathbf z;\boldsymbol\mu(\mathbf u_k), \operatorname{diag}\boldsymbol\sigma^2(\mathbf u_k))$
# with `torch.distributions.Normal` and a log-sum-exp, at 1000 codes of test images — in double
# precision, to $10^{-9}$, as for the mixture.

# %%
vamp_model = models["z10_vamp"]
with torch.no_grad():
    z_vamp = vamp_model.encode(x_test[:1000])[0].double()
    vamp_model.double()  # encoder and pseudo-inputs in float64 for the check only
    u = torch.sigmoid(vamp_model.prior.pseudo_logits)  # [K, 1, 28, 28]
    mu_u, lv_u = vamp_model.encoder(u)  # [K, Z] each
    comp = Normal(mu_u[None], torch.exp(0.5 * lv_u[None])).log_prob(z_vamp[:, None]).sum(-1)
    by_hand = torch.logsumexp(comp, dim=1) - math.log(len(u))  # [1000]
    ours = vamp_model.prior.log_prob(z_vamp)
    vamp_model.float()
    u = u.float()
err = (ours - by_hand).abs().max().item()
assert err < 1e-9
print("max |VampPrior.log_prob - explicit mixture| over 1000 codes, float64: below 1e-9")

fig, axes = plt.subplots(1, 2, figsize=(11, 2.6))
image_grid(
    models["z2_vamp"].prior.pseudo_inputs().detach()[:16],
    nrow=16,
    ax=axes[0],
    title="VampPrior pseudo-inputs, Z = 2 (16 of 100)",
)
image_grid(u[:16], nrow=16, ax=axes[1], title="VampPrior pseudo-inputs, Z = 10 (16 of 100)")
plt.show()

# %% [markdown]
# The pseudo-inputs started as training images and stayed image-like. They need not be realistic:
# only their codes matter, and the encoder maps many different inputs to similar codes.
#
# ### 4.3 A flow prior
#
# A normalizing flow defines a density through an invertible map. Let $f_\lambda$ send a code
# $\mathbf z$ to a base point $\mathbf u = f_\lambda(\mathbf z)$ with $\mathbf u \sim \mathcal N(0,
# I)$. The change-of-variables formula gives
#
# $$
# \log p_\lambda(\mathbf z) = \log\mathcal N\big(f_\lambda(\mathbf z); 0, I\big)
#   + \log\Big|\det \frac{\partial f_\lambda}{\partial\mathbf z}\Big| ,
# $$
#
# and sampling runs the inverse, $\mathbf z = f_\lambda^{-1}(\mathbf u)$. In the ELBO, the flow
# prior simply replaces $\log p(\mathbf z)$ in the Monte Carlo KL. Both directions and the
# determinant must be cheap. RealNVP's **affine coupling layer** {cite:p}`dinh2017density` achieves
# that with a binary mask $\mathbf b$: the coordinates with $b_j = 1$ pass through unchanged and
# parametrise an elementwise affine map of the others,
#
# $$
# \mathbf u = \mathbf b\odot\mathbf z + (\mathbf 1 - \mathbf b)\odot\big(\mathbf z\odot
# e^{\mathbf s(\mathbf b\odot\mathbf z)} + \mathbf t(\mathbf b\odot\mathbf z)\big),
# $$
#
# with $\mathbf s, \mathbf t$ outputs of any network. Order the coordinates so that the unchanged
# ones come first: the Jacobian is block lower-triangular, with the identity and
# $\operatorname{diag}(e^{\mathbf s})$ on the diagonal (the network's own derivatives sit below
# the diagonal and never enter the determinant). Hence
#
# $$
# \log\Big|\det\frac{\partial\mathbf u}{\partial\mathbf z}\Big| = \sum_j (1 - b_j)\, s_j ,
# \qquad
# \mathbf z = \mathbf b\odot\mathbf u + (\mathbf 1-\mathbf b)\odot\big(\mathbf u - \mathbf t\big)
#   \odot e^{-\mathbf s},
# $$
#
# the inverse using that $\mathbf b\odot\mathbf u = \mathbf b\odot\mathbf z$, so $\mathbf s$ and
# $\mathbf t$ can be recomputed from $\mathbf u$. Stacking layers with alternating masks lets every
# coordinate be transformed; log-determinants add. Our flow prior has six layers, masks alternating
# between even and odd coordinates, networks with two hidden layers of 64 units, and
# $\mathbf s$ soft-clamped to $(-3, 3)$; its last layers start at zero, so training starts from
# $\mathcal N(0, I)$. A flow prior of this kind (with autoregressive layers) was used by Chen et
# al. {cite:p}`chen2017variational`.
#
# **Check: the log-determinant against autograd, the inverse, and the normalisation.** For the
# trained $Z = 10$ flow (in double precision), the sum of the layers' log-determinants equals
# $\log|\det J|$ of the full Jacobian computed by `torch.autograd.functional.jacobian`, at 5 codes;
# $f^{-1}(f(\mathbf z)) = \mathbf z$ — both to $10^{-9}$, far above float64 round-off through six
# small networks and far below any error of the formulas; and the density of the trained $Z = 2$
# flow integrates to 1 on a grid, to $5\cdot10^{-3}$. The quadrature error of that grid is
# estimated by the same sum on its subgrid of twice the spacing, which must agree to $10^{-3}$.

# %%
flow10 = models["z10_flow"].prior.double()
with torch.no_grad():
    z5 = models["z10_flow"].encode(x_test[:5])[0].to(DT)
    u5, logdet5 = flow10(z5)
    inv_err = (flow10.inverse(u5) - z5).abs().max().item()
jac_logdet = torch.stack(
    [
        torch.linalg.slogdet(
            torch.autograd.functional.jacobian(lambda v: flow10(v[None])[0][0], zi)
        )[1]
        for zi in z5
    ]
)
det_err = (logdet5 - jac_logdet).abs().max().item()
print("log|det J|, coupling layers:", np.round(logdet5.numpy(), 4))
print("log|det J|, autograd       :", np.round(jac_logdet.numpy(), 4))
assert det_err < 1e-9 and inv_err < 1e-9
print("max |coupling - autograd| and max |f^-1(f(z)) - z|, float64: both below 1e-9")

flow2 = models["z2_flow"].prior.double()
grid1d = torch.linspace(-12, 12, 481, dtype=DT)
h = (grid1d[1] - grid1d[0]).item()
with torch.no_grad():
    dens2 = flow2.log_prob(torch.cartesian_prod(grid1d, grid1d)).exp().reshape(481, 481)
mass, mass_coarse = dens2.sum().item() * h**2, dens2[::2, ::2].sum().item() * (2 * h) ** 2
print(
    f"integral of the Z = 2 flow prior's density over [-12, 12]^2: {mass:.4f} "
    f"(spacing {h:.2f}), {mass_coarse:.4f} (spacing {2 * h:.1f})"
)
assert abs(mass - mass_coarse) < 1e-3  # the quadrature error is small on this grid
assert abs(mass - 1) < 5e-3
for name in ("z10_flow", "z2_flow"):
    models[name].float()  # back to single precision for the rest of the lecture

# %% [markdown]
# ## 5. Four priors compared
#
# For every model the command stored: the test ELBO (10 samples per image, all 10 000 test images)
# and its KL term; the negative log-likelihood estimated by the importance-weighted bound with
# $K = 500$ samples (Lecture 05) on a fixed subset of 500 test images; and the ELBO surgery over
# all 60 000 training images with 5000 draws: $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$ and
# $I_q$. The last column, the prior mass in holes, is explained in §6.

# %%
labels = {
    "standard": "N(0, I)",
    "mog": "mixture (100)",
    "vamp": "VampPrior (100)",
    "flow": "flow (6 layers)",
}
print(
    f"{'Z':>2s}  {'prior':16s} {'prior':>7s}  {'test':>8s}  {'NLL':>7s}  {'KL':>6s}  "
    f"{'KL(q(z)||p)':>11s}  {'I(n;z)':>7s}  {'hole':>5s}"
)
print(
    f"{'':2s}  {'':16s} {'params':>7s}  {'ELBO':>8s}  {'K=500':>7s}  {'term':>6s}  "
    f"{'(train)':>11s}  {'(train)':>7s}  {'mass':>5s}"
)
print("-" * 86)
for r in res.values():
    t, su = r["test"], r["surgery"]  # test figures; surgery over the training set
    print(
        f"{r['z_dim']:2d}  {labels[r['prior']]:16s} {r['n_prior_params']:7d}  {t['elbo']:8.2f}  "
        f"{t['nll']:7.2f}  {t['kl']:6.2f}  {su['marginal_kl']:11.2f}  "
        f"{su['mutual_info']:7.2f}  {r['holes']['hole_mass']:5.2f}"
    )
ref = res["z10_standard"]
print(
    f"(log N = {math.log(N_TRAIN):.4f}; Monte Carlo standard errors: NLL mean over images "
    f"~{fmt(ref['test']['nll_se'], 2)} (paired differences far smaller), surgery terms "
    f"~{fmt(ref['surgery']['marginal_kl_se'], 1)})"
)

# %% [markdown]
# **Check: recompute the stored figures.** From the verified checkpoints, with other random
# generators than the command: (i) the $K = 500$ NLL of the first 100 images of the subset, for
# the four $Z = 10$ models — the mean difference to the stored per-image values must be within 4
# standard errors of the paired difference; (ii) the surgery terms of the four $Z = 10$ models with
# 1000 new draws — within 4 combined standard errors of the stored ones.

# %%
subset = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))[:100]
x_nb = x_test[subset]  # the first 100 images of the NLL subset (see settings["nll_subset"])
z10 = [n for n in res if n.startswith("z10_")]
print(
    "model             NLL stored   recomputed   diff +- s.e.  |  KL(q(z)||p) stored  recomputed   I stored  recomputed"
)
recomputed, enc10, smp10 = {}, {}, {}
for i, name in enumerate(z10):
    model, r = models[name], res[name]
    g_nll = torch.Generator().manual_seed(100 + i)
    nll = estimate_nll(lambda xb, k, m=model, gg=g_nll: m.log_weights(xb, k, gg), x_nb, K=500)
    stored = torch.tensor(r["test"]["nll_notebook_subset"])
    d, se_d = mean_se(nll - stored)
    mu_m, lv_m = enc10[name] = encode_all(model, x_train)
    with torch.no_grad():  # the draws are kept for section 7
        smp10[name] = surgery_samples(
            mu_m,
            lv_m,
            lambda z, m=model: m.prior.log_prob(z.float()).to(DT),
            1000,
            generator=torch.Generator().manual_seed(200 + i),
        )
    recomputed[name] = s_new = summarize_surgery(smp10[name])
    print(
        f"{name:16s}  {stored.mean():9.2f}  {nll.mean():10.2f}   {d:+5.2f} +- {se_d:.2f}  |"
        f"  {r['surgery']['marginal_kl']:10.2f}  {s_new.marginal_kl:10.2f}    "
        f"{r['surgery']['mutual_info']:7.2f}  {s_new.mutual_info:8.2f}"
    )
    assert abs(d) < 4 * se_d
    for key in ("marginal_kl", "mutual_info"):
        se_c = math.hypot(r["surgery"][f"{key}_se"], getattr(s_new, f"{key}_se"))
        assert abs(r["surgery"][key] - getattr(s_new, key)) < 4 * se_c, (name, key)
    assert s_new.mutual_info <= s_new.log_n + 1e-6
print("stored NLL and surgery terms confirmed")

# %% [markdown]
# **Reading the table.** The comparison is between rows of one $Z$: the four models share their
# networks' initial weights and their mini-batches. The NLL means carry a large image-to-image
# spread, but differences between models are paired over the same images; the cell below gives
# them with their standard errors (from the 100 per-image values stored), the change of the
# marginal KL and of the reconstruction term (test ELBO plus KL term) from the $\mathcal N(0, I)$
# model, and the test ELBO during training.

# %%
nll_nb = {n: torch.tensor(r["test"]["nll_notebook_subset"], dtype=DT) for n, r in res.items()}
print("NLL - NLL of the N(0, I) model, first 100 images of the subset (paired):")
for name, r in res.items():
    if r["prior"] != "standard":
        d, d_se = mean_se(nll_nb[name] - nll_nb[f"z{r['z_dim']}_standard"])
        print(f"  Z = {r['z_dim']:2d}  {labels[r['prior']]:16s} {d:+6.2f} +- {d_se:.2f} nats")
print("Against the N(0, I) model of the same Z: marginal KL (train), reconstruction term (test):")
for r in res.values():
    if r["prior"] != "standard":
        ref = res[f"z{r['z_dim']}_standard"]
        cut = 100 * (1 - r["surgery"]["marginal_kl"] / ref["surgery"]["marginal_kl"])
        recon = r["test"]["log_px_z"] - ref["test"]["log_px_z"]  # E_q log p(x|z), test images
        print(
            f"  Z = {r['z_dim']:2d}  {labels[r['prior']]:16s} KL(q(z)||p) {cut:3.0f}% lower   "
            f"reconstruction {recon:+6.2f} nats"
        )

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
colors = {"standard": "black", "mog": "tab:blue", "vamp": "tab:red", "flow": "tab:green"}
for ax, zdim in zip(axes, (2, 10), strict=True):
    for r in res.values():
        if r["z_dim"] == zdim:
            ep = [c["epoch"] for c in r["curves"]]
            ax.plot(
                ep,
                [c["test_elbo"] for c in r["curves"]],
                "o-",
                ms=4,
                color=colors[r["prior"]],
                label=labels[r["prior"]],
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test ELBO, 1000 images (nats)")
    ax.set_title(f"Z = {zdim}: the bound during training")
    ax.set_ylim(top=ax.get_ylim()[1] + 1)
    ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# - **Learned priors shrink the marginal KL** — the only part of the KL term that §1 showed a
#   prior can influence. For both latent sizes every learned prior cuts
#   $\mathrm{KL}(q(\mathbf z)\,\|\,p)$ of the $\mathcal N(0, I)$ model, by 42 to 82 per cent; in
#   two dimensions the mixture and the VampPrior bring it down to 0.15 and 0.09 nats.
# - **The information term stays below $\log N$** for every model, far below it for $Z = 2$
#   (two numbers cannot name 60 000 images). It is *lower* with the learned priors: after six
#   epochs their encoders carry less information, and their reconstruction terms are lower, for
#   every learned prior and both latent sizes.
# - **The bound does not clearly improve by itself.** With $Z = 2$ the four NLLs lie within half
#   a nat of each other on the 500 images, the paired differences on 100 images are within about
#   two standard errors of zero, and the ELBOs are within a nat. With $Z = 10$ the mixture ties
#   $\mathcal N(0, I)$, the flow is slightly behind, and the VampPrior is three nats behind.
#   The curves show that this is a statement about *optimisation* at a short budget: the
#   learned-prior models use a one-sample Monte Carlo KL, whose gradient is noisier than the
#   closed form; with $Z = 10$ the VampPrior, whose prior is made of the encoder's own outputs,
#   starts slowly and is still climbing fastest; and no model has converged. Tomczak and Welling
#   train for hundreds of epochs with a gradual KL warm-up before the VampPrior pays off
#   {cite:p}`tomczak2018vae`.
#
# **A clean comparison: refit the prior of a trained model.** §3 makes a sharper prediction. For
# *fixed* networks, the best prior is the maximum-likelihood fit to the aggregated posterior, and
# replacing $\mathcal N(0, I)$ by it raises the average training ELBO by exactly the decrease of
# $\mathrm{KL}(q(\mathbf z)\,\|\,p)$. We take the $Z = 10$ model trained with $\mathcal N(0, I)$,
# fit a mixture of 100 Gaussians to draws from its aggregated posterior (400 Adam steps on
# mini-batches of 1000 fresh draws: a few seconds), and measure both.
#
# **Check.** On 2000 training and 2000 test images, the change of the ELBO is the average of
# $\log p_{\text{new}}(\mathbf z) - \log\mathcal N(\mathbf z; 0, I)$ over codes $\mathbf z \sim
# q(\mathbf z\mid\mathbf x)$ (the networks are unchanged). On the training images it must equal
# the decrease of the marginal KL measured by ELBO surgery within 4 standard errors, and the test
# images must gain as much as the training images, within 4 combined standard errors: a
# 100-component mixture does not memorise like the 60 000-component optimal prior of §3. (The
# prior is fitted in the notebook, so the figures are printed to two decimals: the last digits of
# a 400-step optimisation depend on the CPU's rounding.)

# %%
base = models["z10_standard"]
mu_b, lv_b = enc10["z10_standard"]
torch.manual_seed(7)
refit = MixtureOfGaussiansPrior(10, 100)
g_fit = torch.Generator().manual_seed(8)
with torch.no_grad():  # start the components at the codes of 100 random training images
    refit.means.copy_(mu_b[torch.randperm(N_TRAIN, generator=g_fit)[:100]].float())
opt = torch.optim.Adam(refit.parameters(), lr=1e-2)
for _ in range(400):
    z_fit, _ = sample_aggregate_posterior(mu_b, lv_b, 1000, generator=g_fit)
    loss = -refit.log_prob(z_fit.float()).mean()  # maximum likelihood on codes
    opt.zero_grad()
    loss.backward()
    opt.step()
refit.eval()


@torch.no_grad()
def prior_gain(x: torch.Tensor, n_draws: int = 4) -> tuple[float, float]:
    """Mean and s.e. over images of E_q[log p_new(z) - log N(z; 0, I)], nats."""
    mu, lv = base.encode(x)
    z = mu + (0.5 * lv).exp() * torch.randn(n_draws, *mu.shape, generator=g_fit)
    return mean_se((refit.log_prob(z) - standard_normal_log_prob(z)).mean(0).double())


s_new = elbo_surgery(mu_b, lv_b, lambda z: refit.log_prob(z.float()).to(DT), 2000, generator=g_fit)
s_old = res["z10_standard"]
gain_tr, se_tr = prior_gain(x_train[:2000])
gain_te, se_te = prior_gain(x_test[:2000])
drop = s_old["surgery"]["marginal_kl"] - s_new.marginal_kl
se_drop = math.hypot(s_old["surgery"]["marginal_kl_se"], s_new.marginal_kl_se)
print(
    f"KL(q(z) || p): N(0, I) {s_old['surgery']['marginal_kl']:.2f}  ->  refitted mixture "
    f"{s_new.marginal_kl:.2f} +- {s_new.marginal_kl_se:.2f}   (decrease {drop:.2f} +- {se_drop:.2f})"
)
print(f"ELBO gain, 2000 training images: {gain_tr:.2f} +- {se_tr:.2f}")
print(f"ELBO gain, 2000 test images:     {gain_te:.2f} +- {se_te:.2f}")
assert abs(gain_tr - drop) < 4 * math.hypot(se_tr, se_drop)
assert abs(gain_te - gain_tr) < 4 * math.hypot(se_tr, se_te)
refit_gain = {"train": (gain_tr, se_tr), "test": (gain_te, se_te)}  # used in section 7

# %% [markdown]
# With the encoder and decoder frozen, the refitted prior raises the average ELBO by the
# marginal KL it removes, on test images as on training images — the most direct
# confirmation of §3. Training the prior jointly from the start should do at least as well in
# the end; at a budget of six epochs it mostly changes the path the networks take.
#
# ## 6. Prior holes
#
# A prior that covers too much leaves **holes**: regions with high prior density and almost no
# aggregated-posterior mass. Sampling the model, $\mathbf z \sim p(\mathbf z)$ then $\mathbf x
# \sim p(\mathbf x\mid\mathbf z)$, visits them; the decoder was never trained there, and what it
# produces there is whatever its smooth interpolation gives. Two numbers measure holes, both
# estimated from draws $\mathbf z_i \sim p$ (`dgmlib.surgery.prior_holes`): the reverse KL
# $\mathrm{KL}(p\,\|\,q) = \mathbb E_p[\log p - \log q]$, large when prior mass sits where $q$ is
# small, and the **hole mass** $P_p\big[q(\mathbf z) < p(\mathbf z)/10\big]$, the fraction of prior
# samples where the codes are ten times rarer than the prior claims. ELBO training never
# penalises either: §3 showed that it fits the prior by the *forward* KL.
#
# With $Z = 2$ we can look. The top row shows the density of each trained prior, the bottom row
# the aggregated posterior of its model on the same grid (computed from the posteriors of the
# first 20 000 training images, to keep the cell fast; the picture is the same with all 60 000).

# %%
z2 = [n for n in res if n.startswith("z2_")]
lim, n_grid = 6.0, 61
grid_1d = torch.linspace(-lim, lim, n_grid)
grid = torch.cartesian_prod(grid_1d, grid_1d)  # [n_grid^2, 2]; grid[:, 0] varies slowest
enc2 = {}
dens = {}
for name in z2:
    model = models[name]
    enc2[name] = encode_all(model, x_train)
    mu_s, lv_s = enc2[name][0][:20_000].float(), enc2[name][1][:20_000].float()
    with torch.no_grad():
        dens[name] = (
            model.prior.log_prob(grid).reshape(n_grid, n_grid).T.numpy(),
            aggregate_posterior_log_prob(grid, mu_s, lv_s).reshape(n_grid, n_grid).T.numpy(),
        )
fig, axes = plt.subplots(2, 4, figsize=(13, 6.6), sharex=True, sharey=True)
vmin, vmax = -9.0, 0.0
density_map = {"origin": "lower", "extent": (-lim, lim, -lim, lim), "vmin": vmin, "vmax": vmax}
for j, name in enumerate(z2):
    for i, (dmap, what) in enumerate(
        zip(dens[name], ("prior $p(z)$", "aggregated posterior $q(z)$"), strict=True)
    ):
        ax = axes[i, j]
        im = ax.imshow(np.clip(dmap, vmin, vmax), cmap="viridis", **density_map)
        if i == 0:
            ax.set_title(f"model with prior {labels[res[name]['prior']]}", fontsize=11)
        ax.grid(False)
        if i == 1:
            ax.set_xlabel("$z_1$")
        if j == 0:
            ax.set_ylabel(f"{what}\n$z_2$")
fig.colorbar(im, ax=axes, shrink=0.8, label="log-density (nats, clipped at -9)")
fig.suptitle("Z = 2: prior (top) against the aggregated posterior of the same model (bottom)")
plt.show()

# %% [markdown]
# The aggregated posterior of the $\mathcal N(0, I)$ model is not Gaussian: a lumpy disk with
# bright filaments (images the encoder is sure about), a sharp edge, and gaps — one of them next
# to the origin, where the prior is densest. The prior's round tails extend well beyond the edge.
# The learned priors follow the outline of their codes closely: the mixture and the VampPrior
# place components on the lobes, the flow bends its Gaussian into their shape. Their codes also
# spread wider: once the prior can follow them, the encoder no longer has to squeeze them into a
# unit Gaussian.
#
# **Decoding the holes.** We draw 4000 codes from the standard normal prior of the $Z = 2$ model,
# rank them by $\log q(\mathbf z) - \log p(\mathbf z)$ (with all 60 000 training posteriors), and
# decode the 12 most "hole-like" and 12 typical ones (median rank) to their mean images.

# %%
std2 = models["z2_standard"]
mu_s, lv_s = enc2["z2_standard"]
with torch.no_grad():
    z_p = std2.prior.sample(4000, generator=torch.Generator().manual_seed(5))
    log_p = std2.prior.log_prob(z_p).to(DT)
    log_q = aggregate_posterior_log_prob(z_p.to(DT), mu_s, lv_s)
    order = torch.argsort(log_q - log_p)
    holes_z = z_p[order[:12]]
    typical_z = z_p[order[len(order) // 2 - 6 : len(order) // 2 + 6]]
    imgs_hole, imgs_typ = std2.decoder.mean(holes_z), std2.decoder.mean(typical_z)
h = prior_holes(log_p, log_q, ratio=10.0)
stored = res["z2_standard"]["holes"]
print(
    f"N(0, I) prior, Z = 2: hole mass {h.hole_mass:.3f} +- {h.hole_mass_se:.3f} "
    f"(stored {stored['hole_mass']:.3f} +- {stored['hole_mass_se']:.3f}); "
    f"KL(p || q) {h.reverse_kl:.2f} +- {h.reverse_kl_se:.2f} (stored {stored['reverse_kl']:.2f})"
)
assert abs(h.hole_mass - stored["hole_mass"]) < 4 * math.hypot(
    h.hole_mass_se, stored["hole_mass_se"]
)
assert abs(h.reverse_kl - stored["reverse_kl"]) < 4 * math.hypot(
    h.reverse_kl_se, stored["reverse_kl_se"]
)

fig = plt.figure(figsize=(12, 4.6))
ax0 = fig.add_subplot(1, 3, 1)
im = ax0.imshow(np.clip(dens["z2_standard"][1], vmin, vmax), cmap="viridis", **density_map)
ax0.scatter(*holes_z.T, s=30, marker="x", color="red", label="12 deepest holes")
ax0.scatter(*typical_z.T, s=30, marker="o", facecolors="none", color="white", label="12 typical")
ax0.set_title("aggregated posterior q(z), N(0, I) model")
fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.03, label="log q(z) (clipped)")
ax0.set_xlabel("$z_1$")
ax0.set_ylabel("$z_2$")
ax0.grid(False)
ax0.legend(loc="lower left", fontsize=8)
image_grid(imgs_hole, nrow=4, ax=fig.add_subplot(1, 3, 2), title="decoded from holes")
image_grid(imgs_typ, nrow=4, ax=fig.add_subplot(1, 3, 3), title="decoded from typical prior draws")
plt.show()

# %% [markdown]
# The deepest holes of this prior are in its tails, beyond the edge of the codes. The decoder
# was never trained there and extrapolates the nearest lobe: most hole codes decode to the same
# washed-out long-sleeved top, a few to faint blends, while typical prior draws decode to the
# variety of the data set. A model sampled through its prior over-produces whatever the decoder
# extrapolates to, in proportion to the prior mass in holes. The hole mass in the
# table of §5 puts a number on it for every prior: learned priors leave far less prior mass in
# holes — they are fitted to where the codes are — though none reaches zero, and the ELBO does not
# ask them to. Priors designed to avoid holes explicitly, e.g. by learning to reject prior samples
# that fall in them {cite:p}`bauer2019resampled`, go one step further.
#
# **Check: the learned priors have fewer holes.** For both latent sizes, every learned prior has a
# lower stored hole mass than $\mathcal N(0, I)$, by more than 4 combined standard errors.

# %%
for zdim in (2, 10):
    base = res[f"z{zdim}_standard"]
    for prior in ("mog", "vamp", "flow"):
        r = res[f"z{zdim}_{prior}"]
        se = math.hypot(base["holes"]["hole_mass_se"], r["holes"]["hole_mass_se"])
        print(
            f"Z = {zdim:2d}  {labels[prior]:16s} hole mass {r['holes']['hole_mass']:.3f}   "
            f"(N(0, I): {base['holes']['hole_mass']:.3f})"
        )
        assert base["holes"]["hole_mass"] - r["holes"]["hole_mass"] > 4 * se

# %% [markdown]
# ## 7. Over-regularisation by the standard normal prior
#
# The lecture notes warn that $\mathcal N(0, I)$ *over-regularises*. The surgery makes this
# measurable in two ways.
#
# **The direct cost.** For fixed networks, the average training ELBO under a prior $p$ falls short
# of the best that any prior allows by exactly $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$ (§3).
# For $\mathcal N(0, I)$ this marginal KL is the price of asking the codes to look like a standard
# normal, and it is also the ELBO gain available from swapping in the optimal prior, the
# aggregated posterior itself: §3 checked that equality on the Lecture 02 model, and showed that
# the optimal prior's gain stays on the training images. The refit of §5 is the practical version:
# a 100-component mixture fitted to the codes realises part of the available gain, on test images
# too. No prior can realise more than all of it on training images.
#
# **The effect on the encoder.** During training the prior also shapes the encoder. The
# cross-entropy term pulls the aggregated posterior into the prior's mass (for $\mathcal N(0, I)$:
# each coordinate's second moment towards 1, §2), and the cheapest coordinate of all is one that
# carries nothing: a posterior equal to the prior for every image costs no KL. A learned prior
# moves to where the codes are instead. We compare the four $Z = 10$ models, which started from
# the same weights, saw the same mini-batches and differ only in their prior — one training run
# each, six epochs — by statistics of their encoders over all 60 000 training images:
#
# - $\mathrm{KL}(q(\mathbf z)\,\|\,\mathcal N(0, I))$, how far each model's codes are from the
#   standard normal (on the 1000 draws of §5, with $\log\mathcal N(\mathbf z; 0, I)$ in place of
#   the model's own prior);
# - the information $I_q(n;\mathbf z)$ (stored, 5000 draws);
# - the **active units** {cite:p}`burda2016importance`, coordinates whose posterior mean varies
#   with the image, $\operatorname{Var}_n(\mu_d) > 0.01$;
# - the average posterior variance $\overline{\sigma^2}$, and, since a learned prior leaves the
#   scale of each coordinate free (the decoder's first layer absorbs it, §2), the scale-free
#   **relative posterior variance** $r_d = \mathbb E_n[\sigma_d^2] / \operatorname{Var}_{q(\mathbf
#   z)}(z_d)$, where $\operatorname{Var}_{q(\mathbf z)}(z_d) = \operatorname{Var}_n(\mu_d) +
#   \mathbb E_n[\sigma_d^2]$ (law of total variance): $r_d = 1$ for a coordinate that ignores the
#   image, $r_d \to 0$ for one whose posteriors are narrow against the spread of the codes.
#
# The standard errors of these encoder statistics come from 10 disjoint blocks of 6000 images
# (the spread of the ten block values divided by $\sqrt{10}$).
#
# **Checks**, each at 4 standard errors, fixed in advance. The direct cost of $\mathcal N(0, I)$
# is positive for both latent sizes, and the refit's training gain does not exceed it. Every
# unit's activity lies more than 4 standard errors from the threshold 0.01, so no count is a
# sampling accident. Then the four comparisons the text below relies on, between the
# $\mathcal N(0, I)$ model and each learned-prior model, each beyond 4 combined standard errors:
# fewer active units, a coordinate with a larger $r_d$, codes closer to $\mathcal N(0, I)$ — and
# more information $I_q(n;\mathbf z)$ (for $Z = 2$ as well).


# %%
def per_unit(mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
    """[4, Z]: activity Var_n(mu_d), mean posterior variance, r_d, second moment E_q(z)[z_d^2]."""
    act, post = mu.var(0, correction=0), lv.exp().mean(0)
    return torch.stack([act, post, post / (act + post), (mu**2).mean(0) + post])


def blocks_of(mu: torch.Tensor, lv: torch.Tensor, n_blocks: int = 10) -> torch.Tensor:
    """per_unit on n_blocks disjoint blocks of the images: [n_blocks, 4, Z]."""
    return torch.stack(
        [per_unit(m, v) for m, v in zip(mu.chunk(n_blocks), lv.chunk(n_blocks), strict=True)]
    )


# the direct cost, and the part of it the refit of section 5 recovered
THRESH = 0.01  # Burda et al.'s activity threshold
for zdim in (2, 10):
    r = res[f"z{zdim}_standard"]
    print(
        f"Z = {zdim:2d}, N(0, I): KL(q(z) || N(0, I)) = available gain of the optimal prior "
        f"{r['surgery']['marginal_kl']:.2f} +- {r['surgery']['marginal_kl_se']:.2f} nats"
    )
    assert r["surgery"]["marginal_kl"] > 4 * r["surgery"]["marginal_kl_se"]
avail, avail_se = s_old["surgery"]["marginal_kl"], s_old["surgery"]["marginal_kl_se"]
(g_tr, g_tr_se), (g_te, g_te_se) = refit_gain["train"], refit_gain["test"]
print(
    f"Z = 10: the refitted mixture of section 5 recovers {g_tr:.2f} +- {g_tr_se:.2f} (training) "
    f"and {g_te:.2f} +- {g_te_se:.2f} (test) of it, {100 * g_tr / avail:.0f}%"
)
assert g_tr < avail + 4 * math.hypot(g_tr_se, avail_se)  # no prior beats the optimal one

# the encoders of the four Z = 10 models
print(
    f"\n{'Z = 10 model':16s} {'KL(q(z)||N(0,I))':>16s}  {'I(n; z)':>13s}  {'active':>6s}  "
    f"{'mean sigma^2':>12s}  {'mean r_d':>8s}  {'largest r_d':>11s}  E_q(z)[z_d^2]"
)
enc_stats, var_se = {}, []
for name in z10:
    r, (mu_m, lv_m), smp = res[name], enc10[name], smp10[name]
    full, blk = per_unit(mu_m, lv_m), blocks_of(mu_m, lv_m)
    se_unit = blk.std(0) / math.sqrt(len(blk))  # [4, Z]
    se_mean = blk.mean(2).std(0) / math.sqrt(len(blk))  # [4]: of the averages over units
    au = active_units(mu_m.float(), THRESH)
    margin = ((full[0] - THRESH).abs() / se_unit[0]).min().item()  # in standard errors
    assert margin > 4, (name, margin)
    j = int(full[2].argmax())
    kl_std = mean_se(smp.log_q - standard_normal_log_prob(smp.z.to(DT)))
    enc_stats[name] = {
        "kl_std": kl_std,
        "au": au.count,
        "r_max": (full[2, j].item(), se_unit[2, j].item()),
    }
    var_se += [se_mean[1].item(), se_mean[2].item(), se_unit[2, j].item()]
    print(
        f"{labels[r['prior']]:16s} {kl_std[0]:9.2f} +- {kl_std[1]:.2f}  "
        f"{r['surgery']['mutual_info']:6.2f} +- {r['surgery']['mutual_info_se']:.2f}  "
        f"{au.count:3d}/{len(full[0])}  {full[1].mean().item():12.3f}  {full[2].mean().item():8.3f}  "
        f"{full[2, j].item():11.3f}  {full[3].min().item():.2f} to {full[3].max().item():.2f}"
    )
    if r["prior"] == "standard":
        idle = full[0] <= THRESH
        print(
            f"{'':16s} its {int(idle.sum())} inactive units: Var_n(mu_d) at most "
            f"{full[0][idle].max().item():.3f}, r_d at least {full[2][idle].min().item():.3f}"
        )
print(
    f"(standard errors of the three variance columns: below {math.ceil(1000 * max(var_se)) / 1000}; "
    f"every unit's activity is more than 4 standard errors from the threshold {THRESH})\n"
)

# the comparisons, N(0, I) against each learned prior (combined standard errors)
for zdim in (2, 10):
    ref = res[f"z{zdim}_standard"]
    for prior in ("mog", "vamp", "flow"):
        r = res[f"z{zdim}_{prior}"]
        se = math.hypot(ref["surgery"]["mutual_info_se"], r["surgery"]["mutual_info_se"])
        diff = ref["surgery"]["mutual_info"] - r["surgery"]["mutual_info"]
        print(f"Z = {zdim:2d}: I(n; z) of N(0, I) minus {labels[prior]:16s} {diff:.2f} +- {se:.2f}")
        assert diff > 4 * se, (zdim, prior)
std_stats = enc_stats["z10_standard"]
for name in z10[1:]:
    st = enc_stats[name]
    assert std_stats["au"] < st["au"], name
    assert std_stats["r_max"][0] - st["r_max"][0] > 4 * math.hypot(
        std_stats["r_max"][1], st["r_max"][1]
    ), name
    assert st["kl_std"][0] - std_stats["kl_std"][0] > 4 * math.hypot(
        std_stats["kl_std"][1], st["kl_std"][1]
    ), name
print(
    "N(0, I) against each learned prior, Z = 10: fewer active units, a larger largest r_d, "
    "codes closer to N(0, I); Z = 2 and 10: more information I(n; z)"
)

# %% [markdown]
# **The direct cost is real and recoverable.** The standard normal prior costs the $Z = 10$ model
# about two nats per image of its bound — the whole gain the optimal prior would give — and the
# $Z = 2$ model about half a nat. Refitting a 100-component mixture after training recovers about
# two thirds of the $Z = 10$ cost, on test images as on training images; the rest is the
# mismatch between the codes and that mixture (§5). This is the cleanest measurement of
# over-regularisation here, because the networks are held fixed.
#
# **The encoder under $\mathcal N(0, I)$ switches coordinates off.** Four of its ten units are
# inactive: their posterior mean hardly varies with the image, and their posterior variance is the
# whole variance of the code ($r_d$ close to 1), so $q(z_d\mid\mathbf x) \approx \mathcal N(0, 1)$
# for every image — exactly the free option the KL term offers. With each learned prior all ten
# units are active, and no coordinate comes near $r_d = 1$. The learned-prior codes also leave
# the unit scale that $\mathcal N(0, I)$ imposes (the largest second moment of a coordinate is 5
# to 39 against at most 1.19), so their aggregated posteriors are far from the standard normal in
# KL. Much of that divergence is a change of scale, which the decoder absorbs at no cost, so on its
# own it says little; the raw average posterior variance depends on the scale in the same way,
# which is why $r_d$ is the column to compare.
#
# **More active units did not buy more information.** The standard-prior encoder carries the
# *most* information, for both latent sizes, and §5 showed it also has the best reconstruction
# term. After six epochs of joint training, with one run per prior, the learned priors spread a
# smaller amount of information over more coordinates. So in these runs the over-regularisation
# of $\mathcal N(0, I)$ shows as a marginal KL paid in the bound, removable after training, and as
# collapsed units. None of the learned priors gained information over it, and none improved the
# likelihood by more than its standard error (§5). Whether that changes with longer training (the
# learned-prior curves of §5 were still rising) is not tested here.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1 — the log-density of a mixture prior
#
# Implement `my_mixture_log_prob(z, means, logvars, logits)`: for codes `z` of shape $[M, D]$ and
# a mixture of $K$ diagonal Gaussians (`means`, `logvars` of shape $[K, D]$, unnormalised
# `logits` of shape $[K]$) return the $M$ values $\log\sum_k \operatorname{softmax}(\ell)_k\,
# \mathcal N(\mathbf z_m; \mathbf m_k, \operatorname{diag}e^{\mathrm{logvars}_k})$. Work in log
# space throughout. Then compare it with the trained mixture prior of the $Z = 10$ model.


# %%
def my_mixture_log_prob(
    z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    ### BEGIN SOLUTION
    diff = z[:, None, :] - means[None, :, :]  # [M, K, D]
    log_comp = -0.5 * (math.log(2 * math.pi) + logvars + diff**2 * torch.exp(-logvars)).sum(-1)
    return torch.logsumexp(torch.log_softmax(logits, dim=0) + log_comp, dim=1)
    ### END SOLUTION


check_mixture_prior_log_prob(my_mixture_log_prob)
with torch.no_grad():  # in float64, as in section 4.1
    z64 = z_mog.double()
    mine = my_mixture_log_prob(z64, mog.means.double(), mog.logvars.double(), mog.logits.double())
    err_mine = (mine - mog.double().log_prob(z64)).abs().max().item()
    mog.float()
assert err_mine < 1e-9, f"max |mine - MixtureOfGaussiansPrior.log_prob| = {err_mine:.1e}"
print("max |mine - MixtureOfGaussiansPrior.log_prob| on 1000 codes, float64: below 1e-9")

# %% [markdown]
# ### Exercise 2 — the aggregated posterior, and the information of a smaller data set
#
# Implement `my_aggregate_posterior_log_prob(z, mu, logvar)`: for codes $[M, Z]$ and the
# posteriors of $N$ data points ($[N, Z]$ each) return $\log\frac1N\sum_n\mathcal N(\mathbf z;
# \boldsymbol\mu_n, \operatorname{diag}e^{\mathrm{logvar}_n})$, shape $[M]$. Then use it to
# estimate $I_q(n;\mathbf z)$ for the Lecture 02 model on only the first 1000 training images, and
# compare with $\log 1000$. Is the code closer to "naming its image" than with 60 000 images?


# %%
def my_aggregate_posterior_log_prob(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    ### BEGIN SOLUTION
    diff = z[:, None, :] - mu[None, :, :]  # [M, N, Z]
    log_comp = -0.5 * (math.log(2 * math.pi) + logvar + diff**2 * torch.exp(-logvar)).sum(-1)
    return torch.logsumexp(log_comp, dim=1) - math.log(mu.shape[0])
    ### END SOLUTION


check_aggregate_posterior_log_prob(my_aggregate_posterior_log_prob)
mu_k, lv_k = mu20[:1000], lv20[:1000]
g_ex = torch.Generator().manual_seed(6)
idx = torch.randint(0, 1000, (2000,), generator=g_ex)
z_ex = mu_k[idx] + (0.5 * lv_k[idx]).exp() * torch.randn(2000, 20, generator=g_ex, dtype=DT)
info = gaussian_log_prob(z_ex, mu_k[idx], lv_k[idx]) - my_aggregate_posterior_log_prob(
    z_ex, mu_k, lv_k
)
info, info_se = mean_se(info)
print(
    f"I(n; z) over 1000 training images: {info:.3f} +- {info_se:.3f}   "
    f"(log 1000 = {math.log(1000):.3f})"
)

# %% [markdown]
# ### Exercise 3 (optional) — how many components does a refitted prior need?
#
# Repeat the refit of §5 for the $Z = 2$ model trained with $\mathcal N(0, I)$, with
# $K \in \{1, 5, 20, 100\}$ components. Plot the test-ELBO gain and the hole mass
# (`dgmlib.surgery.prior_holes`) against $K$, and draw the refitted prior beside the aggregated
# posterior as in §6. Which $K$ removes most of the holes, and does the test gain keep growing?
#
# ## Summary
#
# - Averaged over a data set, the KL term of the ELBO splits exactly into the mutual information
#   between the data index and the code, $I_q(n;\mathbf z) \in [0, \log N]$, and the divergence
#   $\mathrm{KL}(q(\mathbf z)\,\|\,p(\mathbf z))$ of the aggregated posterior from the prior
#   (ELBO surgery). Checked on encoders with known terms, and on the Lecture 02 VAE over all
#   60 000 training images: there, about 10 of its 12.6 nats are information, within a nat of
#   $\log N = 11.0$.
# - The same average KL is the cross-entropy $H(q(\mathbf z), p)$ of the aggregated posterior to
#   the prior minus the average entropy of the posteriors (both closed forms for Gaussians, checked
#   against Monte Carlo). The entropy term rewards wide posteriors, the cross-entropy term
#   posteriors inside the prior's mass — for $\mathcal N(0, I)$ it sees only the second moment of
#   the codes and, at a stationary point, fixes it to 1 per coordinate. Adding $H(q(\mathbf z))$
#   to both terms gives back the surgery identity.
# - Only the second term involves the prior, and it is zero for the aggregated posterior: the
#   optimal prior is $q(\mathbf z) = \frac1N\sum_n q(\mathbf z\mid\mathbf x_n)$. It beat every
#   other prior we tried on training codes, but its gain vanishes on test images (it memorises),
#   and it costs $N$ Gaussians per evaluation.
# - Learned priors approximate it with few parameters: a mixture of Gaussians, the VampPrior (a
#   mixture of the encoder's own posteriors at learned pseudo-inputs), and a RealNVP flow with an
#   exact triangular log-determinant; each was checked against an independent computation. They
#   are trained with the one-sample Monte Carlo KL, whose prior gradient is maximum likelihood on
#   the codes.
# - On Fashion-MNIST, after six epochs, all three shrink the marginal KL and leave far less prior
#   mass in **holes** — regions the prior favours but no code visits, where the decoder can only
#   extrapolate (for the $Z = 2$ standard-normal model, mostly to one washed-out top). They do
#   not clearly improve the bound when trained jointly from the start (within a nat of
#   $\mathcal N(0, I)$ with $Z = 2$; with $Z = 10$ the mixture ties it and the others fall behind:
#   a noisier KL gradient and, for the VampPrior, a slow start), but refitting the prior of a
#   trained model raises its test ELBO by the marginal KL it removes, as the surgery predicts.
# - The over-regularisation of $\mathcal N(0, I)$, measured with $Z = 10$: it costs the model
#   about two nats of its bound (the gain the optimal prior would give), of which a refitted
#   mixture recovers about two thirds, on test images too; and its encoder has four of ten units
#   collapsed onto the prior, where every learned-prior encoder uses all ten. A loss of
#   information does not show at this budget: the standard-prior encoder carries the most, for
#   both latent sizes.
#
# ## References
#
# - {cite}`hoffman2016elbo` — ELBO surgery: the average KL as mutual information plus marginal KL.
# - {cite}`tomczak2018vae` — the VampPrior; the aggregated posterior as the optimal prior.
# - {cite}`dinh2017density` — RealNVP and its affine coupling layers.
# - {cite}`chen2017variational` — a VAE with an autoregressive-flow prior.
# - {cite}`papamakarios2021normalizing` — a review of normalizing flows.
# - {cite}`bauer2019resampled` — resampled priors, and the mismatch between prior and aggregated
#   posterior.
# - {cite}`burda2016importance` — the MLP architecture and the importance-sampled NLL.
# - {cite}`kingma2014auto` — the VAE.
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.
