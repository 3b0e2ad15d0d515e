"""Train the diffusion models of Lecture 12 (a 2-D toy model and a small DDPM on Fashion-MNIST).

Usage: python tools/train_lecture12.py [--out data/checkpoints] [--part toy|fmnist|all] [--quick]
(``make checkpoints`` runs it with the defaults.)

Both models use Ho et al. (2020)'s forward process: ``T = 1000`` steps, ``beta_t`` linear from
``1e-4`` to ``0.02`` (``dgmlib.diffusion.linear_betas``), a noise-prediction network
``eps_theta(z_t, t)``, reverse steps ``N(mu_theta(z_t, t), beta~_t I)`` and a Gaussian decoder
``p(x | z_1) = N(x_hat(z_1), sigma_1^2 I)``; the weights evaluated are an exponential moving
average (EMA, decay ``EMA_DECAY``) of the trained ones. Training draws one step ``t ~ U{1..T}``
and one noise vector per example (``dgmlib.diffusion.ddpm_loss``).

* ``toy``: ``dgmlib.data.toy_2d("ring")`` (8 Gaussians of standard deviation 0.05 on the circle
  of radius 2), fresh points every epoch; ``dgmlib.models.denoiser.MLPDenoiser`` (3 hidden
  layers of 128 SiLU units); three models with the same initial weights and data, trained on
  ``L_simple`` (``"simple"``, unweighted noise prediction), on the ELBO's own weighting of the
  same error with a uniform step (``"elbo"``), and on the same ELBO with the step drawn in
  proportion to its weight (``"elbo_is"``). Evaluation on ``TOY_EVAL_N`` fresh points: the ELBO
  with every step's KL evaluated (``elbo_full``, decoder variance ``beta_1``), its standard
  error, and the per-step KL curve.
* ``fmnist``: the 60k Fashion-MNIST training images, uniformly dequantized afresh in every epoch
  and scaled to ``[-1, 1)`` (``z_0 = (x + u) / 128 - 1``); ``UNetDenoiser(c1=32, c2=64)``;
  ``L_simple``; Adam with a linear warm-up and a cosine decay of the learning rate, gradient
  clipping at norm 1. The decoder variance ``sigma_1^2`` is then fitted (the mean squared error
  of ``x_hat(z_1)`` per dimension on ``N_DECODER_FIT`` training images). Evaluation on the 10k
  test images, each dequantized ``FM_EVAL_DRAWS`` times with a random step each
  (``elbo_estimate``): the NLL bound in bits per dimension with its standard error and its three
  parts (prior KL, diffusion KLs, reconstruction); the KL of each step on a grid of steps over
  ``FM_CURVE_N`` test images; ``FM_N_SAMPLES`` samples.

Everything is deterministic: one CPU thread, fixed seeds, every random draw of an epoch derived
from (SEED, epoch). The Fashion-MNIST run is resumable: its training state is saved after every
epoch under ``<out>/l12_resume/`` (removed at the end). Outputs in ``--out``:
``l12_ring_simple``, ``l12_ring_elbo``, ``l12_ring_elbo_is``, ``l12_fmnist`` ``.safetensors``
(the trained weights and their EMA, loadable with ``dgmlib.train.load_model`` into ``DDPM``,
with ``.sha256`` sidecars), ``l12_fmnist_samples.safetensors`` and ``l12_results.json``
(settings, curves, figures).

Runtime on one thread (measured): the toy part about 5 minutes of CPU time (three models of about
100 s each, evaluation included); the Fashion-MNIST part about 35 minutes of CPU time (10 epochs
of 160 to 200 s, then the evaluation), which took 78 minutes of wall time at ``nice -n 10`` on a
busy two-core machine. Run the parts separately with ``--part``; the JSON keeps the other's.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.data import load_fashion_mnist, toy_2d  # noqa: E402
from dgmlib.dequantization import (  # noqa: E402
    log_density_to_integer_units,
    nats_to_bits_per_dim,
    uniform_dequantize,
)
from dgmlib.diffusion import (  # noqa: E402
    alpha_bars,
    ddpm_sample,
    elbo_estimate,
    elbo_full,
    eps_kl_weights,
    linear_betas,
)
from dgmlib.models.denoiser import DDPM, EMATrainer, MLPDenoiser, UNetDenoiser  # noqa: E402
from dgmlib.train import atomic_write_bytes, load_checkpoint, save_checkpoint  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "python tools/train_lecture12.py"
SEED = 0
THREADS = 1
T = 1000
BETA_1, BETA_T = 1e-4, 0.02
EMA_DECAY = 0.999

TOY_SET = "ring"
TOY_NET = {"data_dim": 2, "hidden": 128, "n_hidden": 3, "emb_dim": 64}
TOY_VARIANTS = ("simple", "elbo", "elbo_is")
TOY_POINTS_PER_EPOCH = 10_000
TOY_EPOCHS = 400
TOY_BATCH = 250
TOY_LR = 1e-3
TOY_EVAL_N = 4000
TOY_EVAL_SEED = 123_456  # toy_2d seed of the evaluation points (training uses 1000 + epoch)

FM_NET = {"c1": 32, "c2": 64, "emb_dim": 128}
FM_EPOCHS = 10
FM_BATCH = 64
FM_LR = 5e-4
FM_WARMUP = 200  # steps of linear warm-up, then a cosine decay to FM_LR_FINAL * FM_LR
FM_LR_FINAL = 0.1
FM_GRAD_CLIP = 1.0
FM_LEVELS = 256
N_DECODER_FIT = 10_000
FM_EVAL_DRAWS = 4
FM_EVAL_SEED = 7
FM_CURVE_N = 200
FM_CURVE_STEPS = sorted({*range(1, 11), *range(20, 101, 10), *range(150, 1001, 50)})
FM_N_SAMPLES = 64
FM_SAMPLE_SEED = 11
FM_N_CURVE_IMAGES = 500  # test images of the per-epoch curve (one random step each)
LOG_EVERY = 100


def log(msg: str) -> None:
    print(msg, flush=True)


def betas() -> torch.Tensor:
    return linear_betas(T, BETA_1, BETA_T)


def build(part: str, weighting: str = "simple") -> DDPM:
    """A freshly initialised model (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    if part == "toy":
        return DDPM(MLPDenoiser(**TOY_NET), betas(), weighting=weighting, ema_decay=EMA_DECAY)
    if part == "fmnist":
        return DDPM(UNetDenoiser(**FM_NET), betas(), weighting="simple", ema_decay=EMA_DECAY)
    raise ValueError(f"unknown part {part!r}")


def save_weights(model: DDPM, path: Path, meta: dict) -> str:
    """The EMA weights only (what the lecture evaluates), as ``model.*`` tensors of a DDPM."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    return save_checkpoint(path, tensors, {**meta, "command": COMMAND})


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


def train_toy(weighting: str, epochs: int, n_points: int) -> tuple[DDPM, list[dict]]:
    model = build("toy", weighting)
    opt = torch.optim.Adam(model.net.parameters(), lr=TOY_LR)
    steps_per_epoch = math.ceil(n_points / TOY_BATCH)
    trainer = EMATrainer(model, opt, log_every=steps_per_epoch, progress=False)

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
    return model, curves


def evaluate_toy(model: DDPM, n: int) -> dict:
    x, _ = toy_2d(TOY_SET, n, seed=TOY_EVAL_SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    model.eval()
    parts = [
        elbo_full(model.ema, x[i : i + 1000], model.betas, generator=g) for i in range(0, n, 1000)
    ]
    r = {k: torch.cat([p[k] for p in parts], dim=-1) for k in parts[0]}
    elbo = r["elbo"].double()
    return {
        "n_eval": n,
        "eval_seed": TOY_EVAL_SEED,
        "elbo": float(elbo.mean()),
        "elbo_se": float(elbo.std() / math.sqrt(n)),
        "reconstruction": float(r["reconstruction"].double().mean()),
        "diffusion": float(r["diffusion"].double().mean()),
        "prior": float(r["prior"].double().mean()),
        "per_step_kl": [round(float(v), 7) for v in r["per_step"].double().mean(1)],
    }


def run_toy(out: Path, quick: bool) -> dict:
    seed_everything(SEED, threads=THREADS)
    epochs, n_points, n_eval = (
        (2, 2000, 500) if quick else (TOY_EPOCHS, TOY_POINTS_PER_EPOCH, TOY_EVAL_N)
    )
    results = {}
    for weighting in TOY_VARIANTS:
        t0 = time.process_time()
        model, curves = train_toy(weighting, epochs, n_points)
        path = out / f"l12_ring_{weighting}.safetensors"
        meta = {"part": "toy", "weighting": weighting, "epochs": epochs, "net": TOY_NET}
        digest = save_weights(model, path, meta)
        r = evaluate_toy(model, n_eval)
        r.update({"checkpoint": path.name, "sha256": digest, "curves": curves})
        r["cpu_seconds"] = round(time.process_time() - t0)
        results[weighting] = r
        log(
            f"[toy/{weighting}] ELBO {r['elbo']:.4f} +- {r['elbo_se']:.4f} nats "
            f"({r['cpu_seconds']} s CPU)"
        )
    return results


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


class ScheduledTrainer(EMATrainer):
    """EMA trainer with a warm-up and cosine decay of the learning rate, set from the step."""

    total_steps = 1

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = fm_lr(self.step, self.total_steps)
        return super().train_step(x)


def fm_lr(step: int, total: int) -> float:
    if step < FM_WARMUP:
        return FM_LR * (step + 1) / FM_WARMUP
    frac = min(1.0, (step - FM_WARMUP) / max(1, total - FM_WARMUP))
    return FM_LR * (FM_LR_FINAL + (1 - FM_LR_FINAL) * 0.5 * (1 + math.cos(math.pi * frac)))


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
        "bpd": float(bpd.mean()),
        "bpd_se": float(bpd.std() / math.sqrt(len(bpd))),
        "elbo_nats": float(elbo.mean()),
        "prior_bpd": float(torch.cat(acc["prior"]).mean() * to_bits),
        "diffusion_bpd": float(torch.cat(acc["diffusion"]).mean() * to_bits),
        "reconstruction_bpd": float(-torch.cat(acc["reconstruction"]).mean() * to_bits),
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
) -> tuple[DDPM, ScheduledTrainer, list[dict]]:
    """Train the Fashion-MNIST model for ``epochs`` epochs, resuming from ``resume_file``.

    The state is saved there after every epoch. ``stop_after``: return after that many epochs
    (an interruption, for the tests); calling again with the same file continues identically.
    """
    n_train = len(train_images)
    model = build("fmnist")
    opt = torch.optim.Adam(model.net.parameters(), lr=FM_LR)
    trainer = ScheduledTrainer(
        model, opt, log_every=LOG_EVERY, progress=False, grad_clip=FM_GRAD_CLIP
    )
    trainer.total_steps = epochs * math.ceil(n_train / FM_BATCH)
    curves: list[dict] = []

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # steps t and noise of ddpm_loss
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n_train, generator=g)

        def gen():
            for start in range(0, n_train, FM_BATCH):
                yield to_unit(train_images[order[start : start + FM_BATCH]], g)

        return gen()

    t_epoch = [time.process_time()]

    def on_epoch_end(tr: ScheduledTrainer) -> None:
        model.eval()
        r = fm_bound(model, x_curve, 1, SEED + 3, BETA_1)
        steps = max(1, math.ceil(n_train / FM_BATCH) // LOG_EVERY)
        mse = tr.history.get("mse", [])[-steps:]
        row = {
            "epoch": tr.epoch,
            "train_mse": sum(mse) / len(mse) if mse else None,
            "test_bpd_curve": r["bpd"],
            "test_bpd_curve_se": r["bpd_se"],
            "cpu_seconds": round(time.process_time() - t_epoch[0]),
        }
        t_epoch[0] = time.process_time()
        curves.append(row)
        log(f"  fmnist epoch {tr.epoch}/{epochs}: {row}")
        tr.save(resume_file, extra={"curves": curves})

    if resume_file.is_file():
        _, meta = load_checkpoint(resume_file)
        curves.extend(meta.get("curves", []))
        trainer.load(resume_file)
        log(f"  fmnist: resuming after epoch {trainer.epoch}")
    trainer.fit(
        batches,
        epochs if stop_after is None else min(epochs, stop_after),
        on_epoch_end=on_epoch_end,
    )
    model.eval()
    return model, trainer, curves


def run_fmnist(out: Path, quick: bool) -> dict:
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
        train_images, x_curve, epochs, resume_dir / "fmnist.train.safetensors"
    )

    path = out / "l12_fmnist.safetensors"
    meta = {"part": "fmnist", "epochs": epochs, "net": FM_NET, "steps": trainer.step}
    digest = save_weights(model, path, meta)
    log(f"  fmnist: wrote {path.name}; fitting the decoder variance")
    decoder_var = fm_decoder_var(model, train_images[:N_DECODER_FIT], SEED + 4)
    log(f"  fmnist: sigma_1^2 = {decoder_var:.4g}; test bound on {len(test_images)} images")
    r = fm_bound(model, test_images, FM_EVAL_DRAWS, FM_EVAL_SEED, decoder_var)
    r_beta1 = fm_bound(model, test_images[:1000], 1, FM_EVAL_SEED + 1, BETA_1)
    log(f"  fmnist: test bound {r['bpd']:.4f} +- {r['bpd_se']:.4f} bits/dim")
    curve = fm_step_curve(model, test_images[:FM_CURVE_N], SEED + 5)
    g = torch.Generator().manual_seed(FM_SAMPLE_SEED)
    n_samples = 8 if quick else FM_N_SAMPLES
    samples, _ = ddpm_sample(model.ema, (n_samples, 1, 28, 28), model.betas, generator=g)
    save_checkpoint(
        out / "l12_fmnist_samples.safetensors",
        {"samples": samples.clamp(-1, 1)},
        {"seed": FM_SAMPLE_SEED, "command": COMMAND, "checkpoint": path.name},
    )
    shutil.rmtree(resume_dir, ignore_errors=True)
    return {
        "checkpoint": path.name,
        "sha256": digest,
        "n_params": sum(p.numel() for p in model.net.parameters()),
        "steps": trainer.step,
        "decoder_var": decoder_var,
        "test": r,
        "test_first_1000_decoder_beta1": r_beta1,
        "step_kl_curve": curve,
        "curves": curves,
        "samples": "l12_fmnist_samples.safetensors",
        "sample_seed": FM_SAMPLE_SEED,
    }


def settings(quick: bool) -> dict:
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
        "quick": quick,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--part", choices=("toy", "fmnist", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="a tiny smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "l12_results.json"

    def write(part: str, value: dict) -> None:
        # re-read the file: the two parts may run as separate (even simultaneous) commands
        doc = json.loads(results_path.read_text()) if results_path.is_file() else {}
        if doc.get("quick", args.quick) != args.quick:
            doc = {}
        doc.update({"lecture": "12_diffusion", "command": COMMAND, "quick": args.quick})
        doc["settings"] = settings(args.quick)
        doc[part] = value
        atomic_write_bytes(results_path, (json.dumps(doc, indent=1) + "\n").encode())

    t0 = time.perf_counter()
    if args.part in ("toy", "all"):
        write("toy", run_toy(out, args.quick))
    if args.part in ("fmnist", "all"):
        write("fmnist", run_fmnist(out, args.quick))
    log(f"wrote {results_path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
