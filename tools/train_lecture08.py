"""Train the discriminator and the GANs of Lecture 08; write small checkpoints and their curves.

Usage: python tools/train_lecture08.py [--out data/checkpoints] [--quick]
Runtime: one to two minutes of CPU time on one thread (65 s measured on a quiet two-core machine,
6.5 minutes of wall time when it was shared with other jobs); ``--quick`` runs a few-second smoke
test of the pipeline (not the lecture's settings).

Two experiments, both on known densities (no data files):

* ``disc1d``: the 1-D discriminator of Check 2 (c). Data ``p_d = 0.3 N(-1.5, 0.6^2) +
  0.7 N(1.5, 0.8^2)``, generator ``p_g = N(0, 1.5^2)``, ``D1_N`` samples of each drawn once with
  seed ``D1_DATA_SEED``; ``dgmlib.gan.Discriminator(x_dim=1, hidden=32)`` trained by Adam
  (lr ``D1_LR``) for ``D1_STEPS`` steps on batches of ``D1_BATCH`` real and ``D1_BATCH`` generated
  points (indices drawn with the same generator) on the cross-entropy ``-V(G, D)``. Evaluated in
  double precision on the lecture's grid (4001 points on [-12, 12]): the average
  ``|D - D*|`` under ``(p_d + p_g)/2``, the largest ``|D - D*|`` where that density exceeds
  0.05, and ``V(G, D)`` by the rectangle rule.
* ``gan_<loss>_s<seed>``: the GANs of Section 4 on the ring of 8 Gaussians
  (``toy_2d("ring", RING_N, seed=RING_SEED)``), for both generator losses and the seeds in
  ``SEEDS``. Generator and discriminator: ``dgmlib.gan.Generator`` / ``Discriminator`` (two
  hidden layers of ``GAN_HIDDEN`` ReLU units, initialised after ``torch.manual_seed(seed)``);
  Adam (lr ``GAN_LR``, betas ``GAN_BETAS``) for each; every step draws ``GAN_BATCH`` real points
  and ``GAN_BATCH`` latent codes from a generator seeded ``1000 + seed``, makes one step on the
  discriminator's cross-entropy, then one on the generator's loss. The two losses of one seed
  share the initial weights and the batches. Logged: every ``LOG_EVERY`` steps the means over
  those steps of the two losses, of ``D(x_real)`` and of ``D(G(z))``; every ``EVAL_EVERY`` steps,
  on ``EVAL_N`` fixed latent codes (float64, seed ``EVAL_SEED``) pushed through a float64 copy of
  the generator, ``dgmlib.gan.mode_coverage`` (modes covered, fraction of high-quality samples,
  counts per mode) and, at the same codes and the current discriminator, the norms of the
  generator's minimax and non-saturating gradients and their cosine. The weights of seed 0 are
  saved.

Everything is deterministic: one CPU thread, fixed seeds, seeded generators for every sample and
batch. The script writes into ``--out`` ``l08_disc1d.safetensors``,
``l08_gan_nonsaturating.safetensors`` and ``l08_gan_minimax.safetensors`` (weights, loadable
with ``dgmlib.train.load_model`` into :func:`build_disc1d` / :func:`build_gan`) with ``.sha256``
sidecars, and ``l08_results.json`` (settings, command, hashes, curves, figures). On the same
platform a re-run reproduces the hashes bit for bit; on another CPU the training trajectories
differ (a GAN's training is chaotic), which is why the lecture loads these files.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.data import toy_2d  # noqa: E402
from dgmlib.gan import (  # noqa: E402
    Discriminator,
    Generator,
    discriminator_loss,
    generator_loss,
    mode_coverage,
    ring_centres,
)
from dgmlib.train import atomic_write_bytes, save_checkpoint  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "python tools/train_lecture08.py"
SEED = 0
THREADS = 1

# the 1-D discriminator of Check 2 (c)
D1_KWARGS = {"x_dim": 1, "hidden": 32}
D1_N = 20_000
D1_STEPS = 1500
D1_BATCH = 1000
D1_LR = 3e-3
D1_DATA_SEED = 2
D1_LOG_EVERY = 50
PD_MIX = ((0.3, -1.5, 0.6), (0.7, 1.5, 0.8))  # (weight, mean, std) of p_d
PG_STD = 1.5  # p_g = N(0, PG_STD^2)
GRID = (-12.0, 12.0, 4001)

# the GANs of Section 4
GAN_KWARGS = {"hidden": 64}
GAN_LR = 1e-3
GAN_BETAS = (0.5, 0.999)
GAN_BATCH = 256
GAN_STEPS = 2000
LOSSES = ("nonsaturating", "minimax")
SEEDS = (0, 1, 2, 3, 4)
SAVED_SEED = 0
RING_N = 20_000
RING_SEED = 4
RING_STD = 0.05
EVAL_N = 2000
EVAL_SEED = 5
EVAL_EVERY = 50
LOG_EVERY = 10


# --------------------------------------------------------------------------------------------
# the 1-D discriminator
# --------------------------------------------------------------------------------------------


def normal_log_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """log N(x | mean, std^2) elementwise."""
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def grid_densities() -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """The lecture's grid (float64), its step, and log p_d, log p_g on it."""
    xg = torch.linspace(*GRID, dtype=torch.float64)
    dx = float(xg[1] - xg[0])
    log_pd = torch.logsumexp(
        torch.stack([math.log(w) + normal_log_pdf(xg, m, s) for w, m, s in PD_MIX]), 0
    )
    return xg, dx, log_pd, normal_log_pdf(xg, 0.0, PG_STD)


def build_disc1d() -> Discriminator:
    """A freshly initialised 1-D discriminator (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    return Discriminator(**D1_KWARGS)


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


@torch.no_grad()
def evaluate_disc1d(disc: Discriminator) -> dict:
    """The figures of Check 2 (c), in double precision on the lecture's grid."""
    xg, dx, log_pd, log_pg = grid_densities()
    d64 = copy.deepcopy(disc).double()
    d_trained = torch.sigmoid(d64(xg[:, None]))
    d_star = torch.sigmoid(log_pd - log_pg)
    mix = 0.5 * (log_pd.exp() + log_pg.exp())
    err = (d_trained - d_star).abs()
    value = (log_pd.exp() * d_trained.log() + log_pg.exp() * (-d_trained).log1p()).sum() * dx
    return {
        "avg_abs_error": float((err * mix).sum() * dx),
        "max_abs_error": float(err[mix > 0.05].max()),
        "value": float(value),
    }


def train_disc1d(steps: int = D1_STEPS, n: int = D1_N) -> tuple[Discriminator, dict]:
    """Train the 1-D discriminator; return it and its loss curve."""
    real, fake, g = disc1d_samples(n)
    disc = build_disc1d()
    opt = torch.optim.Adam(disc.parameters(), lr=D1_LR)
    curve: dict[str, list] = {"step": [], "loss": []}
    acc = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(D1_BATCH, n),), generator=g)
        loss = discriminator_loss(disc(real[idx, None]), disc(fake[idx, None]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc += loss.item()
        if step % D1_LOG_EVERY == 0:
            curve["step"].append(step)
            curve["loss"].append(acc / D1_LOG_EVERY)
            acc = 0.0
    return disc, curve


# --------------------------------------------------------------------------------------------
# the GANs
# --------------------------------------------------------------------------------------------


def build_gan(seed: int = SAVED_SEED) -> nn.ModuleDict:
    """A freshly initialised generator and discriminator (weights depend only on ``seed``)."""
    torch.manual_seed(seed)
    gen = Generator(**GAN_KWARGS)
    disc = Discriminator(**GAN_KWARGS)
    return nn.ModuleDict({"generator": gen, "discriminator": disc})


def eval_codes() -> torch.Tensor:
    """The fixed latent codes of the evaluation: float64 [EVAL_N, 2]."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    return torch.randn(EVAL_N, 2, generator=g, dtype=torch.float64)


def gan_samples(gen: Generator, z: torch.Tensor) -> torch.Tensor:
    """``G(z)`` computed by a float64 copy of ``gen`` (no gradient)."""
    with torch.no_grad():
        return copy.deepcopy(gen).double()(z)


def generator_gradients(gan: nn.ModuleDict, z: torch.Tensor) -> dict:
    """Norms of the minimax and non-saturating gradients at ``z`` and their cosine."""
    gen, disc = gan["generator"], gan["discriminator"]
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
    kind: str, seed: int, x_data: torch.Tensor, steps: int = GAN_STEPS, every: int = EVAL_EVERY
) -> tuple[nn.ModuleDict, dict]:
    """Train one GAN with generator loss ``kind``; return it and its curves."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    gan = build_gan(seed)
    gen, disc = gan["generator"], gan["discriminator"]
    opt_g = torch.optim.Adam(gen.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    rng = torch.Generator().manual_seed(1000 + seed)
    centres = ring_centres()
    z_eval = eval_codes()
    log = {k: [] for k in ("step", "loss_d", "loss_g", "d_real", "d_fake")}
    ev = {
        k: []
        for k in (
            "step",
            "modes",
            "high_quality",
            "counts",
            "grad_norm_minimax",
            "grad_norm_nonsaturating",
            "grad_cosine",
            "d_fake_eval",
        )
    }
    acc = dict.fromkeys(("loss_d", "loss_g", "d_real", "d_fake"), 0.0)
    for step in range(1, steps + 1):
        real = x_data[torch.randint(0, len(x_data), (GAN_BATCH,), generator=rng)]
        fake = gen(torch.randn(GAN_BATCH, 2, generator=rng))
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
        if step % LOG_EVERY == 0:
            log["step"].append(step)
            for k in acc:
                log[k].append(float(f"{acc[k] / LOG_EVERY:.4g}"))  # for plotting
            acc = dict.fromkeys(acc, 0.0)
        if step % every == 0:
            cov = mode_coverage(gan_samples(gen, z_eval), centres, RING_STD)
            ev["step"].append(step)
            ev["modes"].append(cov.modes)
            ev["high_quality"].append(cov.high_quality)
            ev["counts"].append(cov.counts.tolist())
            for k, v in generator_gradients(gan, z_eval).items():
                ev[k].append(v)
    return gan, {"log": log, "eval": ev}


def ring_data() -> torch.Tensor:
    """The GANs' training set: float32 [RING_N, 2]."""
    return toy_2d("ring", RING_N, seed=RING_SEED)[0]


def save_model(model: nn.Module, name: str, meta: dict, path: Path) -> str:
    """Write the weights of ``model`` with its metadata and sidecar; return the SHA-256."""
    meta = {"model": name, "command": COMMAND, **meta}
    return save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def dumps(doc: dict) -> str:
    """``doc`` as indented JSON with every list of numbers on one line."""
    text = json.dumps(doc, indent=1)
    return re.sub(
        r"\[\s*([-+0-9.eE,\s]*?)\s*\]",
        lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]",
        text,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    d1_steps, gan_steps, seeds = (
        (100, 100, SEEDS[:2]) if args.quick else (D1_STEPS, GAN_STEPS, SEEDS)
    )

    t0 = time.perf_counter()
    disc, curve = train_disc1d(d1_steps)
    path = out / "l08_disc1d.safetensors"
    digest = save_model(disc, "disc1d", {"kwargs": D1_KWARGS, "steps": d1_steps}, path)
    disc1d = {
        "checkpoint": path.name,
        "sha256": digest,
        "n_params": sum(p.numel() for p in disc.parameters()),
        **evaluate_disc1d(disc),
        "curve": curve,
        "train_seconds": round(time.perf_counter() - t0),
    }
    print(f"[disc1d] { {k: v for k, v in disc1d.items() if k != 'curve'} }", flush=True)

    x_data = ring_data()
    gans: dict = {}
    for seed in seeds:
        for kind in LOSSES:
            t0 = time.perf_counter()
            gan, curves = train_gan(kind, seed, x_data, gan_steps)
            row: dict = {"loss": kind, "seed": seed, **curves}
            if seed == SAVED_SEED:
                path = out / f"l08_gan_{kind}.safetensors"
                meta = {"kwargs": GAN_KWARGS, "steps": gan_steps, "loss": kind, "seed": seed}
                row["checkpoint"] = path.name
                row["sha256"] = save_model(gan, f"gan_{kind}", meta, path)
                row["n_params"] = sum(p.numel() for p in gan.parameters())
            row["train_seconds"] = round(time.perf_counter() - t0)
            gans[f"{kind}_s{seed}"] = row
            e = curves["eval"]
            print(
                f"[gan {kind} seed {seed}] modes {e['modes'][-1]}, high quality "
                f"{e['high_quality'][-1]:.3f}, {row['train_seconds']} s",
                flush=True,
            )

    doc = {
        "lecture": "08_gans",
        "command": COMMAND,
        "quick": bool(args.quick),
        "settings": {
            "seed": SEED,
            "threads": THREADS,
            "disc1d": {
                "kwargs": D1_KWARGS,
                "n_samples": D1_N,
                "steps": d1_steps,
                "batch_size": D1_BATCH,
                "learning_rate": D1_LR,
                "data_seed": D1_DATA_SEED,
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
        },
        "disc1d": disc1d,
        "gans": gans,
    }
    atomic_write_bytes(out / "l08_results.json", (dumps(doc) + "\n").encode())
    print("wrote", out / "l08_results.json", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
