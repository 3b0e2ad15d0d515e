"""Train the VAEs of Lecture 06 (ELBO surgery, learned priors) with four priors; write checkpoints.

Usage: python tools/train_lecture06.py [--out data/checkpoints] [--quick]
(``make checkpoints`` runs it with the defaults.) Runtime: about 20 minutes (19 measured) on one
thread of a busy two-core CPU, of which under a minute per model is the evaluation; ``--quick``
runs a one-minute smoke test of the whole pipeline on 1000 images.

Eight models share Burda et al. (2016)'s one-stochastic-layer MLP architecture for binary 28 x 28
images (``PriorVAE.for_mnist``: encoder 784-200-200-(2Z), Bernoulli decoder Z-200-200-784, tanh),
the same initial network weights for a given latent size, and the same data order; they differ
only in the latent size and the prior:

* ``z2_*``  -- two latent dimensions, so that the prior and the aggregated posterior can be drawn;
* ``z10_*`` -- ten latent dimensions, for the comparison of the priors in numbers;

and, for each size, ``*_standard`` (``N(0, I)``), ``*_mog`` (a mixture of 100 learnable diagonal
Gaussians), ``*_vamp`` (the VampPrior with 100 pseudo-inputs, started at 100 training images drawn
with a fixed seed) and ``*_flow`` (``N(0, I)`` through six RealNVP affine coupling layers).

Training: the 60k Fashion-MNIST training images, dynamically binarized (a fresh Bernoulli sample of
every image in every epoch), mini-batches of 100 in a seeded order, Adam (lr 1e-3) for ``EPOCHS``
epochs on the single-sample ELBO (analytic KL for ``N(0, I)``, Monte Carlo ``log q - log p``
otherwise).

Evaluation, on the test set binarized once with a fixed seed (as in Lectures 02 and 05):

* on all 10k test images: the ELBO (``ELBO_SAMPLES`` samples per image) and its KL term;
* on a fixed random subset of ``N_NLL`` test images: the negative log-likelihood estimated by the
  K = ``NLL_K`` importance-weighted bound (``dgmlib.bounds.estimate_nll``), per image for the
  first ``N_NOTEBOOK`` images (which the lecture recomputes) and averaged over the subset;
* ELBO surgery over the whole training set (binarized once with a fixed seed):
  ``dgmlib.surgery.elbo_surgery`` with ``SURGERY_SAMPLES`` draws from the aggregated posterior
  of all 60k training images, i.e. the average KL, KL(q(z) || p(z)) and the mutual information,
  with standard errors;
* prior holes: ``dgmlib.surgery.prior_holes`` at ``SURGERY_SAMPLES`` draws from the prior, i.e.
  KL(p(z) || q(z)) and the prior mass where ``q(z) < p(z) / 10``.

Everything is deterministic: one CPU thread, fixed seeds, generators for the data order, the
binarization and every Monte Carlo estimate. The script writes, into ``--out``:

* ``l06_<model>.safetensors`` (weights only, loadable with ``dgmlib.train.load_model``) and its
  ``.sha256`` sidecar;
* ``l06_results.json``: the settings, the command, the checkpoints' SHA-256, the training curves
  and the test figures.

It is resumable: the training state is saved after every epoch under ``<out>/l06_resume/`` and a
finished model's evaluation is cached there, so an interrupted run continues where it stopped;
the folder is removed once the results are written. On the same platform and PyTorch version the
run reproduces the stored hashes; elsewhere floating-point summation order may differ, and the
figures agree to the Monte Carlo precision stated in the JSON.
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

from dgmlib.bounds import estimate_nll  # noqa: E402
from dgmlib.data import (  # noqa: E402
    binarize_dynamic,
    binarize_fixed,
    load_fashion_mnist,
    to_unit_interval,
)
from dgmlib.distributions import kl_normal_std_normal  # noqa: E402
from dgmlib.models.priors import PriorVAE  # noqa: E402
from dgmlib.surgery import (  # noqa: E402
    aggregate_posterior_log_prob,
    average_kl_standard_normal,
    elbo_surgery,
    prior_holes,
)
from dgmlib.train import (  # noqa: E402
    Trainer,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "make checkpoints  (runs: python tools/train_lecture06.py)"
SEED = 0
THREADS = 1
HIDDEN = 200
PRIOR_KWARGS: dict[str, dict] = {
    "standard": {},
    "mog": {"n_components": 100},
    "vamp": {"n_pseudo": 100},
    "flow": {"n_layers": 6, "hidden": 64},
}
MODELS = {  # name -> (latent dimension, prior)
    f"z{z}_{prior}": (z, prior) for z in (2, 10) for prior in PRIOR_KWARGS
}
EPOCHS = 6
BATCH = 100
LR = 1e-3
LOG_EVERY = 100
PSEUDO_SEED = 0  # which training images start the VampPrior's pseudo-inputs
TEST_BINARIZATION_SEED = 0
TRAIN_BINARIZATION_SEED = 0  # the training set binarized once, for ELBO surgery
SUBSET_SEED = 0  # the NLL subset: the first N_NLL of a seeded permutation of the test set
N_NLL = 500
N_NOTEBOOK = 100  # the lecture recomputes the NLL of the first 100 images of the subset
NLL_K = 500
NLL_CHUNK = 500
EVAL_BATCH = 50
ELBO_SAMPLES = 10
SURGERY_SAMPLES = 5000
HOLE_RATIO = 10.0


def build(name: str, train_images: torch.Tensor | None = None) -> PriorVAE:
    """A model of the lecture; the networks' weights depend only on the seed and latent size.

    ``train_images`` (uint8 ``[N, 28, 28]``) start the VampPrior's pseudo-inputs; without them
    (e.g. to load a checkpoint) they start at the default and are overwritten by the weights.
    """
    z_dim, prior = MODELS[name]
    kwargs = dict(PRIOR_KWARGS[prior])
    if prior == "vamp" and train_images is not None:
        g = torch.Generator().manual_seed(PSEUDO_SEED)
        idx = torch.randperm(len(train_images), generator=g)[: kwargs["n_pseudo"]]
        kwargs["init"] = to_unit_interval(train_images[idx]).unsqueeze(1)
    torch.manual_seed(SEED)
    return PriorVAE.for_mnist(z_dim=z_dim, hidden=HIDDEN, prior=prior, prior_kwargs=kwargs)


def fixed_binary(split: str, seed: int) -> torch.Tensor:
    """A Fashion-MNIST split binarized once with ``seed``: float32 ``[N, 1, 28, 28]``."""
    images, _ = load_fashion_mnist(split)
    return binarize_fixed(images, seed=seed).unsqueeze(1)


def nll_subset_indices(n_test: int, n: int) -> torch.Tensor:
    """The indices of the NLL subset: the first ``n`` of a permutation seeded ``SUBSET_SEED``."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]


@torch.no_grad()
def test_elbo(model: PriorVAE, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean test ELBO (``ELBO_SAMPLES`` samples per image) and its KL term over ``x``, nats."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    elbo, recon = [], []
    for start in range(0, len(x), 500):
        xb = x[start : start + 500]
        t = model._terms(xb, ELBO_SAMPLES, g)
        log_px_z = t["log_px_z"].mean(0)
        if model.analytic_kl:
            kl = kl_normal_std_normal(t["mu"], t["logvar"])
        else:
            kl = -model._log_pz_minus_log_qz(t).mean(0)
        elbo.append(log_px_z - kl)
        recon.append(log_px_z)
    e, r = float(torch.cat(elbo).mean()), float(torch.cat(recon).mean())
    return {"elbo": e, "recon": r, "kl": r - e}


@torch.no_grad()
def nll_on(model: PriorVAE, x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """Per-image K-sample NLL estimate (nats) of ``x``, in batches of ``EVAL_BATCH``: ``[N]``."""
    model.eval()
    g = torch.Generator().manual_seed(seed)

    def log_weights(xb: torch.Tensor, k: int) -> torch.Tensor:
        return model.log_weights(xb, k, generator=g)

    return torch.cat(
        [
            estimate_nll(log_weights, x[s : s + EVAL_BATCH], K=K, chunk=NLL_CHUNK)
            for s in range(0, len(x), EVAL_BATCH)
        ]
    )


@torch.no_grad()
def surgery_on(model: PriorVAE, x_train: torch.Tensor, seed: int, n_samples: int) -> dict:
    """ELBO surgery over ``x_train`` and prior-hole statistics (see the module docstring)."""
    model.eval()
    mu, logvar = zip(*(model.encode(xb) for xb in x_train.split(1000)), strict=True)
    mu, logvar = torch.cat(mu), torch.cat(logvar)
    g = torch.Generator().manual_seed(seed)
    s = elbo_surgery(mu, logvar, model.prior.log_prob, n_samples, g)
    z_p = model.prior.sample(n_samples, generator=g)
    holes = prior_holes(
        model.prior.log_prob(z_p), aggregate_posterior_log_prob(z_p, mu, logvar), HOLE_RATIO
    )
    out = {f"surgery_{k}": v for k, v in s._asdict().items()}
    out.update({f"holes_{k}": v for k, v in holes._asdict().items()})
    if model.analytic_kl:
        out["surgery_avg_kl_exact"] = average_kl_standard_normal(mu, logvar)
    return out


def train_one(
    name: str, train_images: torch.Tensor, x_test: torch.Tensor, cfg: dict, out: Path
) -> tuple[PriorVAE, list[dict]]:
    """Train one model for ``cfg['epochs']`` epochs (resumable); return (model, curves)."""
    model = build(name, train_images)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    trainer = Trainer(model, opt, log_every=LOG_EVERY, progress=False)
    n_train = cfg["n_train"]

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # the reparametrization noise
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n_train, generator=g)

        def gen():
            for start in range(0, n_train, BATCH):
                idx = order[start : start + BATCH]
                yield binarize_dynamic(train_images[idx], generator=g).unsqueeze(1)

        return gen()

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
        tr.save(resume_file, extra={"curves": curves})

    resume_file = out / "l06_resume" / f"{name}.train.safetensors"
    curves: list[dict] = []
    if resume_file.is_file():
        _, meta = load_checkpoint(resume_file)
        curves.extend(meta.get("curves", []))
        trainer.load(resume_file)
        print(f"  {name}: resuming after epoch {trainer.epoch}", flush=True)
    trainer.fit(batches, cfg["epochs"], on_epoch_end=on_epoch_end)
    return model, curves


def save_model(model: PriorVAE, name: str, epochs: int, path: Path) -> str:
    """Write the weights of ``model`` with its metadata and sidecar; return the SHA-256."""
    z_dim, prior = MODELS[name]
    meta = {
        "model": name,
        "z_dim": z_dim,
        "prior": prior,
        "prior_kwargs": PRIOR_KWARGS[prior],
        "epochs": epochs,
        "command": COMMAND,
    }
    return save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument(
        "--quick", action="store_true", help="a tiny smoke-test setting (not the lecture's)"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "l06_resume").mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()

    cfg = {
        "epochs": EPOCHS,
        "n_train": 60_000,
        "n_nll": N_NLL,
        "nll_K": NLL_K,
        "n_curve": 1000,
        "surgery_samples": SURGERY_SAMPLES,
    }
    if args.quick:
        cfg = {
            "epochs": 1,
            "n_train": 1000,
            "n_nll": N_NOTEBOOK,
            "nll_K": 50,
            "n_curve": 200,
            "surgery_samples": 500,
        }

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[: cfg["n_train"]]
    x_train_fixed = fixed_binary("train", TRAIN_BINARIZATION_SEED)[: cfg["n_train"]]
    x_test = fixed_binary("test", TEST_BINARIZATION_SEED)
    x_nll = x_test[nll_subset_indices(len(x_test), cfg["n_nll"])]

    results: dict = {}
    for i, name in enumerate(MODELS):
        z_dim, prior = MODELS[name]
        print(f"[{name}] z = {z_dim}, prior {prior}, {cfg['epochs']} epochs", flush=True)
        cache = out / "l06_resume" / f"{name}.eval.json"
        ckpt = out / f"l06_{name}.safetensors"
        if cache.is_file() and ckpt.is_file():
            results[name] = json.loads(cache.read_text())
            load_model(build(name), ckpt)  # verifies the hash
            print(f"  {name}: already trained and evaluated", flush=True)
            continue
        t0 = time.perf_counter()
        model, curves = train_one(name, train_images, x_test, cfg, out)
        print(f"  {name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        digest = save_model(model, name, cfg["epochs"], ckpt)
        print(f"  {name}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        r = test_elbo(model, x_test, seed=SEED + 1)
        nll = nll_on(model, x_nll, cfg["nll_K"], seed=SEED + 2 + i)
        r.update(surgery_on(model, x_train_fixed, SEED + 100 + i, cfg["surgery_samples"]))
        r.update(
            {
                "z_dim": z_dim,
                "prior": prior,
                "checkpoint": ckpt.name,
                "sha256": digest,
                "n_params": sum(p.numel() for p in model.parameters()),
                "n_prior_params": sum(p.numel() for p in model.prior.parameters()),
                "nll": float(nll.mean()),
                "nll_sem": float(nll.std() / math.sqrt(len(nll))),
                "nll_notebook_subset": [round(float(v), 4) for v in nll[:N_NOTEBOOK]],
                "curves": curves,
            }
        )
        atomic_write_bytes(cache, json.dumps(r).encode())
        results[name] = r
        print(
            f"  {name}: test ELBO {r['elbo']:.2f}  KL {r['kl']:.2f}  NLL {r['nll']:.2f}  "
            f"KL(q(z)||p(z)) {r['surgery_marginal_kl']:.3f}  I {r['surgery_mutual_info']:.3f}  "
            f"(log N {r['surgery_log_n']:.3f})  hole mass {r['holes_hole_mass']:.3f}  "
            f"[{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )

    doc = {
        "lecture": "06_elbo_surgery",
        "command": COMMAND,
        "quick": bool(args.quick),
        "settings": {
            "seed": SEED,
            "threads": THREADS,
            "architecture": f"PriorVAE.for_mnist(z_dim, hidden={HIDDEN}): 784-200-200-(2Z) tanh "
            "encoder, Z-200-200-784 tanh Bernoulli decoder",
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
            "test_images": len(x_test),
            "elbo_samples": ELBO_SAMPLES,
            "nll_K": cfg["nll_K"],
            "nll_chunk": NLL_CHUNK,
            "nll_images": len(x_nll),
            "nll_subset": f"torch.randperm(10000, generator=torch.Generator()."
            f"manual_seed({SUBSET_SEED}))[:{len(x_nll)}]",
            "notebook_subset": f"the first {N_NOTEBOOK} images of the NLL subset",
            "surgery_images": cfg["n_train"],
            "surgery_samples": cfg["surgery_samples"],
            "hole_samples": cfg["surgery_samples"],
            "hole_ratio": HOLE_RATIO,
            "curve_images": cfg["n_curve"],
        },
        "models": results,
    }
    atomic_write_bytes(out / "l06_results.json", (json.dumps(doc, indent=1) + "\n").encode())
    shutil.rmtree(out / "l06_resume", ignore_errors=True)
    print("wrote", out / "l06_results.json", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
