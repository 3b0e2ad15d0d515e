"""Train the VAE and the IWAEs (K = 5, 50) of Lecture 05, evaluate them, write checkpoints.

Usage: python tools/train_lecture05.py [--out data/checkpoints] [--quick]
(``make checkpoints`` runs it with the defaults.)

The three models share Burda et al. (2016)'s one-stochastic-layer architecture for binary
28 x 28 images (``VAE.for_mnist``: encoder 784-200-200-(50+50), Bernoulli decoder
50-200-200-784, tanh) and the same initial weights; they differ only in the objective:

* ``vae``    -- the ELBO (one reparametrized sample, analytic KL);
* ``iwae5``  -- the importance-weighted bound with K = 5 samples;
* ``iwae50`` -- the importance-weighted bound with K = 50 samples.

Training: the 60k Fashion-MNIST training images, dynamically binarized (a fresh Bernoulli sample
of every image in every epoch), mini-batches of 100 in a seeded order, Adam with the paper's
hyper-parameters (beta = (0.9, 0.999), eps = 1e-4) and its learning-rate decay
``1e-3 * 10^(-i/7)`` compressed so that stage ``i`` lasts one epoch instead of ``3^i``.

Evaluation, on the test set binarized once with a fixed seed:

* on all 10k test images: the ELBO (10 samples, analytic KL), the bounds L_5 and L_50, and the
  number of active units (Burda et al.'s criterion ``Var_x E_q[z_j|x] > 0.01``);
* on a fixed random subset of ``N_NLL`` test images: the negative log-likelihood estimated by the
  K = 5000 importance-weighted bound (``dgmlib.bounds.estimate_nll``), per image for the first
  ``N_NOTEBOOK`` images (which the lecture recomputes) and averaged over the subset.

Everything is deterministic: one CPU thread, fixed seeds, generators for the data order, the
binarization and every Monte Carlo estimate. The script writes, into ``--out``:

* ``l05_<model>.safetensors`` (weights only, loadable with ``dgmlib.train.load_model``) and its
  ``.sha256`` sidecar;
* ``l05_results.json``: the settings, the command, the checkpoints' SHA-256, the training curves
  and the test figures.

It is resumable: the training state (with the optimizer) is saved after every epoch under
``<out>/l05_resume/`` and a finished model's evaluation is cached there, so an interrupted run
continues where it stopped; the folder is removed once the results are written. On the same
platform and PyTorch version the run reproduces the stored hashes; elsewhere floating-point
summation order may differ, and the figures agree to the Monte Carlo precision stated in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.bounds import estimate_nll, iwae_bound  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.diagnostics import active_units  # noqa: E402
from dgmlib.models import IWAE, VAE  # noqa: E402
from dgmlib.train import (  # noqa: E402
    Trainer,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "make checkpoints  (runs: python tools/train_lecture05.py)"
SEED = 0
THREADS = 1
MODELS = {"vae": 1, "iwae5": 5, "iwae50": 50}  # name -> number of samples K of the objective
EPOCHS = 5
BATCH = 100
LR = 1e-3
LR_DECAY_STAGES = 7  # lr of epoch i: LR * 10^(-i / 7) (Burda et al.: stage i lasts 3^i epochs)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-4}
LOG_EVERY = 100
TEST_BINARIZATION_SEED = 0
SUBSET_SEED = 0  # the NLL subset: the first N_NLL of a seeded permutation of the test set
N_NLL = 1000
N_NOTEBOOK = 100  # the lecture recomputes the NLL of the first 100 images of the subset
NLL_K = 5000
NLL_CHUNK = 500
EVAL_BATCH = 50
ELBO_SAMPLES = 10
AU_THRESHOLD = 0.01
BURDA_TABLE1_MNIST = {  # Burda et al. (2016), Table 1, MNIST, one stochastic layer
    "vae_k1": {"nll": 86.76, "active_units": 19},
    "iwae_k5": {"nll": 85.54, "active_units": 22},
    "iwae_k50": {"nll": 84.78, "active_units": 25},
}


def build(name: str) -> VAE:
    """A model of the lecture, initialised from the global seed (the same weights for all)."""
    torch.manual_seed(SEED)
    K = MODELS[name]
    return VAE.for_mnist() if K == 1 else IWAE.for_mnist(K=K)


def test_data() -> torch.Tensor:
    """The 10k test images binarized once with a fixed seed: float32 ``[10000, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


def nll_subset_indices(n_test: int, n: int) -> torch.Tensor:
    """The indices of the NLL subset: the first ``n`` of a permutation seeded ``SUBSET_SEED``."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]


def lr_of_epoch(epoch: int) -> float:
    """The learning rate of a (0-based) epoch: the paper's stages, one epoch each."""
    return LR * 10 ** (-epoch / LR_DECAY_STAGES)


@torch.no_grad()
def bounds_on(model: VAE, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean ELBO (``ELBO_SAMPLES`` samples, analytic KL), L_5, L_50 over ``x``, and active units."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    elbo, l5, l50, mus = [], [], [], []
    for start in range(0, len(x), 500):
        xb = x[start : start + 500]
        elbo.append(model.elbo(xb, n_samples=ELBO_SAMPLES, generator=g))
        l5.append(iwae_bound(model.log_weights(xb, 5, generator=g)))
        l50.append(iwae_bound(model.log_weights(xb, 50, generator=g)))
        mus.append(model.encode(xb)[0])
    au = active_units(torch.cat(mus), AU_THRESHOLD)
    return {
        "elbo": float(torch.cat(elbo).mean()),
        "iwae_5": float(torch.cat(l5).mean()),
        "iwae_50": float(torch.cat(l50).mean()),
        "active_units": int(au.count),
        "mu_variance": [round(float(v), 6) for v in au.variances],
    }


@torch.no_grad()
def nll_on(model: VAE, x: torch.Tensor, K: int, seed: int, log=print) -> torch.Tensor:
    """Per-image K-sample NLL estimate (nats) of ``x``, in batches of ``EVAL_BATCH``: ``[N]``."""
    model.eval()
    g = torch.Generator().manual_seed(seed)

    def log_weights(xb: torch.Tensor, k: int) -> torch.Tensor:
        return model.log_weights(xb, k, generator=g)

    out = []
    for start in range(0, len(x), EVAL_BATCH):
        out.append(estimate_nll(log_weights, x[start : start + EVAL_BATCH], K=K, chunk=NLL_CHUNK))
        done = min(start + EVAL_BATCH, len(x))
        log(f"    NLL: {done}/{len(x)} images, running mean {float(torch.cat(out).mean()):.3f}")
    return torch.cat(out)


def train_one(name: str, train_images: torch.Tensor, x_test: torch.Tensor, cfg: dict, out: Path):
    """Train one model for ``cfg['epochs']`` epochs (resumable); return (model, curves)."""
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=LR, **ADAM)
    trainer = Trainer(model, opt, log_every=LOG_EVERY, progress=False)
    n_train = cfg["n_train"]

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        for group in opt.param_groups:
            group["lr"] = lr_of_epoch(epoch)
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
        # a small test curve: ELBO and L_50 on the first n_curve test images, fixed generators
        model.eval()
        with torch.no_grad():
            g = torch.Generator().manual_seed(SEED)
            elbo = float(model.elbo(x_curve, generator=g).mean())
            l50 = float(iwae_bound(model.log_weights(x_curve, 50, generator=g)).mean())
        k = "iwae" if "iwae" in tr.history else "elbo"
        steps = len(range(0, n_train, BATCH)) // LOG_EVERY
        train_obj = sum(tr.history[k][-steps:]) / steps if steps else float("nan")
        curves.append(
            {
                "epoch": tr.epoch,
                "lr": lr_of_epoch(tr.epoch - 1),
                "train_objective": train_obj,
                "test_elbo": elbo,
                "test_iwae_50": l50,
            }
        )
        print(
            f"  {name} epoch {tr.epoch}/{cfg['epochs']}: train objective {train_obj:.3f}  "
            f"test ELBO {elbo:.3f}  test L_50 {l50:.3f}",
            flush=True,
        )
        # keep the curve in the resume state so that an interrupted run keeps it too
        tr.save(resume_file, extra={"curves": curves})

    resume_file = out / "l05_resume" / f"{name}.train.safetensors"
    curves: list[dict] = []
    if resume_file.is_file():
        _, meta = load_checkpoint(resume_file)
        curves.extend(meta.get("curves", []))
        trainer.load(resume_file)
        print(f"  {name}: resuming after epoch {trainer.epoch}", flush=True)
    trainer.fit(batches, cfg["epochs"], on_epoch_end=on_epoch_end)
    return model, curves


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument(
        "--quick", action="store_true", help="a tiny smoke-test setting (not the lecture's)"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "l05_resume").mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)

    cfg = {"epochs": EPOCHS, "n_train": 60_000, "n_nll": N_NLL, "nll_K": NLL_K, "n_curve": 1000}
    if args.quick:
        cfg = {"epochs": 2, "n_train": 1000, "n_nll": N_NOTEBOOK, "nll_K": 100, "n_curve": 200}

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[: cfg["n_train"]]
    x_test = test_data()
    subset = nll_subset_indices(len(x_test), cfg["n_nll"])
    x_nll = x_test[subset]

    results: dict = {}
    for i, name in enumerate(MODELS):
        print(f"[{name}] K = {MODELS[name]}, {cfg['epochs']} epochs", flush=True)
        cache = out / "l05_resume" / f"{name}.eval.json"
        ckpt = out / f"l05_{name}.safetensors"
        if cache.is_file() and ckpt.is_file():
            results[name] = json.loads(cache.read_text())
            load_model(build(name), ckpt)  # verifies the hash
            print(f"  {name}: already trained and evaluated", flush=True)
            continue
        model, curves = train_one(name, train_images, x_test, cfg, out)
        meta = {"model": name, "K": MODELS[name], "epochs": cfg["epochs"], "command": COMMAND}
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        digest = save_checkpoint(ckpt, tensors, meta)
        print(f"  {name}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        print(f"  {name}: test bounds and active units on {len(x_test)} images", flush=True)
        r = bounds_on(model, x_test, seed=SEED + 1)
        print(
            f"  {name}: ELBO {r['elbo']:.3f}  L_5 {r['iwae_5']:.3f}  L_50 {r['iwae_50']:.3f}  "
            f"active units {r['active_units']}",
            flush=True,
        )
        print(f"  {name}: NLL (K = {cfg['nll_K']}) on {len(x_nll)} test images", flush=True)
        nll = nll_on(
            model, x_nll, cfg["nll_K"], seed=SEED + 2 + i, log=lambda s: print(s, flush=True)
        )
        r.update(
            {
                "K_train": MODELS[name],
                "checkpoint": ckpt.name,
                "sha256": digest,
                "nll": float(nll.mean()),
                "nll_sem": float(nll.std() / math.sqrt(len(nll))),
                "nll_notebook_subset": [round(float(v), 4) for v in nll[:N_NOTEBOOK]],
                "curves": curves,
            }
        )
        atomic_write_bytes(cache, json.dumps(r).encode())
        results[name] = r
        print(f"  {name}: NLL {r['nll']:.3f} +- {r['nll_sem']:.3f} nats", flush=True)

    doc = {
        "lecture": "05_iwae",
        "command": COMMAND,
        "quick": bool(args.quick),
        "settings": {
            "seed": SEED,
            "threads": THREADS,
            "architecture": "VAE.for_mnist(): 784-200-200-(50+50) tanh encoder, "
            "50-200-200-784 tanh Bernoulli decoder",
            "data": "Fashion-MNIST, dynamically binarized for training, test set binarized "
            f"once with seed {TEST_BINARIZATION_SEED}",
            "n_train": cfg["n_train"],
            "epochs": cfg["epochs"],
            "batch_size": BATCH,
            "optimizer": f"Adam(betas={ADAM['betas']}, eps={ADAM['eps']})",
            "learning_rate": f"{LR} * 10^(-epoch/{LR_DECAY_STAGES}), epoch = 0, 1, ...",
            "test_bounds_images": len(x_test),
            "elbo_samples": ELBO_SAMPLES,
            "active_unit_threshold": AU_THRESHOLD,
            "nll_K": cfg["nll_K"],
            "nll_chunk": NLL_CHUNK,
            "nll_images": len(x_nll),
            "nll_subset": f"torch.randperm(10000, generator=torch.Generator()."
            f"manual_seed({SUBSET_SEED}))[:{len(x_nll)}]",
            "notebook_subset": f"the first {N_NOTEBOOK} images of the NLL subset",
            "curve_images": cfg["n_curve"],
        },
        "burda2016_table1_mnist": BURDA_TABLE1_MNIST,
        "models": results,
    }
    atomic_write_bytes(out / "l05_results.json", (json.dumps(doc, indent=1) + "\n").encode())
    shutil.rmtree(out / "l05_resume", ignore_errors=True)
    print("wrote", out / "l05_results.json", flush=True)
    print(
        "summary: "
        + ", ".join(f"{n} NLL {r['nll']:.2f} AU {r['active_units']}" for n, r in results.items()),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
