"""Train the discriminator and the GANs of Lecture 08; write small checkpoints and their curves.

Usage: python tools/train_lecture08.py [--part all|main|collapse] [--out data/checkpoints]
[--device cpu] [--quick]
Runtime: ``--part main`` one to two minutes of CPU time on one thread (65 s measured on a quiet
two-core machine, 4 to 6.5 minutes of wall time when it was shared with other jobs), ``--part
collapse`` under three minutes of CPU time (157 s measured; 11.5 minutes of wall time on a
two-core machine shared with other jobs); ``--quick`` runs a few-second smoke test of the
pipeline (not the lecture's settings). Each part keeps the other part's entries of
``l08_results.json``.

``--part main`` makes two experiments, both on known densities (no data files):

* ``disc1d``: the 1-D discriminator of Check 2 (c). Data ``p_d = 0.3 N(-1.5, 0.6^2) +
  0.7 N(1.5, 0.8^2)``, generator ``p_g = N(0, 1.5^2)``, ``D1_N`` samples of each drawn once with
  seed ``D1_DATA_SEED``; ``dgmlib.gan.Discriminator(x_dim=1, hidden=32)`` trained by Adam
  (lr ``D1_LR``, :class:`dgmlib.train.Trainer`) for ``D1_STEPS`` steps on batches of ``D1_BATCH``
  real and ``D1_BATCH`` generated points (indices drawn with the same generator) on the
  cross-entropy ``-V(G, D)``. Evaluated in double precision on the lecture's grid (4001 points
  on [-12, 12], densities from ``torch.distributions``): the average ``|D - D*|`` under
  ``(p_d + p_g)/2``, the largest ``|D - D*|`` where that density exceeds 0.05, and ``V(G, D)`` by
  the rectangle rule.
* ``gan_<loss>_s<seed>``: the GANs of Section 4 on the ring of 8 Gaussians
  (``toy_2d("ring", RING_N, seed=RING_SEED)``), for both generator losses and the seeds in
  ``SEEDS``. ``dgmlib.gan.GAN``: a generator and a discriminator with two hidden layers of
  64 ReLU units (``GAN_KWARGS``) seeded by ``torch.manual_seed(seed)``; Adam (lr ``GAN_LR``,
  betas ``GAN_BETAS``) for each; every step draws ``GAN_BATCH`` real points and ``GAN_BATCH``
  latent codes from a generator seeded ``1000 + seed``, makes one step on the discriminator's
  cross-entropy, then one on the generator's loss. The two losses of one seed share the initial
  weights and the batches. Logged (``log``): every ``LOG_EVERY`` steps the means over those steps
  of the two losses, of ``D(x_real)`` and of ``D(G(z))``; every ``EVAL_EVERY`` steps
  (``curves``), on ``EVAL_N`` fixed latent codes (float64, seed ``EVAL_SEED``) pushed through a
  float64 copy of the generator, ``dgmlib.gan.mode_coverage`` (modes covered, fraction of
  high-quality samples, counts per mode) and, at the same codes and the current discriminator,
  the norms of the generator's minimax and non-saturating gradients and their cosine; ``test``:
  the coverage of the final generator. The weights of seed 0 are saved.

``--part collapse`` makes the mode-collapse experiment on the same ring, with the generator and
the discriminator of Section 4 (``C_GEN``, ``C_DISC``), the non-saturating loss, Adam with
``C_BETAS`` and ``C_STEPS`` steps of ``GAN_BATCH`` points, for each seed in ``C_SEEDS`` and each
method of ``C_METHODS`` from the same initialisation and batches: ``plain``, a generator ten
times faster than its discriminator (learning rates 1e-2 and 1e-3), which collapses;
``unrolled``, the same with the generator's loss taken against the discriminator after 5
unrolled gradient steps of size ``C_UNROLL_LR`` on the batch, differentiated through them
(:func:`dgmlib.gan.unrolled_generator_loss`, Metz et al. 2017); ``confident``, a discriminator a
hundred times faster than its generator, which becomes confident. Logged (``log``, every
``LOG_EVERY`` steps): the means of the two losses, of ``D(x_real)``, of ``D(G(z))`` and of the
standard error of the batch estimate of the discriminator's loss (``loss_d_se``, from the spread
of its per-sample terms); ``curves`` (every ``C_EVAL_EVERY`` steps, on the fixed codes of
Section 4): the coverage, the samples nearest to each centre (``nearest``), the norms of the
minimax and the non-saturating generator gradients (plain losses, current discriminator), their
cosine and the mean ``D(G(z))``. The final generators of the methods in ``C_SAVED`` are saved,
every seed (``l08_collapse_<method>_s<seed>``). The results are written after every run; a
re-run with the same settings skips the runs already stored (so an interrupted run resumes).

Everything is deterministic: one CPU thread, fixed seeds, seeded generators (on the CPU, whatever
``--device``) for every sample and batch. The script writes into ``--out``
``l08_disc1d.safetensors``, ``l08_gan_nonsaturating.safetensors`` and
``l08_gan_minimax.safetensors`` (weights and build spec: ``dgmlib.pretrained.load("l08_disc1d")``),
``l08_collapse_<method>_s<seed>.safetensors``, with ``.sha256`` sidecars, ``l08_results.json``
and the models' entries in ``manifest.json``. On the same platform a re-run reproduces the
hashes bit for bit; on another CPU the training
trajectories differ (a GAN's training is chaotic), which is why the lecture loads these files.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.data import toy_2d  # noqa: E402
from dgmlib.gan import (  # noqa: E402
    GAN,
    Discriminator,
    Generator,
    discriminator_loss,
    generator_loss,
    mode_coverage,
    ring_centres,
    unrolled_generator_loss,
)
from dgmlib.io import read_json  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
LECTURE = "08_gans"
COMMAND = "python tools/train_lecture08.py"  # recorded in the results and the checkpoints
SEED = 0  # the 1-D discriminator's initial weights (each GAN is seeded by its own seed)
THREADS = 1  # one CPU thread: bit-for-bit reproducible, and fastest for these tiny networks
DT = torch.float64  # the densities and the evaluations

# the 1-D discriminator of Check 2 (c)
D1_KWARGS = {"x_dim": 1, "hidden": 32}
D1_N = 20_000  # samples of p_d and of p_g, drawn once
D1_STEPS = 1500  # Adam steps
D1_BATCH = 1000  # real and generated points per step
D1_LR = 3e-3
D1_DATA_SEED = 2  # the samples and the batch indices
D1_LOG_EVERY = 50  # steps per point of the loss curve
PD_MIX = ((0.3, -1.5, 0.6), (0.7, 1.5, 0.8))  # (weight, mean, std) of the components of p_d
PG_STD = 1.5  # p_g = N(0, PG_STD^2)
GRID = (-12.0, 12.0, 4001)  # the lecture's grid: start, end, points

# the GANs of Section 4
GAN_KWARGS = {"hidden": 64}  # two hidden layers of 64 ReLU units, generator and discriminator
GAN_LR = 1e-3
GAN_BETAS = (0.5, 0.999)
GAN_BATCH = 256  # real points and latent codes per step
GAN_STEPS = 2000
LOSSES = ("nonsaturating", "minimax")  # the generator's losses
SEEDS = (0, 1, 2, 3, 4)  # initial weights (torch.manual_seed) and batches (1000 + seed)
SAVED_SEED = 0  # whose weights are written
RING_N = 20_000  # training points of the ring of 8 Gaussians
RING_SEED = 4
RING_STD = 0.05  # the ring's component std (a sample within 3 std of a centre is high quality)
EVAL_N = 2000  # fixed latent codes of the evaluation
EVAL_SEED = 5
EVAL_EVERY = 50  # steps between evaluations
LOG_EVERY = 10  # steps per logged mean of the losses
QUICK_D1_STEPS, QUICK_GAN_STEPS, QUICK_SEEDS = 100, 100, SEEDS[:2]  # --quick: a smoke test

# the mode-collapse experiment (--part collapse): generator and discriminator as in Section 4
C_GEN = {"z_dim": 2, "hidden": 64, "layers": 2}  # the generator
C_DISC = {"hidden": 64, "layers": 2}  # the discriminator
C_BETAS = GAN_BETAS  # Adam's betas, both players
C_STEPS = 1000  # steps of GAN_BATCH real points and codes, one per player
C_UNROLL_LR = 0.03  # step size of the unrolled steps (gradient descent on the D loss)
C_METHODS = {  # method -> Adam learning rates of G and D, unrolled steps
    "plain": {"lr_g": 1e-2, "lr_d": 1e-3, "unroll": 0},  # a fast generator: collapses
    "unrolled": {"lr_g": 1e-2, "lr_d": 1e-3, "unroll": 5},  # the same, unrolled (Metz et al.)
    "confident": {"lr_g": 1e-4, "lr_d": 1e-2, "unroll": 0},  # a fast D: confident, not saved
}
C_SAVED = ("plain", "unrolled")  # methods whose final generators are saved (every seed)
C_SEEDS = (0, 1, 2, 3, 4)  # initial weights (torch.manual_seed) and batches (2000 + seed)
C_EVAL_EVERY = 50  # steps between evaluations
QUICK_C_STEPS = 40


# --------------------------------------------------------------------------------------------
# the 1-D discriminator
# --------------------------------------------------------------------------------------------


def p_d() -> MixtureSameFamily:
    """The data density of Check 2 (c), float64."""
    w, mean, std = (torch.tensor(c, dtype=DT) for c in zip(*PD_MIX, strict=True))
    return MixtureSameFamily(Categorical(probs=w), Normal(mean, std))


def p_g() -> Normal:
    """The generator density of Check 2 (c), float64."""
    return Normal(torch.tensor(0.0, dtype=DT), torch.tensor(PG_STD, dtype=DT))


def grid_densities() -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """The lecture's grid (float64), its step, and log p_d, log p_g on it."""
    xg = torch.linspace(*GRID, dtype=DT)
    return xg, float(xg[1] - xg[0]), p_d().log_prob(xg), p_g().log_prob(xg)


def build_disc1d() -> Discriminator:
    """A freshly initialised 1-D discriminator with its build spec (weights depend only on
    ``SEED``)."""
    torch.manual_seed(SEED)
    return experiment.make(Discriminator, **D1_KWARGS)


def disc1d_samples(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """``n`` samples of p_d and of p_g (float32 [n]) and the generator that drew them."""
    g = torch.Generator().manual_seed(D1_DATA_SEED)
    (w0, m0, s0), (_, m1, s1) = PD_MIX
    comp = torch.rand(n, generator=g) < w0
    real = torch.where(
        comp, m0 + s0 * torch.randn(n, generator=g), m1 + s1 * torch.randn(n, generator=g)
    )
    fake = PG_STD * torch.randn(n, generator=g)
    return real, fake, g


def cross_entropy(disc: Discriminator, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Trainer objective of the 1-D discriminator: ``x [2, B, 1]`` holds the real and the
    generated points; ``loss = -V(G, D)``, nats."""
    return {"loss": discriminator_loss(disc(x[0]), disc(x[1]))}


@torch.no_grad()
def evaluate_disc1d(disc: Discriminator) -> dict:
    """The figures of Check 2 (c), in double precision on the lecture's grid."""
    xg, dx, log_pd, log_pg = grid_densities()
    d_trained = torch.sigmoid(copy.deepcopy(disc).cpu().double()(xg[:, None]))
    d_star = torch.sigmoid(log_pd - log_pg)
    mix = 0.5 * (log_pd.exp() + log_pg.exp())
    err = (d_trained - d_star).abs()
    value = (log_pd.exp() * d_trained.log() + log_pg.exp() * (-d_trained).log1p()).sum() * dx
    return {
        "avg_abs_error": float((err * mix).sum() * dx),
        "max_abs_error": float(err[mix > 0.05].max()),
        "value": float(value),
    }


def train_disc1d(
    steps: int = D1_STEPS, n: int = D1_N, device: str | torch.device = "cpu"
) -> tuple[Discriminator, list[dict]]:
    """Train the 1-D discriminator; return it and its loss curve (rows ``{"step", "loss"}``)."""
    real, fake, g = disc1d_samples(n)
    disc = build_disc1d()
    opt = torch.optim.Adam(disc.parameters(), lr=D1_LR)
    trainer = Trainer(disc, opt, cross_entropy, D1_LOG_EVERY, progress=False, device=device)

    def batches(epoch: int):  # one epoch of `steps` batches
        for _ in range(steps):
            idx = torch.randint(0, n, (min(D1_BATCH, n),), generator=g)
            yield torch.stack([real[idx], fake[idx]])[..., None]

    history = trainer.fit(batches, 1)
    curve = zip(history.get("step", []), history.get("loss", []), strict=True)
    return disc, [{"step": int(step), "loss": loss} for step, loss in curve]


# --------------------------------------------------------------------------------------------
# the GANs
# --------------------------------------------------------------------------------------------


def build_gan(seed: int = SAVED_SEED) -> GAN:
    """A freshly initialised generator and discriminator with their build spec (weights depend
    only on ``seed``)."""
    torch.manual_seed(seed)
    return experiment.make(GAN, **GAN_KWARGS)


def eval_codes() -> torch.Tensor:
    """The fixed latent codes of the evaluation: float64 [EVAL_N, 2]."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    return torch.randn(EVAL_N, 2, generator=g, dtype=DT)


def gan_samples(gen: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``G(z)`` computed by a float64 copy of ``gen`` (no gradient)."""
    with torch.no_grad():
        return copy.deepcopy(gen).double()(z)


def coverage(gen: torch.nn.Module, z: torch.Tensor) -> dict:
    """Modes covered, fraction of high-quality samples and counts per mode of ``G(z)``."""
    cov = mode_coverage(gan_samples(gen, z), ring_centres(), RING_STD)
    return {"modes": cov.modes, "high_quality": cov.high_quality, "counts": cov.counts.tolist()}


def generator_gradients(gan: GAN, z: torch.Tensor) -> dict:
    """Norms of the minimax and non-saturating gradients at ``z`` and their cosine."""
    return gradient_norms(gan.generator, gan.discriminator, z)


def gradient_norms(gen: torch.nn.Module, disc: torch.nn.Module, z: torch.Tensor) -> dict:
    """Norms of the generator's minimax and non-saturating gradients at codes ``z`` against
    ``disc``, their cosine, and the mean ``D(G(z))``."""
    params = list(gen.parameters())
    logits = disc(gen(z.float()))
    flat = {}
    for kind in LOSSES:
        grads = torch.autograd.grad(generator_loss(logits, kind), params, retain_graph=True)
        flat[kind] = torch.cat([gr.reshape(-1) for gr in grads]).double()
    a, b = flat["minimax"], flat["nonsaturating"]
    return {
        "grad_norm_minimax": float(a.norm()),
        "grad_norm_nonsaturating": float(b.norm()),
        "grad_cosine": float(a @ b / (a.norm() * b.norm())),
        "d_fake_eval": float(torch.sigmoid(logits.detach()).double().mean()),
    }


def train_gan(
    kind: str,
    seed: int,
    x_data: torch.Tensor,
    steps: int = GAN_STEPS,
    every: int = EVAL_EVERY,
    device: str | torch.device = "cpu",
) -> tuple[GAN, list[dict], list[dict]]:
    """Train one GAN with generator loss ``kind``; return it, its evaluation rows (every
    ``every`` steps) and its rows of logged training means (every ``LOG_EVERY`` steps)."""
    if kind not in LOSSES:
        raise ValueError(f"train_gan: kind must be one of {LOSSES}, got {kind!r}")
    gan = build_gan(seed).to(device)
    gen, disc = gan.generator, gan.discriminator
    x_data = x_data.to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    rng = torch.Generator().manual_seed(1000 + seed)
    z_eval = eval_codes().to(device)
    curves: list[dict] = []
    log: list[dict] = []
    acc = dict.fromkeys(("loss_d", "loss_g", "d_real", "d_fake"), 0.0)
    for step in range(1, steps + 1):
        real = x_data[torch.randint(0, len(x_data), (GAN_BATCH,), generator=rng).to(device)]
        fake = gen(torch.randn(GAN_BATCH, 2, generator=rng).to(device))
        logit_real = disc(real)
        loss_d = discriminator_loss(logit_real, disc(fake.detach()))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        logit_fake = disc(fake)
        loss_g = generator_loss(logit_fake, kind)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        acc["loss_d"] += loss_d.item()
        acc["loss_g"] += loss_g.item()
        acc["d_real"] += float(torch.sigmoid(logit_real.detach()).mean())
        acc["d_fake"] += float(torch.sigmoid(logit_fake.detach()).mean())
        if step % LOG_EVERY == 0:  # 4 digits: enough for plotting
            log.append({"step": step, **{k: float(f"{v / LOG_EVERY:.4g}") for k, v in acc.items()}})
            acc = dict.fromkeys(acc, 0.0)
        if step % every == 0:
            curves.append(
                {"step": step, **coverage(gen, z_eval), **generator_gradients(gan, z_eval)}
            )
    return gan, curves, log


def ring_data() -> torch.Tensor:
    """The GANs' training set: float32 [RING_N, 2]."""
    return toy_2d("ring", RING_N, seed=RING_SEED)[0]


# --------------------------------------------------------------------------------------------
# mode collapse: plain against unrolled
# --------------------------------------------------------------------------------------------


def build_collapse(seed: int) -> tuple[Generator, Discriminator]:
    """The generator and the discriminator of the collapse experiment with their build specs
    (weights depend only on ``seed``; the generator is created first)."""
    torch.manual_seed(seed)
    return experiment.make(Generator, **C_GEN), experiment.make(Discriminator, **C_DISC)


def collapse_codes() -> torch.Tensor:
    """The fixed evaluation codes for the collapse generators: float64 [EVAL_N, z_dim]."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    return torch.randn(EVAL_N, C_GEN["z_dim"], generator=g, dtype=DT)


def nearest_counts(gen: torch.nn.Module, z: torch.Tensor) -> list[int]:
    """How many of the samples ``G(z)`` lie nearest to each ring centre, whatever their distance
    (where the generator's mass sits): [8] ints."""
    pts = gan_samples(gen, z)
    nearest = torch.cdist(pts, ring_centres().to(pts.dtype)).argmin(1)
    return torch.bincount(nearest, minlength=len(ring_centres())).tolist()


def batch_loss_se(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> float:
    """The standard error of the batch estimate ``discriminator_loss`` (nats): from the sample
    variances of its per-sample terms ``-log D(x)`` and ``-log(1 - D(G(z)))``."""
    terms_r = -torch.nn.functional.logsigmoid(logits_real.detach().double())
    terms_f = -torch.nn.functional.logsigmoid(-logits_fake.detach().double())
    return float((terms_r.var() / len(terms_r) + terms_f.var() / len(terms_f)).sqrt())


def train_collapse(
    method: str,
    seed: int,
    x_data: torch.Tensor,
    steps: int = C_STEPS,
    every: int = C_EVAL_EVERY,
    device: str | torch.device = "cpu",
) -> tuple[Generator, list[dict], list[dict]]:
    """Train one run of the collapse experiment (``method`` in ``C_METHODS``, the
    non-saturating loss); return its generator, its evaluation rows (every ``every`` steps) and
    its logged means (every ``LOG_EVERY`` steps)."""
    if method not in C_METHODS:
        raise ValueError(
            f"train_collapse: method must be one of {tuple(C_METHODS)}, got {method!r}"
        )
    cfg = C_METHODS[method]
    gen, disc = build_collapse(seed)
    gen, disc = gen.to(device), disc.to(device)
    x_data = x_data.to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg["lr_g"], betas=C_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg["lr_d"], betas=C_BETAS)
    rng = torch.Generator().manual_seed(2000 + seed)
    z_eval = collapse_codes().to(device)
    curves: list[dict] = []
    log: list[dict] = []
    acc = dict.fromkeys(("loss_d", "loss_g", "d_real", "d_fake", "loss_d_se"), 0.0)
    for step in range(1, steps + 1):
        real = x_data[torch.randint(0, len(x_data), (GAN_BATCH,), generator=rng).to(device)]
        fake = gen(torch.randn(GAN_BATCH, C_GEN["z_dim"], generator=rng).to(device))
        logit_real, logit_fake_d = disc(real), disc(fake.detach())
        loss_d = discriminator_loss(logit_real, logit_fake_d)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = unrolled_generator_loss(disc, real, fake, cfg["unroll"], C_UNROLL_LR)
        opt_g.zero_grad()
        loss_g.backward(inputs=list(gen.parameters()))
        opt_g.step()
        acc["loss_d"] += loss_d.item()
        acc["loss_g"] += loss_g.item()
        acc["d_real"] += float(torch.sigmoid(logit_real.detach()).mean())
        acc["d_fake"] += float(torch.sigmoid(logit_fake_d.detach()).mean())
        acc["loss_d_se"] += batch_loss_se(logit_real, logit_fake_d)
        if step % LOG_EVERY == 0:  # 4 digits: enough for plotting
            log.append({"step": step, **{k: float(f"{v / LOG_EVERY:.4g}") for k, v in acc.items()}})
            acc = dict.fromkeys(acc, 0.0)
        if step % every == 0:
            row = {"step": step, **coverage(gen, z_eval), "nearest": nearest_counts(gen, z_eval)}
            curves.append(row | gradient_norms(gen, disc, z_eval))
    return gen, curves, log


def collapse_settings(steps: int, seeds: tuple[int, ...]) -> dict:
    """The settings of ``--part collapse`` as stored in the results."""
    return {
        "generator": C_GEN,
        "discriminator": C_DISC,
        "betas": list(C_BETAS),
        "steps": steps,
        "batch_size": GAN_BATCH,
        "loss": "nonsaturating",
        "methods": C_METHODS,
        "saved": list(C_SAVED),
        "unroll_lr": C_UNROLL_LR,
        "seeds": list(seeds),
        "eval_every": C_EVAL_EVERY,
        "log_every": LOG_EVERY,
        "ring_n": RING_N,
        "ring_seed": RING_SEED,
        "ring_std": RING_STD,
        "eval_n": EVAL_N,
        "eval_seed": EVAL_SEED,
    }


def write(out: Path, models: dict, settings: dict, quick: bool) -> Path:
    """``l08_results.json`` (Section 4's entries first) and the manifest entries."""
    order = sorted(models, key=lambda k: (k.startswith("collapse_"), k))
    ordered = {k: models[k] for k in order}
    return experiment.write_results(out, "l08", LECTURE, COMMAND, settings, ordered, quick)


def run_collapse_part(
    out: Path, quick: bool, device: torch.device, models: dict, settings: dict
) -> None:
    """``--part collapse``: train every method and seed not yet in ``models`` with the same
    settings, writing the results after each run (so an interrupted run resumes)."""
    steps, seeds = (QUICK_C_STEPS, C_SEEDS[:2]) if quick else (C_STEPS, C_SEEDS)
    every = 20 if quick else C_EVAL_EVERY
    if settings.get("collapse") != collapse_settings(steps, seeds):
        for k in [k for k in models if k.startswith("collapse_")]:
            del models[k]
    settings["collapse"] = collapse_settings(steps, seeds)
    x_data = ring_data()
    z_eval = collapse_codes().to(device)
    for seed in seeds:
        for method in C_METHODS:
            name = f"collapse_{method}_s{seed}"
            if name in models:
                continue
            t0 = time.perf_counter()
            gen, curves, log = train_collapse(method, seed, x_data, steps, every, device=device)
            row: dict = {"method": method, "seed": seed}
            if method in C_SAVED:
                path = out / f"l08_{name}.safetensors"
                meta = {"command": COMMAND, "steps": steps, "method": method, "seed": seed}
                row["checkpoint"] = path.name
                row["sha256"] = experiment.save_model(path, gen, name=name, **meta)
                row["n_params"] = experiment.n_params(gen)
            row["train_seconds"] = round(time.perf_counter() - t0)
            row.update({"test": coverage(gen, z_eval), "curves": curves, "log": log})
            models[name] = row
            write(out, models, settings, quick)
            print(
                f"[collapse {method} seed {seed}] modes {row['test']['modes']}, high quality "
                f"{row['test']['high_quality']:.3f}, {row['train_seconds']} s",
                flush=True,
            )


def run_main_part(out: Path, quick: bool, device: torch.device) -> tuple[dict, dict]:
    """``--part main``: the 1-D discriminator and the GANs of Section 4; return the models'
    result entries and the settings."""
    d1_steps, gan_steps, seeds = (
        (QUICK_D1_STEPS, QUICK_GAN_STEPS, QUICK_SEEDS) if quick else (D1_STEPS, GAN_STEPS, SEEDS)
    )

    t0 = time.perf_counter()
    disc, curve = train_disc1d(d1_steps, device=device)
    path = out / "l08_disc1d.safetensors"
    digest = experiment.save_model(path, disc, name="disc1d", command=COMMAND, steps=d1_steps)
    seconds = round(time.perf_counter() - t0)
    models: dict = {
        "disc1d": experiment.model_entry(
            path, digest, disc, seconds, test=evaluate_disc1d(disc), curves=curve
        )
    }
    print(f"[disc1d] {models['disc1d']['test']}", flush=True)

    x_data = ring_data()
    z_eval = eval_codes().to(device)
    for seed in seeds:
        for kind in LOSSES:
            t0 = time.perf_counter()
            gan, curves, log = train_gan(kind, seed, x_data, gan_steps, device=device)
            row: dict = {"loss": kind, "seed": seed}
            if seed == SAVED_SEED:
                path = out / f"l08_gan_{kind}.safetensors"
                meta = {"command": COMMAND, "steps": gan_steps, "loss": kind, "seed": seed}
                row["checkpoint"] = path.name
                row["sha256"] = experiment.save_model(path, gan, name=f"gan_{kind}", **meta)
                row["n_params"] = experiment.n_params(gan)
            row["train_seconds"] = round(time.perf_counter() - t0)
            row.update({"test": coverage(gan.generator, z_eval), "curves": curves, "log": log})
            models[f"gan_{kind}_s{seed}"] = row
            print(
                f"[gan {kind} seed {seed}] modes {row['test']['modes']}, high quality "
                f"{row['test']['high_quality']:.3f}, {row['train_seconds']} s",
                flush=True,
            )

    settings = {
        "seed": SEED,
        "threads": THREADS,
        "device": str(device),
        "disc1d": {
            "kwargs": D1_KWARGS,
            "n_samples": D1_N,
            "steps": d1_steps,
            "batch_size": D1_BATCH,
            "learning_rate": D1_LR,
            "data_seed": D1_DATA_SEED,
            "log_every": D1_LOG_EVERY,
            "p_d": [list(c) for c in PD_MIX],
            "p_g_std": PG_STD,
            "grid": list(GRID),
        },
        "gan": {
            "kwargs": GAN_KWARGS,
            "steps": gan_steps,
            "batch_size": GAN_BATCH,
            "learning_rate": GAN_LR,
            "betas": list(GAN_BETAS),
            "losses": list(LOSSES),
            "seeds": list(seeds),
            "saved_seed": SAVED_SEED,
            "ring_n": RING_N,
            "ring_seed": RING_SEED,
            "ring_std": RING_STD,
            "eval_n": EVAL_N,
            "eval_seed": EVAL_SEED,
            "eval_every": EVAL_EVERY,
            "log_every": LOG_EVERY,
        },
    }
    return models, settings


def main(argv: list[str] | None = None) -> int:
    parser = experiment.script_parser(__doc__)
    parser.add_argument("--part", choices=("all", "main", "collapse"), default="all")
    args = experiment.script_args(parser, argv)
    device = args.device
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    old_path = args.out / "l08_results.json"
    old = read_json(old_path) if old_path.is_file() else {}
    models: dict = dict(old.get("models", {}))
    settings: dict = dict(old.get("settings", {}))
    if args.part in ("all", "main"):
        main_models, main_settings = run_main_part(args.out, args.quick, device)
        models = {k: v for k, v in models.items() if k.startswith("collapse_")} | main_models
        settings.update(main_settings)
        write(args.out, models, settings, args.quick)
    if args.part in ("all", "collapse"):
        t0 = time.perf_counter()
        run_collapse_part(args.out, args.quick, device, models, settings)
        write(args.out, models, settings, args.quick)
        print(f"[collapse] {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"wrote {old_path}; total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
