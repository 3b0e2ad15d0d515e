"""Train the diffusion models of Lecture 12 (a 2-D toy model and a small DDPM on Fashion-MNIST).

Usage: python tools/train_lecture12.py [--out data/checkpoints] [--part toy|fmnist|all]
[--device cpu] [--quick] (``make checkpoints`` runs it with the defaults.)

Both models use Ho et al. (2020)'s forward process: ``T = 1000`` steps, ``beta_t`` linear from
``1e-4`` to ``0.02`` (``dgmlib.diffusion.linear_betas``), a noise-prediction network
``eps_theta(z_t, t)``, reverse steps ``N(mu_theta(z_t, t), beta~_t I)`` and a Gaussian decoder
``p(x | z_1) = N(x_hat(z_1), sigma_1^2 I)``; the weights evaluated are an exponential moving
average (EMA, decay ``EMA_DECAY``) of the trained ones (``dgmlib.models.denoiser.DDPM``, trained
on its own ``loss`` by ``EMATrainer``). Training draws one step ``t ~ U{1..T}`` and one noise
vector per example (``dgmlib.diffusion.ddpm_loss``).

* ``toy``: ``dgmlib.data.toy_2d("ring")`` (8 Gaussians of standard deviation 0.05 on the circle
  of radius 2), fresh points every epoch; ``MLPDenoiser`` (3 hidden layers of 128 SiLU units);
  three models with the same initial weights and data, trained on ``L_simple`` (``"simple"``,
  unweighted noise prediction), on the ELBO's own weighting of the same error with a uniform
  step (``"elbo"``), and on the same ELBO with the step drawn in proportion to its weight
  (``"elbo_is"``). Evaluation on ``TOY_EVAL_N`` fresh points, nats per point: the ELBO with every
  step's KL evaluated (``elbo_estimate(every_step=True)``, decoder variance ``beta_1``) and its
  standard error, its parts ``log_px_z1`` = ``E log p(x | z_1)``, ``kl_diffusion`` (the sum of
  the ``T - 1`` KL terms, each also in ``kl_per_step``) and ``kl_prior`` (``elbo = log_px_z1 -
  kl_diffusion - kl_prior``).
* ``fmnist``: the 60k Fashion-MNIST training images, uniformly dequantized afresh in every epoch
  and scaled to ``[-1, 1)`` (``z_0 = (x + u) / 128 - 1``); ``UNetDenoiser(c1=32, c2=64)``;
  ``L_simple``; Adam with a linear warm-up and a cosine decay of the learning rate
  (``torch.optim.lr_scheduler``), gradient clipping at norm 1. The decoder variance
  ``sigma_1^2`` is then fitted (the mean squared error of ``x_hat(z_1)`` per dimension on
  ``N_DECODER_FIT`` training images). Evaluation on the 10k test images, each dequantized
  ``FM_EVAL_DRAWS`` times with a random step each (``elbo_estimate``): ``neg_elbo_bpd``, the
  bound on the negative log-likelihood of the 8-bit images in bits per dimension, with its
  standard error; its parts in bits per dimension of ``z_0`` (``kl_prior_bpd``,
  ``kl_diffusion_bpd``, ``neg_log_px_z1_bpd`` = ``-E log p(z_0 | z_1)``; they add up to
  ``neg_elbo_bpd - log2(128)``); ``elbo_z0``, the ELBO of ``z_0`` in nats per image; the KL of
  each step on a grid of steps over ``FM_CURVE_N`` test images; ``FM_N_SAMPLES`` samples, stored
  in the model's checkpoint as the tensor ``samples`` ``[N, 1, 28, 28]`` in ``[-1, 1]``.

Everything is deterministic: one CPU thread, fixed seeds, every random draw of an epoch derived
from (SEED, epoch). The Fashion-MNIST run is resumable: its training state is saved after every
epoch under ``<out>/l12_resume/`` (removed at the end). Outputs in ``--out``:
``l12_ring_simple``, ``l12_ring_elbo``, ``l12_ring_elbo_is``, ``l12_fmnist`` ``.safetensors``
(the trained weights and their EMA with the build spec, ``dgmlib.pretrained.load(name)``, with
``.sha256`` sidecars), ``l12_results.json`` (the schema of ``dgmlib.experiment``; per model
``train_seconds`` is CPU time, for the toy models with their evaluation) and the manifest
entries.

Runtime on one thread (measured): the toy part about 5 minutes of CPU time (three models of about
100 s each, evaluation included); the Fashion-MNIST part about 35 minutes of CPU time (10 epochs
of 160 to 200 s, then the evaluation), which took 78 minutes of wall time at ``nice -n 10`` on a
busy two-core machine. Run the parts separately with ``--part``; the JSON keeps the other's.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.data import load_fashion_mnist, toy_2d  # noqa: E402
from dgmlib.dequantization import uniform_dequantize  # noqa: E402
from dgmlib.diffusion import alpha_bars, ddpm_sample, elbo_estimate, eps_kl_weights  # noqa: E402
from dgmlib.io import read_json, save_checkpoint  # noqa: E402
from dgmlib.models.denoiser import DDPM, EMATrainer, MLPDenoiser, UNetDenoiser  # noqa: E402
from dgmlib.units import log_density_to_integer_units, nats_to_bits_per_dim  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture12.py"
LECTURE = "12_diffusion"
SEED = 0  # torch's seed before every model is built; every epoch's draws derive from it
THREADS = 1  # one CPU thread: the float32 sums are the same on every run
T = 1000  # diffusion steps
BETA_1, BETA_T = 1e-4, 0.02  # the linear noise schedule's ends
EMA_DECAY = 0.999  # decay of the weights' moving average (the weights evaluated)
LOG_EVERY = 100  # Fashion-MNIST: steps per logged mean of the loss

# the 2-D toy models
TOY_SET = "ring"  # dgmlib.data.toy_2d data set
TOY_NET = {"data_dim": 2, "hidden": 128, "n_hidden": 3, "emb_dim": 64}  # MLPDenoiser
TOY_VARIANTS = ("simple", "elbo", "elbo_is")  # the three weightings of ddpm_loss
TOY_POINTS_PER_EPOCH = 10_000  # fresh points every epoch (toy_2d seed 1000 + epoch)
TOY_EPOCHS = 400
TOY_BATCH = 250
TOY_LR = 1e-3  # Adam, constant
TOY_EVAL_N = 4000  # evaluation points
TOY_EVAL_SEED = 123_456  # toy_2d seed of the evaluation points

# the Fashion-MNIST DDPM
FM_NET = {"c1": 32, "c2": 64, "emb_dim": 128}  # UNetDenoiser
FM_EPOCHS = 10
FM_BATCH = 64
FM_LR = 5e-4  # Adam's peak learning rate
FM_WARMUP = 200  # steps of linear warm-up to FM_LR, then a cosine decay ...
FM_LR_FINAL = 0.1  # ... to FM_LR_FINAL * FM_LR at the last step
FM_GRAD_CLIP = 1.0  # gradient norm clipping
FM_LEVELS = 256  # 8-bit images
N_DECODER_FIT = 10_000  # training images that fit the decoder variance sigma_1^2
FM_EVAL_DRAWS = 4  # dequantizations (and random steps) per test image
FM_EVAL_SEED = 7
FM_CURVE_N = 200  # test images of the per-step KL curve
FM_CURVE_STEPS = sorted({*range(1, 11), *range(20, 101, 10), *range(150, 1001, 50)})
FM_N_SAMPLES = 64
FM_SAMPLE_SEED = 11
FM_N_CURVE_IMAGES = 500  # test images of the per-epoch curve (one random step each)
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Print a progress line at once."""
    print(msg, flush=True)


def build(part: str, weighting: str = "simple") -> DDPM:
    """A freshly initialised model with a build spec (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    if part == "toy":
        net = experiment.make(MLPDenoiser, **TOY_NET)
    elif part == "fmnist":
        net, weighting = experiment.make(UNetDenoiser, **FM_NET), "simple"
    else:
        raise ValueError(f"build: part must be 'toy' or 'fmnist', got {part!r}")
    schedule = {"T": T, "beta_1": BETA_1, "beta_T": BETA_T}
    return experiment.make(DDPM, net=net, weighting=weighting, ema_decay=EMA_DECAY, **schedule)


def to_unit(x_int: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dequantize 8-bit images and scale to [-1, 1): float32 ``[N, 1, 28, 28]``."""
    y = uniform_dequantize(x_int, FM_LEVELS, generator, dtype=torch.float32)
    return (y / (FM_LEVELS / 2) - 1.0).reshape(-1, 1, 28, 28)


def bits_per_dim(elbo_nats: torch.Tensor, d: int) -> torch.Tensor:
    """Per-image bound in bits/dim from the ELBO of ``z_0`` in [-1, 1) units (``d`` dims).

    ``z_0 = 2 y - 1`` with ``y`` in [0, 1): ``log p(y) = log p(z_0) + d log 2``; then to integer
    units with ``log_density_to_integer_units`` (``- d log 256``).
    """
    log_p_int = log_density_to_integer_units(elbo_nats + d * math.log(2.0), d, FM_LEVELS)
    return nats_to_bits_per_dim(-log_p_int, d)


# --------------------------------------------------------------------------------------------
# the 2-D toy model
# --------------------------------------------------------------------------------------------


def train_toy(
    weighting: str, epochs: int, n_points: int, device: str | None = None
) -> tuple[DDPM, list[dict]]:
    model = build("toy", weighting)
    opt = torch.optim.Adam(model.net.parameters(), lr=TOY_LR)
    steps_per_epoch = math.ceil(n_points / TOY_BATCH)
    trainer = EMATrainer(model, opt, log_every=steps_per_epoch, progress=False, device=device)

    def batches(epoch: int):
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # steps t and noise of ddpm_loss
        x, _ = toy_2d(TOY_SET, n_points, seed=1000 + epoch)
        return [x[i : i + TOY_BATCH] for i in range(0, n_points, TOY_BATCH)]

    curves: list[dict] = []

    def on_epoch_end(tr: EMATrainer) -> None:
        if tr.epoch % 10 == 0 or tr.epoch == epochs:
            row = {"epoch": tr.epoch, "loss": tr.history["loss"][-1]}
            curves.append(row)
            log(f"  toy/{weighting} epoch {tr.epoch}/{epochs}: loss {row['loss']:.5f}")

    trainer.fit(batches, epochs, on_epoch_end=on_epoch_end)
    return model.cpu(), curves


def evaluate_toy(model: DDPM, n: int) -> dict:
    """The every-step ELBO of ``n`` fresh points and its parts (see the module docstring)."""
    x, _ = toy_2d(TOY_SET, n, seed=TOY_EVAL_SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    model.eval()
    parts = [
        elbo_estimate(model.ema, x[i : i + 1000], model.betas, generator=g, every_step=True)
        for i in range(0, n, 1000)
    ]
    r = {k: torch.cat([p[k] for p in parts], dim=-1).double() for k in parts[0]}
    return {
        "n_eval": n,
        "eval_seed": TOY_EVAL_SEED,
        "elbo": float(r["elbo"].mean()),
        "elbo_se": float(r["elbo"].std() / math.sqrt(n)),
        "log_px_z1": float(r["reconstruction"].mean()),
        "kl_diffusion": float(r["diffusion"].mean()),
        "kl_prior": float(r["prior"].mean()),
        "kl_per_step": [round(float(v), 7) for v in r["per_step"].mean(1)],
    }


def run_toy(out: Path, quick: bool, device: str) -> dict:
    seed_everything(SEED, threads=THREADS)
    epochs, n_points, n_eval = (
        (2, 2000, 500) if quick else (TOY_EPOCHS, TOY_POINTS_PER_EPOCH, TOY_EVAL_N)
    )
    models = {}
    for weighting in TOY_VARIANTS:
        t0 = time.process_time()
        model, curves = train_toy(weighting, epochs, n_points, device)
        path = out / f"l12_ring_{weighting}.safetensors"
        meta = {"command": COMMAND, "part": "toy", "weighting": weighting, "epochs": epochs}
        digest = experiment.save_model(path, model, **meta)
        test = evaluate_toy(model, n_eval)
        models[f"ring_{weighting}"] = experiment.model_entry(
            path,
            digest,
            model.net,  # the trained weights (the EMA copy holds as many)
            round(time.process_time() - t0),
            weighting=weighting,
            test=test,
            curves=curves,
        )
        log(f"[toy/{weighting}] ELBO {test['elbo']:.4f} +- {test['elbo_se']:.4f} nats")
    return models


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


class ScheduledTrainer(EMATrainer):
    """EMA trainer that steps a learning-rate scheduler after every optimiser step."""

    def __init__(
        self,
        model: DDPM,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        **kwargs,
    ) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.scheduler = scheduler

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        out = super().train_step(x)
        self.scheduler.step()
        return out


def fm_scheduler(
    opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from ``FM_LR / FM_WARMUP`` to ``FM_LR`` over the first ``FM_WARMUP``
    steps, then a cosine decay to ``FM_LR_FINAL * FM_LR`` at step ``total_steps``."""
    lr = torch.optim.lr_scheduler
    warm = lr.LinearLR(opt, 1.0 / FM_WARMUP, 1.0, total_iters=FM_WARMUP - 1)
    decay = lr.CosineAnnealingLR(
        opt, T_max=max(1, total_steps - FM_WARMUP), eta_min=FM_LR_FINAL * FM_LR
    )
    return lr.SequentialLR(opt, [warm, decay], milestones=[FM_WARMUP])


@torch.no_grad()
def fm_bound(model: DDPM, x_int: torch.Tensor, draws: int, seed: int, decoder_var: float) -> dict:
    """Random-step ELBO estimates of every image, ``draws`` dequantizations each: bits/dim."""
    g = torch.Generator().manual_seed(seed)
    d = x_int[0].numel()
    keys = ("elbo", "reconstruction", "diffusion", "prior")
    acc = {k: [] for k in keys}
    for start in range(0, len(x_int), 500):
        xb = x_int[start : start + 500]
        per = {k: torch.zeros(len(xb), dtype=torch.float64) for k in keys}
        for _ in range(draws):
            z0 = to_unit(xb, g)
            r = elbo_estimate(model.ema, z0, model.betas, decoder_var=decoder_var, generator=g)
            for k in keys:
                per[k] += r[k].double() / draws
        for k in keys:
            acc[k].append(per[k])
    elbo = torch.cat(acc["elbo"])
    bpd = bits_per_dim(elbo, d)
    to_bits = 1.0 / (d * math.log(2.0))
    return {
        "neg_elbo_bpd": float(bpd.mean()),
        "neg_elbo_bpd_se": float(bpd.std() / math.sqrt(len(bpd))),
        "elbo_z0": float(elbo.mean()),
        "kl_prior_bpd": float(torch.cat(acc["prior"]).mean() * to_bits),
        "kl_diffusion_bpd": float(torch.cat(acc["diffusion"]).mean() * to_bits),
        "neg_log_px_z1_bpd": float(-torch.cat(acc["reconstruction"]).mean() * to_bits),
        "n_images": len(x_int),
        "draws": draws,
        "seed": seed,
    }


@torch.no_grad()
def fm_decoder_var(model: DDPM, x_int: torch.Tensor, seed: int) -> float:
    """sigma_1^2 by maximum likelihood: the mean squared error of x_hat(z_1) per dimension."""
    g = torch.Generator().manual_seed(seed)
    ab = alpha_bars(model.betas)
    sq, n = 0.0, 0
    for start in range(0, len(x_int), 500):
        z0 = to_unit(x_int[start : start + 500], g)
        t1 = torch.ones(len(z0), dtype=torch.long)
        eps = torch.randn(z0.shape, generator=g)
        z1 = float(ab[1].sqrt()) * z0 + float((1 - ab[1]).sqrt()) * eps
        x_hat = (z1 - float((1 - ab[1]).sqrt()) * model.ema(z1, t1)) / float(ab[1].sqrt())
        sq += float((z0 - x_hat).double().square().sum())
        n += z0.numel()
    return sq / n


@torch.no_grad()
def fm_step_curve(model: DDPM, x_int: torch.Tensor, seed: int) -> list[dict]:
    """Mean KL of step t (nats per image) over ``x_int``, for t in ``FM_CURVE_STEPS`` (t >= 2)."""
    g = torch.Generator().manual_seed(seed)
    ab = alpha_bars(model.betas)
    w = eps_kl_weights(model.betas)
    z0 = to_unit(x_int, g)
    rows = []
    for step in FM_CURVE_STEPS:
        if step < 2:
            continue
        t = torch.full((len(z0),), step, dtype=torch.long)
        eps = torch.randn(z0.shape, generator=g)
        zt = float(ab[step].sqrt()) * z0 + float((1 - ab[step]).sqrt()) * eps
        sq = (eps - model.ema(zt, t)).double().square().flatten(1).sum(1)
        kl = float(w[step - 1]) * sq
        rows.append(
            {"t": step, "kl": float(kl.mean()), "kl_se": float(kl.std() / math.sqrt(len(kl)))}
        )
    return rows


def train_fmnist(
    train_images: torch.Tensor,
    x_curve: torch.Tensor,
    epochs: int,
    resume_file: Path,
    stop_after: int | None = None,
    device: str | None = None,
) -> tuple[DDPM, ScheduledTrainer, list[dict]]:
    """Train the Fashion-MNIST model for ``epochs`` epochs, resuming from ``resume_file``.

    The state (with the scheduler's and the curve) is saved there after every epoch.
    ``stop_after``: return after that many epochs (an interruption, for the tests); calling again
    with the same file continues identically.
    """
    n_train = len(train_images)
    model = build("fmnist")
    opt = torch.optim.Adam(model.net.parameters(), lr=FM_LR)
    sched = fm_scheduler(opt, epochs * math.ceil(n_train / FM_BATCH))
    trainer = ScheduledTrainer(
        model,
        opt,
        sched,
        log_every=LOG_EVERY,
        progress=False,
        grad_clip=FM_GRAD_CLIP,
        device=device,
    )
    curves: list[dict] = []

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # steps t and noise of ddpm_loss
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)  # order, then dequantization
        order = torch.randperm(n_train, generator=g)

        def gen():
            for start in range(0, n_train, FM_BATCH):
                yield to_unit(train_images[order[start : start + FM_BATCH]], g)

        return gen()

    t_epoch = [time.process_time()]

    def on_epoch_end(tr: ScheduledTrainer) -> None:
        model.cpu().eval()  # evaluations run on the CPU, with CPU generators
        r = fm_bound(model, x_curve, 1, SEED + 3, BETA_1)
        model.to(tr.device)
        steps = max(1, math.ceil(n_train / FM_BATCH) // LOG_EVERY)
        mse = tr.history.get("mse", [])[-steps:]
        row = {
            "epoch": tr.epoch,
            "train_mse": sum(mse) / len(mse) if mse else None,
            "neg_elbo_bpd": r["neg_elbo_bpd"],
            "neg_elbo_bpd_se": r["neg_elbo_bpd_se"],
            "cpu_seconds": round(time.process_time() - t_epoch[0]),
        }
        t_epoch[0] = time.process_time()
        curves.append(row)
        log(f"  fmnist epoch {tr.epoch}/{epochs}: {row}")
        tr.save(resume_file, extra={"curves": curves, "scheduler": sched.state_dict()})

    if resume_file.is_file():
        meta = trainer.load(resume_file)
        sched.load_state_dict(meta["scheduler"])
        curves.extend(meta.get("curves", []))
        log(f"  fmnist: resuming after epoch {trainer.epoch}")
    trainer.fit(
        batches,
        epochs if stop_after is None else min(epochs, stop_after),
        on_epoch_end=on_epoch_end,
    )
    model.cpu().eval()
    return model, trainer, curves


def run_fmnist(out: Path, quick: bool, device: str) -> dict:
    seed_everything(SEED, threads=THREADS)
    resume_dir = out / "l12_resume"
    resume_dir.mkdir(parents=True, exist_ok=True)
    train_images, _ = load_fashion_mnist("train")
    test_images, _ = load_fashion_mnist("test")
    if quick:
        train_images, test_images = train_images[:256], test_images[:100]
    epochs = 1 if quick else FM_EPOCHS
    x_curve = test_images[: min(FM_N_CURVE_IMAGES, len(test_images))]
    model, trainer, curves = train_fmnist(
        train_images, x_curve, epochs, resume_dir / "fmnist.train.safetensors", device=device
    )

    log("  fmnist: fitting the decoder variance")
    decoder_var = fm_decoder_var(model, train_images[:N_DECODER_FIT], SEED + 4)
    log(f"  fmnist: sigma_1^2 = {decoder_var:.4g}; test bound on {len(test_images)} images")
    r = fm_bound(model, test_images, FM_EVAL_DRAWS, FM_EVAL_SEED, decoder_var)
    r_beta1 = fm_bound(model, test_images[:1000], 1, FM_EVAL_SEED + 1, BETA_1)
    log(f"  fmnist: test bound {r['neg_elbo_bpd']:.4f} +- {r['neg_elbo_bpd_se']:.4f} bits/dim")
    curve = fm_step_curve(model, test_images[:FM_CURVE_N], SEED + 5)
    g = torch.Generator().manual_seed(FM_SAMPLE_SEED)
    n_samples = 8 if quick else FM_N_SAMPLES
    samples, _ = ddpm_sample(model.ema, (n_samples, 1, 28, 28), model.betas, generator=g)
    # the weights and the samples they make, in one checkpoint (metadata as save_model writes it)
    path = out / "l12_fmnist.safetensors"
    meta = {"command": COMMAND, "part": "fmnist", "epochs": epochs, "steps": trainer.step}
    digest = save_checkpoint(
        path,
        {**experiment.model_tensors(model), "samples": samples.clamp(-1, 1)},
        {"spec": experiment.spec_of(model), **meta, "sample_seed": FM_SAMPLE_SEED},
    )
    shutil.rmtree(resume_dir, ignore_errors=True)
    return {
        "fmnist": experiment.model_entry(
            path,
            digest,
            model.net,
            sum(c["cpu_seconds"] for c in curves),
            steps=trainer.step,
            decoder_var=decoder_var,
            test=r,
            test_first_1000_decoder_beta1=r_beta1,
            step_kl_curve=curve,
            curves=curves,
            samples="samples",
            sample_seed=FM_SAMPLE_SEED,
        )
    }


def settings() -> dict:
    """The settings recorded in the results file."""
    return {
        "seed": SEED,
        "threads": THREADS,
        "T": T,
        "betas": f"linear from {BETA_1} to {BETA_T}",
        "ema_decay": EMA_DECAY,
        "toy": {
            "data": f"dgmlib.data.toy_2d({TOY_SET!r}), fresh points each epoch (seed 1000 + epoch)",
            "net": TOY_NET,
            "variants": list(TOY_VARIANTS),
            "points_per_epoch": TOY_POINTS_PER_EPOCH,
            "epochs": TOY_EPOCHS,
            "batch_size": TOY_BATCH,
            "learning_rate": TOY_LR,
            "eval_points": TOY_EVAL_N,
            "eval_seed": TOY_EVAL_SEED,
        },
        "fmnist": {
            "data": "Fashion-MNIST, uniformly dequantized afresh each epoch, z0 = (x + u)/128 - 1",
            "net": FM_NET,
            "epochs": FM_EPOCHS,
            "batch_size": FM_BATCH,
            "learning_rate": FM_LR,
            "warmup_steps": FM_WARMUP,
            "final_lr_fraction": FM_LR_FINAL,
            "grad_clip": FM_GRAD_CLIP,
            "decoder_fit_images": N_DECODER_FIT,
            "eval_draws": FM_EVAL_DRAWS,
            "eval_seed": FM_EVAL_SEED,
            "curve_images": FM_CURVE_N,
            "curve_steps": FM_CURVE_STEPS,
        },
    }


def write(out: Path, models: dict, quick: bool) -> Path:
    """Write ``l12_results.json`` with ``models``, keeping the other part's models (re-read the
    file: the two parts may run as separate commands)."""
    path = out / "l12_results.json"
    if path.is_file():
        doc = read_json(path)
        if doc.get("schema") == experiment.RESULTS_SCHEMA and doc.get("quick") == quick:
            models = {**doc["models"], **models}
    return experiment.write_results(out, "l12", LECTURE, COMMAND, settings(), models, quick)


def main(argv: list[str] | None = None) -> int:
    parser = experiment.script_parser(__doc__)
    parser.add_argument("--part", choices=("toy", "fmnist", "all"), default="all")
    args = experiment.script_args(parser, argv)
    out = args.out
    t0 = time.perf_counter()
    if args.part in ("toy", "all"):
        path = write(out, run_toy(out, args.quick, args.device), args.quick)
    if args.part in ("fmnist", "all"):
        path = write(out, run_fmnist(out, args.quick, args.device), args.quick)
    log(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
