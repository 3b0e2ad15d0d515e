"""Train the four small models of Lecture 09 (adversarial variational Bayes).

Usage: python tools/train_lecture09.py [--out data/checkpoints] [--device cpu] [--quick]
(``make checkpoints`` runs it with the defaults; ``--quick`` is a few-second smoke test of the
pipeline, not the lecture's settings.)

* ``ratio``: the density-ratio trick. A classifier ``dgmlib.density_ratio.RatioEstimator`` (two
  hidden layers of 32 ELU units) between ``p = N(1, 1)`` (label 1) and ``q = N(0, 2^2)``
  (label 0) on the logistic loss (``dgmlib.gan.discriminator_loss``), ``RATIO_BATCH`` fresh
  samples of each per step. Its logit estimates ``log p/q``; the lecture checks its mean under
  ``p`` against ``KL(p || q)``.
* ``gauss_avb``: AVB on the linear-Gaussian model ``z ~ N(0, 1)``, ``x | z ~ N(z, 1/4)``, with
  the decoder fixed at the truth (a ``GaussianDecoder`` with one linear layer set to ``x = z``,
  variance fixed at 1/4; not trained) and data ``x ~ N(0, 5/4)`` drawn afresh. Implicit encoder
  ``z = g(x, eps)`` (``dgmlib.avb.ImplicitEncoder``: 4-D noise, two hidden layers of 64 ELU
  units) and discriminator ``T(x, z)`` (``JointDiscriminator``: an MLP of the same size plus a
  quadratic form). The lecture compares ``T`` with the closed-form ``T*`` and AVB's ELBO with
  ``E log p(x)``.
* ``toy_avb`` and ``toy_vae``: the toy example of Mescheder et al. (2017): the four one-hot
  vectors of length 4 (2 x 2 images with one pixel on), uniform; a 2-D latent with prior
  ``N(0, I)``; the same decoder family for both (``BernoulliDecoder``, three hidden layers of 64
  ELU units, four Bernoulli logits). ``toy_avb``: an implicit encoder (16-D noise, three hidden
  layers of 64 ELU units, plus Gaussian noise of standard deviation ``TOY_OUTPUT_STD`` on its
  output so that its density can be evaluated afterwards) and ``T`` (three hidden layers of 128
  ELU units plus a quadratic form). ``toy_vae``: a Gaussian encoder (``MLPGaussianEncoder``,
  three hidden layers of 64 ELU units) on the ELBO (``dgmlib.objectives.ELBO``).

The AVB models are trained by ``dgmlib.avb.AVBObjective(dual_steps=k)`` with
``dgmlib.train.Trainer`` and one Adam optimizer with a parameter group per player: ``k`` steps of
the discriminator on its logistic loss, then one step of the encoder (and decoder) on the primal
loss with the discriminator held fixed, as in the paper (which takes two discriminator steps
per primal step). Simultaneous steps of both players (``k = 0``) ended several standard errors
away from the closed forms of ``gauss_avb`` in trials, the alternating schedule within two.
Every model runs ``EPOCHS[name]`` epochs of ``STEPS[name]`` steps; the learning rate of epoch
``e`` is the base rate times ``(1 + cos(pi (e + 1/2) / epochs)) / 2`` (a cosine decay, constant
within an epoch). The paper trained its toy example for 100k steps with a larger
discriminator; these schedules are sized to the budget below.

Everything is deterministic: one CPU thread, fixed seeds, every draw of an epoch (data, encoder
noise, prior samples) derived from (SEED, model, epoch), so a run resumed after an epoch is
identical to an uninterrupted one. Training states are saved after every epoch under
``<out>/l09_resume/`` (removed at the end); an interrupted run picks up where it stopped. Outputs
in ``--out``: ``l09_ratio``, ``l09_gauss_avb``, ``l09_toy_avb``, ``l09_toy_vae``
``.safetensors`` (weights with the build spec, ``dgmlib.pretrained.load(name)``, and ``.sha256``
sidecars), ``l09_results.json`` (the schema of ``dgmlib.experiment``: per model the figures the
lecture recomputes, under ``test``, and the training curves) and the manifest entries.

Runtime (measured at ``nice -n 10`` on the busy two-core machine): about 5 minutes of CPU time
in all (ratio 10 s, gauss_avb 95 s, toy_avb 160 s, toy_vae 40 s, evaluation about 10 s), 5 to 7
minutes of wall time; under heavier load (ten other jobs on the two cores) the wall time grew to
about 25 minutes. ``train_seconds`` in the results is CPU time, ``train_wall_seconds`` wall time.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.avb import (  # noqa: E402
    AVB,
    AVBObjective,
    ImplicitEncoder,
    JointDiscriminator,
    latent_grid,
    log_marginal_on_grid,
)
from dgmlib.density_ratio import RatioEstimator  # noqa: E402
from dgmlib.gan import discriminator_loss, kl  # noqa: E402
from dgmlib.models.vae import VAE, BernoulliDecoder, GaussianDecoder, MLPGaussianEncoder  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.stats import mean_se  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import get_device, seed_everything  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture09.py"
LECTURE = "09_adversarial_vb"
SEED = 0  # torch's seed before every model is built; every epoch's draws derive from it
THREADS = 1  # one CPU thread: the float32 sums are the same on every run
MODELS = ("ratio", "gauss_avb", "toy_avb", "toy_vae")  # trained in this order

# the density-ratio classifier: p = N(P_MEAN, P_STD^2) against q = N(Q_MEAN, Q_STD^2)
P_MEAN, P_STD, Q_MEAN, Q_STD = 1.0, 1.0, 0.0, 2.0
RATIO_NET = {"x_dim": 1, "hidden": 32, "n_hidden_layers": 2}  # RatioEstimator (ELU)
RATIO_BATCH = 1024  # fresh samples of each distribution per step
RATIO_EVAL_N, RATIO_EVAL_SEED = 20_000, 91  # fresh samples of p for the stored estimate

# AVB on the linear-Gaussian model z ~ N(0, 1), x | z ~ N(z, GAUSS_NOISE_STD^2)
GAUSS_NOISE_STD = 0.5
GAUSS_ENCODER = {"x_dim": 1, "z_dim": 1, "noise_dim": 4, "hidden": 64, "n_hidden_layers": 2}
GAUSS_DISC = {"x_dim": 1, "z_dim": 1, "hidden": 64, "n_hidden_layers": 2, "quadratic": True}
GAUSS_BATCH = 512
GAUSS_EVAL_N, GAUSS_EVAL_SEED = 20_000, 92  # joint samples (x, z ~ q(z|x)) for the stored figures

# the toy example: four one-hot images, a 2-D latent
TOY_DECODER = {"z_dim": 2, "hidden": 64, "x_shape": 4, "n_hidden_layers": 3}  # + ELU
TOY_OUTPUT_STD = 0.1  # Gaussian noise on the implicit encoder's output
TOY_ENCODER = {"x_dim": 4, "z_dim": 2, "noise_dim": 16, "hidden": 64, "n_hidden_layers": 3}
TOY_DISC = {"x_dim": 4, "z_dim": 2, "hidden": 128, "n_hidden_layers": 3, "quadratic": True}
TOY_VAE_ENCODER = {"x_dim": 4, "hidden": 64, "z_dim": 2, "n_hidden_layers": 3}  # + ELU
TOY_BATCH = 512
GRID_LIMIT, GRID_N = 4.0, 128  # the latent grid [-4, 4]^2 of 128 x 128 cells (midpoint rule)
MIX_COMPONENTS, MIX_SEED = 4096, 93  # draws of the encoder's noise in its density's mixture
TOY_ELBO_K, TOY_ELBO_SEED = 20_000, 94  # samples per image of AVB's own ELBO estimate


# training: epochs, steps per epoch, Adam's base learning rates (one per player: encoder and
# decoder, then the discriminator) and, for AVB, discriminator steps per encoder step (0:
# simultaneous steps)
EPOCHS = {"ratio": 8, "gauss_avb": 40, "toy_avb": 30, "toy_vae": 20}
STEPS = {"ratio": 500, "gauss_avb": 500, "toy_avb": 600, "toy_vae": 500}  # multiples of k + 1
LEARNING_RATES = {
    "ratio": (1e-2,),
    "gauss_avb": (3e-4, 1e-3),
    "toy_avb": (3e-4, 1e-3),
    "toy_vae": (1e-3,),
}
DUAL_STEPS = {"gauss_avb": 4, "toy_avb": 2}

QUICK = {"epochs": 2, "steps": 30, "mixture_components": 64}  # --quick: a smoke test
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Print a progress line at once."""
    print(msg, flush=True)


def cosine(epoch: int, epochs: int) -> float:
    """The learning-rate factor of ``epoch`` (from 0): a cosine decay from 1 towards 0."""
    return 0.5 * (1 + math.cos(math.pi * (epoch + 0.5) / epochs))


def epoch_seed(model: str, epoch: int) -> int:
    """The seed of every draw in ``epoch`` of ``model``."""
    return 10_000 * (SEED + 1) + 1000 * MODELS.index(model) + epoch


# --------------------------------------------------------------------------------------------
# builders (the weights depend only on SEED)
# --------------------------------------------------------------------------------------------


def build(name: str) -> nn.Module:
    """A freshly initialised model ``name`` (one of MODELS) with its build spec."""
    torch.manual_seed(SEED)
    if name == "ratio":
        return experiment.make(RatioEstimator, **RATIO_NET, activation=nn.ELU)
    if name == "gauss_avb":
        enc = experiment.make(ImplicitEncoder, **GAUSS_ENCODER, activation=nn.ELU)
        dec = experiment.make(
            GaussianDecoder,
            z_dim=1,
            hidden=1,
            x_shape=1,
            n_hidden_layers=0,
            variance="fixed",
            sigma=GAUSS_NOISE_STD,
        )
        with torch.no_grad():  # the true decoder: mean x = z
            dec.net[0].weight.fill_(1.0)
            dec.net[0].bias.zero_()
        disc = experiment.make(JointDiscriminator, **GAUSS_DISC, activation=nn.ELU)
        return experiment.make(AVB, encoder=enc, decoder=dec, discriminator=disc)
    if name in ("toy_avb", "toy_vae"):
        dec = experiment.make(BernoulliDecoder, **TOY_DECODER, activation=nn.ELU)
        if name == "toy_vae":
            enc = experiment.make(MLPGaussianEncoder, **TOY_VAE_ENCODER, activation=nn.ELU)
            return experiment.make(VAE, encoder=enc, decoder=dec)
        enc = experiment.make(
            ImplicitEncoder, **TOY_ENCODER, activation=nn.ELU, output_std=TOY_OUTPUT_STD
        )
        disc = experiment.make(JointDiscriminator, **TOY_DISC, activation=nn.ELU)
        return experiment.make(AVB, encoder=enc, decoder=dec, discriminator=disc)
    raise ValueError(f"build: name must be one of {MODELS}, got {name!r}")


def ratio_objective(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logistic loss of a batch ``x [2, B, 1]`` (samples of p in ``x[0]``, of q in
    ``x[1]``), and the mean logit on p's samples (the KL estimate)."""
    logits_p, logits_q = model(x[0]), model(x[1])
    return {"loss": discriminator_loss(logits_p, logits_q), "kl": logits_p.detach().mean()}


def data_batches(name: str, epoch: int, steps: int) -> list[torch.Tensor]:
    """The batches of one epoch, drawn from a generator seeded by (SEED, name, epoch)."""
    g = torch.Generator().manual_seed(epoch_seed(name, epoch))
    if name == "ratio":
        return [
            torch.stack(
                [
                    P_MEAN + P_STD * torch.randn(RATIO_BATCH, 1, generator=g),
                    Q_MEAN + Q_STD * torch.randn(RATIO_BATCH, 1, generator=g),
                ]
            )
            for _ in range(steps)
        ]
    if name == "gauss_avb":
        std_x = math.sqrt(1 + GAUSS_NOISE_STD**2)  # x ~ N(0, 1 + sigma^2)
        return [std_x * torch.randn(GAUSS_BATCH, 1, generator=g) for _ in range(steps)]
    eye = torch.eye(4)
    return [eye[torch.randint(0, 4, (TOY_BATCH,), generator=g)] for _ in range(steps)]


def optimizer(name: str, model: nn.Module) -> tuple[torch.optim.Optimizer, list[float]]:
    """Adam with one parameter group per player, and the groups' base learning rates."""
    rates = LEARNING_RATES[name]
    if name in ("ratio", "toy_vae"):
        groups = [list(model.parameters())]
    else:
        primal = list(model.encoder.parameters())
        if name == "toy_avb":
            primal += list(model.decoder.parameters())
        else:
            model.decoder.requires_grad_(False)  # the true decoder stays fixed
        groups = [primal, list(model.discriminator.parameters())]
    opt = torch.optim.Adam([{"params": p, "lr": lr} for p, lr in zip(groups, rates, strict=True)])
    return opt, list(rates)


def objective(name: str) -> Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]:
    """The training objective of model ``name``."""
    if name == "ratio":
        return ratio_objective
    if name == "toy_vae":
        return ELBO()
    return AVBObjective(dual_steps=DUAL_STEPS[name])


def train(
    name: str, resume_dir: Path, quick: bool, device: str, stop_after: int | None = None
) -> tuple[nn.Module, list, dict]:
    """Train model ``name``, resuming from its state in ``resume_dir`` if there is one, for all
    its epochs (``stop_after``: return after that many); return the model on the CPU in eval
    mode, the per-epoch curves and the training time (``cpu_seconds``, ``wall_seconds``)."""
    seed_everything(SEED, threads=THREADS)
    model = build(name)
    epochs = QUICK["epochs"] if quick else EPOCHS[name]
    steps = QUICK["steps"] if quick else STEPS[name]
    if steps % (DUAL_STEPS.get(name, 0) + 1):
        raise ValueError(
            f"train: {name} needs a multiple of {DUAL_STEPS[name] + 1} steps per epoch (its "
            "cycle of discriminator and encoder steps must restart with every epoch)"
        )
    opt, base_rates = optimizer(name, model)
    trainer = Trainer(model, opt, objective(name), log_every=steps, progress=False, device=device)

    def batches(epoch: int) -> list[torch.Tensor]:
        for group, base in zip(opt.param_groups, base_rates, strict=True):
            group["lr"] = base * cosine(epoch, epochs)
        torch.manual_seed(epoch_seed(name, epoch) + 500)  # encoder noise and prior samples
        return data_batches(name, epoch, steps)

    state = resume_dir / f"{name}.train.safetensors"
    clock = {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    if state.is_file():
        meta = trainer.load(state)
        clock = {k: float(meta[k]) for k in clock}
        log(f"  {name}: resuming after epoch {trainer.epoch}")
    start = {"cpu_seconds": time.process_time(), "wall_seconds": time.perf_counter()}

    def elapsed() -> dict:
        now = {"cpu_seconds": time.process_time(), "wall_seconds": time.perf_counter()}
        return {k: clock[k] + now[k] - start[k] for k in clock}

    def on_epoch_end(tr: Trainer) -> None:
        row = {k: v[-1] for k, v in tr.history.items() if k not in ("step", "epoch")}
        log(
            f"  {name} epoch {tr.epoch}/{epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in row.items())
        )
        tr.save(state, extra=elapsed())

    trainer.fit(
        batches,
        epochs if stop_after is None else min(epochs, stop_after),
        on_epoch_end=on_epoch_end,
    )
    curves = [
        {k: trainer.history[k][i] for k in trainer.history}
        for i in range(len(trainer.history.get("step", [])))
    ]
    return model.cpu().eval(), curves, elapsed()


# --------------------------------------------------------------------------------------------
# the figures stored with each model (the lecture recomputes them)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_ratio(model: nn.Module) -> dict:
    """KL and ``E_p[D/(1-D)]`` estimates from the logits: Monte Carlo on fresh samples of p
    (with standard errors) and Gauss-Hermite quadrature under p (80 nodes, no sampling)."""
    g = torch.Generator().manual_seed(RATIO_EVAL_SEED)
    x = P_MEAN + P_STD * torch.randn(RATIO_EVAL_N, 1, generator=g)
    logits = model(x).double()
    kl_mc, kl_se = mean_se(logits)
    ratio_mc, ratio_se = mean_se(logits.exp())
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # weight exp(-t^2 / 2)
    xq = torch.as_tensor(P_MEAN + P_STD * nodes, dtype=torch.float32)[:, None]
    w = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
    tq = model(xq).double()
    return {
        "n_eval": RATIO_EVAL_N,
        "eval_seed": RATIO_EVAL_SEED,
        "kl_mean_logit": kl_mc,
        "kl_mean_logit_se": kl_se,
        "ratio_mean": ratio_mc,
        "ratio_mean_se": ratio_se,
        "kl_quadrature": float((w * tq).sum()),
        "ratio_mean_quadrature": float((w * tq.exp()).sum()),
    }


@torch.no_grad()
def evaluate_gauss(model: nn.Module) -> dict:
    """On ``GAUSS_EVAL_N`` joint samples ``x ~ p(x)``, ``z ~ q(z|x)``: the mean of ``T`` (the KL
    estimate), AVB's ELBO estimate ``log p(x|z) - T`` and ``E log p(x|z)``, with standard errors;
    the root mean square of ``T - T*`` on the same samples."""
    g = torch.Generator().manual_seed(GAUSS_EVAL_SEED)
    x = math.sqrt(1 + GAUSS_NOISE_STD**2) * torch.randn(GAUSS_EVAL_N, 1, generator=g)
    z = model.encoder.sample(x, generator=g)
    t = model.discriminator(x, z).double()
    log_px_z = model.decoder.log_prob(x, z).double()
    v = 1 / (1 + 1 / GAUSS_NOISE_STD**2)  # posterior variance
    post = torch.distributions.Normal(v / GAUSS_NOISE_STD**2 * x[:, 0].double(), math.sqrt(v))
    t_star = post.log_prob(z[:, 0].double()) - torch.distributions.Normal(0.0, 1.0).log_prob(
        z[:, 0].double()
    )
    kl_est, kl_se = mean_se(t)
    elbo, elbo_se = mean_se(log_px_z - t)
    return {
        "n_eval": GAUSS_EVAL_N,
        "eval_seed": GAUSS_EVAL_SEED,
        "kl": kl_est,
        "kl_se": kl_se,
        "elbo": elbo,
        "elbo_se": elbo_se,
        "log_px_z": mean_se(log_px_z)[0],
        "rms_t_minus_t_star": float(((t - t_star) ** 2).mean().sqrt()),
    }


@torch.no_grad()
def toy_log_px(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``log p(x)`` of the four images ``[4]`` and ``log p(z|x)`` ``[4, G]`` by the midpoint rule
    on the lecture's grid (a float64 copy of the decoder), the grid ``[G, 2]`` and its cell
    area."""
    grid, area = latent_grid(GRID_LIMIT, GRID_N)
    decoder = copy.deepcopy(model.decoder).double()
    log_px, log_post = log_marginal_on_grid(decoder, torch.eye(4, dtype=torch.float64), grid, area)
    return log_px, log_post, grid, area


@torch.no_grad()
def toy_log_q(
    name: str, model: nn.Module, grid: torch.Tensor, n_components: int = MIX_COMPONENTS
) -> torch.Tensor:
    """``log q(z|x)`` of the four images on the grid, ``[4, G]`` (float64): the VAE's Gaussian,
    or for AVB its density's ``n_components``-component mixture (seed ``MIX_SEED``)."""
    eye = torch.eye(4, dtype=torch.float64)
    if name == "toy_vae":
        mu, logvar = copy.deepcopy(model.encoder).double()(eye)
        q = torch.distributions.Normal(mu[:, None], (0.5 * logvar).exp()[:, None])
        return q.log_prob(grid[None]).sum(-1)
    encoder = copy.deepcopy(model.encoder).double()
    g = torch.Generator().manual_seed(MIX_SEED)
    return torch.stack(
        [encoder.mixture_log_density(eye[i], grid, n_components, g) for i in range(4)]
    )


@torch.no_grad()
def evaluate_toy(name: str, model: nn.Module, n_components: int = MIX_COMPONENTS) -> dict:
    """Per image: ``log p(x)``, the ELBO gap ``KL(q(z|x) || p(z|x))`` by quadrature (the VAE's
    exactly; for AVB, its density's mixture, an upper bound in expectation) and ``elbo =
    log p(x) - gap``; for AVB also its own ELBO estimate from ``T``."""
    log_px, log_post, grid, area = toy_log_px(model)
    log_q = toy_log_q(name, model, grid, n_components)
    gap = kl(log_q, log_post, area)
    out = {
        "log_px": log_px.tolist(),
        "gap": gap.tolist(),
        "elbo": (log_px - gap).tolist(),
        "log_px_mean": float(log_px.mean()),
        "gap_mean": float(gap.mean()),
        "q_mass_on_grid": (log_q.exp() * area).sum(1).tolist(),
    }
    if name == "toy_avb":
        g = torch.Generator().manual_seed(TOY_ELBO_SEED)
        out["mixture_components"] = n_components
        out["avb_elbo_estimate"] = model.elbo_estimate(torch.eye(4), TOY_ELBO_K, g).tolist()
    return out


def evaluate(name: str, model: nn.Module, quick: bool) -> dict:
    """The figures stored with model ``name``."""
    if name == "ratio":
        return evaluate_ratio(model)
    if name == "gauss_avb":
        return evaluate_gauss(model)
    return evaluate_toy(name, model, QUICK["mixture_components"] if quick else MIX_COMPONENTS)


def settings() -> dict:
    """The settings recorded in the results file."""
    return {
        **experiment.config_values(globals(), "SEED THREADS EPOCHS"),
        "steps_per_epoch": STEPS,
        "learning_rates": LEARNING_RATES,
        "dual_steps": DUAL_STEPS,
        "lr_schedule": "base * (1 + cos(pi (epoch + 1/2) / epochs)) / 2, constant in an epoch",
        "ratio": {
            "p": [P_MEAN, P_STD],
            "q": [Q_MEAN, Q_STD],
            "net": RATIO_NET,
            "batch": RATIO_BATCH,
        },
        "gauss_avb": {
            "noise_std": GAUSS_NOISE_STD,
            "encoder": GAUSS_ENCODER,
            "discriminator": GAUSS_DISC,
            "batch": GAUSS_BATCH,
        },
        "toy": {
            "decoder": TOY_DECODER,
            "avb_encoder": {**TOY_ENCODER, "output_std": TOY_OUTPUT_STD},
            "avb_discriminator": TOY_DISC,
            "vae_encoder": TOY_VAE_ENCODER,
            "batch": TOY_BATCH,
            "grid": [GRID_LIMIT, GRID_N],
            "mixture_components": MIX_COMPONENTS,
            "mixture_seed": MIX_SEED,
            "avb_elbo_samples": TOY_ELBO_K,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--device", default=None, help="default: $DGMLIB_DEVICE or cpu")
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(get_device(args.device))
    resume_dir = out / "l09_resume"
    resume_dir.mkdir(exist_ok=True)
    models = {}
    for name in MODELS:
        model, curves, clock = train(name, resume_dir, args.quick, device)
        path = out / f"l09_{name}.safetensors"
        digest = experiment.save_model(path, model, command=COMMAND, name=name, quick=args.quick)
        test = evaluate(name, model, args.quick)
        log(
            f"[{name}] trained in {clock['cpu_seconds']:.0f} s of CPU time; "
            + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
        )
        models[name] = experiment.model_entry(
            path,
            digest,
            model,
            round(clock["cpu_seconds"]),
            train_wall_seconds=round(clock["wall_seconds"]),
            test=test,
            curves=curves,
        )
    command = COMMAND + (" --quick" if args.quick else "")
    experiment.write_results(
        out, "l09", LECTURE, command, settings(), models, args.quick, resume_dir
    )
    log(f"wrote {out / 'l09_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
