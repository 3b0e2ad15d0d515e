"""Train the VAEs of Lecture 06 (ELBO surgery, learned priors) with four priors; write checkpoints.

Usage: python tools/train_lecture06.py [--out data/checkpoints] [--quick] [--device cpu]
(``make checkpoints`` runs it with the defaults.) Runtime: about 20 minutes (19 measured) on one
thread of a busy two-core CPU, of which under a minute per model is the evaluation; ``--quick``
runs a one-minute smoke test of the whole pipeline on 1000 images.

Eight models share Burda et al. (2016)'s one-stochastic-layer MLP architecture for binary 28 x 28
images (``VAE.for_mnist(z_dim, prior=..., prior_kwargs=...)``: encoder 784-200-200-(2Z),
Bernoulli decoder Z-200-200-784, tanh), the same initial network weights for a given latent size,
and the same data order; they differ only in the latent size and the prior:

* ``z2_*``  -- two latent dimensions, so that the prior and the aggregated posterior can be drawn;
* ``z10_*`` -- ten latent dimensions, for the comparison of the priors in numbers;

and, for each size, ``*_standard`` (``N(0, I)``), ``*_mog`` (a mixture of 100 learnable diagonal
Gaussians), ``*_vamp`` (the VampPrior with 100 pseudo-inputs, set to 100 training images drawn
with a fixed seed) and ``*_flow`` (``N(0, I)`` through six RealNVP affine coupling layers).

Training: the 60k Fashion-MNIST training images, dynamically binarized (a fresh Bernoulli sample of
every image in every epoch), mini-batches of 100 in a seeded order, Adam (lr 1e-3) for ``EPOCHS``
epochs on the single-sample ELBO (``dgmlib.objectives.ELBO``: analytic KL for ``N(0, I)``, Monte
Carlo ``log q - log p`` otherwise).

Evaluation, on the test set binarized once with a fixed seed (as in Lectures 02 and 05):

* on all 10k test images: the ELBO (``ELBO_SAMPLES`` samples per image), E_q log p(x|z) and the
  KL term;
* on a fixed random subset of ``N_NLL`` test images: the negative log-likelihood estimated by the
  K = ``NLL_K`` importance-weighted bound (``dgmlib.bounds.estimate_nll``), per image for the
  first ``N_NOTEBOOK`` images (which the lecture recomputes) and averaged over the subset;
* ELBO surgery over the whole training set (binarized once with a fixed seed), on the CPU:
  ``dgmlib.surgery.elbo_surgery`` with ``SURGERY_SAMPLES`` draws from the aggregated posterior
  of all 60k training images, i.e. the average KL, KL(q(z) || p(z)) and the mutual information,
  with standard errors;
* prior holes: ``dgmlib.surgery.prior_holes`` at ``SURGERY_SAMPLES`` draws from the prior, i.e.
  KL(p(z) || q(z)) and the prior mass where ``q(z) < p(z) / 10``.

Everything is deterministic: one CPU thread, fixed seeds, generators for the data order, the
binarization and every Monte Carlo estimate (``--device cuda`` trains on a GPU, with other
round-off). The script writes, into ``--out``:

* ``l06_<model>.safetensors`` (weights and build spec: ``dgmlib.pretrained.load("l06_z2_vamp")``)
  and its ``.sha256`` sidecar;
* ``l06_results.json`` (``dgmlib.pretrained.results("l06")``, the schema of
  :mod:`dgmlib.experiment`): the settings, the command, the checkpoints' SHA-256, the training
  curves, the test figures and the surgery terms; and the models' entries in ``manifest.json``.

It is resumable: the training state is saved after every epoch under ``<out>/l06_resume/`` and a
finished model's evaluation is cached there, so an interrupted run continues where it stopped;
the folder is removed once the results are written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.bounds import estimate_nll  # noqa: E402
from dgmlib.data import (  # noqa: E402
    binarize_dynamic,
    binarize_fixed,
    load_fashion_mnist,
    to_unit_interval,
)
from dgmlib.models import VAE  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.stats import mean_se  # noqa: E402
from dgmlib.surgery import (  # noqa: E402
    aggregate_posterior_log_prob,
    average_kl_standard_normal,
    elbo_surgery,
    prior_holes,
)
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
COMMAND = "make checkpoints  (runs: python tools/train_lecture06.py)"
LECTURE = "06_elbo_surgery"
SEED = 0  # initial weights (the same for every prior of one latent size), data order, noise
THREADS = 1  # one CPU thread: a re-run gives the same bits
HIDDEN = 200  # hidden units of the encoder's and the decoder's two layers
PRIOR_KWARGS: dict[str, dict] = {  # the arguments of dgmlib.models.priors.make_prior
    "standard": {},
    "mog": {"n_components": 100},
    "vamp": {"n_pseudo": 100},
    "flow": {"n_layers": 6, "hidden": 64},
}
MODELS = {  # name -> (latent dimension, prior)
    f"z{z}_{prior}": (z, prior) for z in (2, 10) for prior in PRIOR_KWARGS
}
EPOCHS = 6  # epochs per model
BATCH = 100  # images per training step
LR = 1e-3  # Adam
LOG_EVERY = 100  # training steps per logged value of the ELBO
PSEUDO_SEED = 0  # which training images start the VampPrior's pseudo-inputs
TEST_BINARIZATION_SEED = 0  # the test set is binarized once, with this seed
TRAIN_BINARIZATION_SEED = 0  # the training set binarized once, for ELBO surgery
SUBSET_SEED = 0  # the NLL subset: the first N_NLL of a seeded permutation of the test set
N_NLL = 500  # test images of the NLL estimate
N_NOTEBOOK = 100  # the lecture recomputes the NLL of the first 100 images of the subset
NLL_K = 500  # importance samples per image of the NLL estimate
NLL_CHUNK = 500  # ... drawn this many at a time (bounded memory)
EVAL_BATCH = 50  # images per batch of the NLL estimate
ELBO_BATCH = 500  # images per batch of the test ELBO
ELBO_SAMPLES = 10  # samples per image of the test ELBO
SURGERY_SAMPLES = 5000  # draws of ELBO surgery and of the prior-hole statistics
HOLE_RATIO = 10.0  # a hole: q(z) < p(z) / HOLE_RATIO
# the lecture's run, and --quick: a smoke test of the whole pipeline (not the lecture's figures)
FULL = {
    "epochs": EPOCHS,
    "n_train": 60_000,
    "n_nll": N_NLL,
    "nll_K": NLL_K,
    "n_curve": 1000,
    "surgery_samples": SURGERY_SAMPLES,
}
QUICK = {
    "epochs": 1,
    "n_train": 1000,
    "n_nll": N_NOTEBOOK,
    "nll_K": 50,
    "n_curve": 200,
    "surgery_samples": 500,
}


def build(name: str, train_images: torch.Tensor | None = None) -> VAE:
    """A model of the lecture; the networks' weights depend only on the seed and latent size.

    ``train_images`` (uint8 ``[N, 28, 28]``) set the VampPrior's pseudo-inputs; without them
    (e.g. to load a checkpoint) they keep their default start, which the weights overwrite.
    """
    z_dim, prior = MODELS[name]
    torch.manual_seed(SEED)
    model = VAE.for_mnist(z_dim=z_dim, hidden=HIDDEN, prior=prior, prior_kwargs=PRIOR_KWARGS[prior])
    if prior == "vamp" and train_images is not None:
        g = torch.Generator().manual_seed(PSEUDO_SEED)
        idx = torch.randperm(len(train_images), generator=g)[: model.prior.n_pseudo]
        model.prior.set_pseudo_inputs(to_unit_interval(train_images[idx]).unsqueeze(1))
    return model


def checkpoint_metadata(name: str, epochs: int) -> dict:
    """What the checkpoint of ``name`` records besides its weights and build spec."""
    z_dim, prior = MODELS[name]
    return {
        "name": name,
        "z_dim": z_dim,
        "prior": prior,
        "prior_kwargs": PRIOR_KWARGS[prior],
        "epochs": epochs,
        "command": COMMAND,
    }


def fixed_binary(split: str, seed: int) -> torch.Tensor:
    """A Fashion-MNIST split binarized once with ``seed``: float32 ``[N, 1, 28, 28]``."""
    images, _ = load_fashion_mnist(split)
    return binarize_fixed(images, seed=seed).unsqueeze(1)


def nll_subset_indices(n_test: int, n: int) -> torch.Tensor:
    """The indices of the NLL subset: the first ``n`` of a permutation seeded ``SUBSET_SEED``."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are."""
    return next(model.parameters()).device


@torch.no_grad()
def test_elbo(model: VAE, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean test ELBO (``ELBO_SAMPLES`` samples per image), ``log_px_z`` = E_q log p(x|z) and
    the KL term (analytic for N(0, I), else Monte Carlo from the same samples) over ``x``, nats."""
    model.eval()
    device = device_of(model)
    g = torch.Generator(device=device).manual_seed(seed)
    elbo, log_px_z = [], []
    for xb in x.split(ELBO_BATCH):
        t = model.terms(xb.to(device), ELBO_SAMPLES, g)
        log_px_z.append(t["log_px_z"].mean(0))
        elbo.append(log_px_z[-1] - t["kl"])
    e, r = float(torch.cat(elbo).mean()), float(torch.cat(log_px_z).mean())
    return {"elbo": e, "log_px_z": r, "kl": r - e}


def nll_on(model: VAE, x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """Per-image K-sample NLL estimate of ``x`` (nats), in batches of ``EVAL_BATCH``: ``[N]``."""
    model.eval()
    device = device_of(model)
    g = torch.Generator(device=device).manual_seed(seed)

    def log_weights(xb: torch.Tensor, k: int) -> torch.Tensor:
        return model.log_weights(xb, k, generator=g)

    per_batch = [
        estimate_nll(log_weights, xb.to(device), K, NLL_CHUNK) for xb in x.split(EVAL_BATCH)
    ]
    return torch.cat(per_batch).cpu()


@torch.no_grad()
def surgery_on(model: VAE, x_train: torch.Tensor, seed: int, n_samples: int) -> tuple[dict, dict]:
    """ELBO surgery over ``x_train`` and the prior-hole statistics (module docstring), on the
    CPU: ``(surgery, holes)``, nats."""
    model = model.cpu().eval()
    mu, logvar = zip(*(model.encode(xb) for xb in x_train.split(1000)), strict=True)
    mu, logvar = torch.cat(mu), torch.cat(logvar)
    g = torch.Generator().manual_seed(seed)
    surgery = elbo_surgery(mu, logvar, model.prior.log_prob, n_samples, g)._asdict()
    z_p = model.prior.sample(n_samples, generator=g)
    holes = prior_holes(
        model.prior.log_prob(z_p), aggregate_posterior_log_prob(z_p, mu, logvar), HOLE_RATIO
    )
    if model.analytic_kl:
        surgery["avg_kl_exact"] = average_kl_standard_normal(mu, logvar)
    return surgery, holes._asdict()


def train_one(
    name: str, train_images: Tensor, x_test: Tensor, cfg: dict, out: Path, device: str | None = None
) -> tuple[VAE, list[dict], float]:
    """Train ``name`` for ``cfg['epochs']`` epochs (resumable from ``out/l06_resume``); return
    the model, its curves and the training time in seconds."""
    model = build(name, train_images)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    trainer = Trainer(model, opt, ELBO(), LOG_EVERY, progress=False, device=device)
    n_train = cfg["n_train"]

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # the reparametrization noise
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n_train, generator=g)  # the binarization continues this stream
        return (
            binarize_dynamic(train_images[i], generator=g).unsqueeze(1) for i in order.split(BATCH)
        )

    x_curve = x_test[: cfg["n_curve"]]

    def on_epoch_end(tr: Trainer) -> None:
        r = test_elbo(model, x_curve, seed=SEED)
        # the mean training ELBO over the epoch's logged steps (None when none was logged)
        hist = zip(tr.history.get("elbo", []), tr.history.get("epoch", []), strict=True)
        logged = [e for e, ep in hist if ep == tr.epoch - 1]
        train_elbo = round(sum(logged) / len(logged), 4) if logged else None
        curves.append(
            {
                "epoch": tr.epoch,
                "train_elbo": train_elbo,
                "test_elbo": r["elbo"],
                "test_kl": r["kl"],
            }
        )
        print(
            f"  {name} epoch {tr.epoch}/{cfg['epochs']}: train ELBO {train_elbo}  "
            f"test ELBO {r['elbo']:.2f}  KL {r['kl']:.2f}",
            flush=True,
        )
        # the curves and the time travel with the training state, so a resumed run keeps them
        tr.save(resume, extra={"curves": curves, "train_seconds": time.perf_counter() - t0})

    resume = out / "l06_resume" / f"{name}.train.safetensors"
    meta = trainer.load(resume) if resume.is_file() else {}
    curves, t0 = meta.get("curves", []), time.perf_counter() - meta.get("train_seconds", 0.0)
    trainer.fit(batches, cfg["epochs"], on_epoch_end=on_epoch_end)
    return model, curves, time.perf_counter() - t0


def evaluate(
    i: int, model: VAE, x_test: torch.Tensor, x_nll: torch.Tensor, x_train: torch.Tensor, cfg: dict
) -> dict:
    """The test figures, the surgery terms and the prior holes of model number ``i``."""
    test = test_elbo(model, x_test, seed=SEED + 1)
    nll = nll_on(model, x_nll, cfg["nll_K"], seed=SEED + 2 + i)
    test["nll"], test["nll_se"] = mean_se(nll)
    test["nll_notebook_subset"] = [round(float(v), 4) for v in nll[:N_NOTEBOOK]]
    surgery, holes = surgery_on(model, x_train, SEED + 100 + i, cfg["surgery_samples"])
    return {"test": test, "surgery": surgery, "holes": holes}


def settings(cfg: dict, n_test: int, n_nll: int) -> dict:
    """The settings block of the results."""
    return {
        "seed": SEED,
        "threads": THREADS,
        "architecture": f"VAE.for_mnist(z_dim, hidden={HIDDEN}, prior, prior_kwargs): "
        "784-200-200-(2Z) tanh encoder, Z-200-200-784 tanh Bernoulli decoder",
        "objective": "ELBO()",
        "models": {n: {"z_dim": z, "prior": p} for n, (z, p) in MODELS.items()},
        "prior_kwargs": PRIOR_KWARGS,
        "vamp_init": f"training images torch.randperm(60000, generator=torch.Generator()."
        f"manual_seed({PSEUDO_SEED}))[:n_pseudo]",
        "data": "Fashion-MNIST, dynamically binarized for training; the test set and (for "
        f"ELBO surgery) the training set binarized once with seeds {TEST_BINARIZATION_SEED} "
        f"and {TRAIN_BINARIZATION_SEED}",
        "n_train": cfg["n_train"],
        "epochs": cfg["epochs"],
        "batch_size": BATCH,
        "optimizer": "Adam",
        "learning_rate": LR,
        "test_images": n_test,
        "elbo_samples": ELBO_SAMPLES,
        "nll_images": n_nll,
        "nll_K": cfg["nll_K"],
        "nll_chunk": NLL_CHUNK,
        "nll_subset": f"torch.randperm(10000, generator=torch.Generator()."
        f"manual_seed({SUBSET_SEED}))[:{n_nll}]",
        "notebook_subset": f"the first {N_NOTEBOOK} images of the NLL subset",
        "surgery_images": cfg["n_train"],
        "surgery_samples": cfg["surgery_samples"],
        "hole_samples": cfg["surgery_samples"],
        "hole_ratio": HOLE_RATIO,
        "curve_images": cfg["n_curve"],
    }


def main(argv: list[str] | None = None) -> int:
    args = experiment.script_args(experiment.script_parser(__doc__), argv)
    out, device = args.out, args.device
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    cfg = QUICK if args.quick else FULL

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[: cfg["n_train"]]
    x_train_fixed = fixed_binary("train", TRAIN_BINARIZATION_SEED)[: cfg["n_train"]]
    x_test = fixed_binary("test", TEST_BINARIZATION_SEED)
    x_nll = x_test[nll_subset_indices(len(x_test), cfg["n_nll"])]

    def run(name: str, ckpt: Path) -> dict:
        z_dim, prior = MODELS[name]
        print(f"[{name}] z = {z_dim}, prior {prior}, {cfg['epochs']} epochs", flush=True)
        model, curves, seconds = train_one(name, train_images, x_test, cfg, out, str(device))
        print(f"  {name}: trained in {seconds:.0f} s", flush=True)
        digest = experiment.save_model(ckpt, model, **checkpoint_metadata(name, cfg["epochs"]))
        print(f"  {name}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        figures = evaluate(list(MODELS).index(name), model, x_test, x_nll, x_train_fixed, cfg)
        t, s, h = (figures[k] for k in ("test", "surgery", "holes"))
        print(
            f"  {name}: test ELBO {t['elbo']:.2f}  KL {t['kl']:.2f}  NLL {t['nll']:.2f}  "
            f"KL(q(z)||p(z)) {s['marginal_kl']:.3f}  I {s['mutual_info']:.3f}  "
            f"(log N {s['log_n']:.3f})  hole mass {h['hole_mass']:.3f}",
            flush=True,
        )
        fields = {"z_dim": z_dim, "prior": prior, **figures, "curves": curves}
        return experiment.model_entry(
            ckpt,
            digest,
            model,
            round(seconds, 1),
            n_prior_params=experiment.n_params(model.prior),
            **fields,
        )

    models = experiment.train_each(MODELS, out, "l06", out / "l06_resume", run)

    settings_run = settings(cfg, len(x_test), len(x_nll))
    path = experiment.write_results(
        out, "l06", LECTURE, COMMAND, settings_run, models, args.quick, out / "l06_resume"
    )
    print("wrote", path, flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
