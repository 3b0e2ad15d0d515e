"""Train the VAE and the IWAEs (K = 5, 50) of Lecture 05, evaluate them, write checkpoints.

Usage: python tools/train_lecture05.py [--out data/checkpoints] [--quick] [--device cpu]
(``make checkpoints`` runs it with the defaults.) Runtime: about 55 minutes on one thread of a
busy two-core CPU, most of it the K = 5000 NLL estimates; ``--quick`` runs a smoke test of the
whole pipeline on 1000 images.

The three models are one model, ``VAE.for_mnist()`` (Burda et al. (2016)'s one-stochastic-layer
architecture for binary 28 x 28 images: encoder 784-200-200-(50+50), Bernoulli decoder
50-200-200-784, tanh), built from the same seed, so with the same initial weights; they differ
only in the objective of :mod:`dgmlib.objectives`:

* ``vae``    -- ``ELBO()``: one reparametrized sample, analytic KL;
* ``iwae5``  -- ``IWAEBound(5)``: the importance-weighted bound with K = 5 samples;
* ``iwae50`` -- ``IWAEBound(50)``: the importance-weighted bound with K = 50 samples.

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
binarization and every Monte Carlo estimate (``--device cuda`` trains and evaluates on a GPU,
with other round-off). The script writes, into ``--out``:

* ``l05_<model>.safetensors`` (weights and build spec: ``dgmlib.pretrained.load("l05_vae")``)
  and its ``.sha256`` sidecar;
* ``l05_results.json`` (``dgmlib.pretrained.results("l05")``, the schema of
  :mod:`dgmlib.experiment`): the settings, the command, the checkpoints' SHA-256, the training
  curves and the test figures; and the models' entries in ``manifest.json``.

It is resumable: the training state (with the optimizer) is saved after every epoch under
``<out>/l05_resume/`` and a finished model's evaluation is cached there, so an interrupted run
continues where it stopped; the folder is removed once the results are written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.bounds import estimate_nll, iwae_bound  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.diagnostics import active_units  # noqa: E402
from dgmlib.experiment import load_model_file, save_model, write_results  # noqa: E402
from dgmlib.io import atomic_write_json, read_json  # noqa: E402
from dgmlib.models import VAE  # noqa: E402
from dgmlib.objectives import ELBO, IWAEBound  # noqa: E402
from dgmlib.stats import mean_se  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import get_device, seed_everything  # noqa: E402

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
COMMAND = "make checkpoints  (runs: python tools/train_lecture05.py)"
LECTURE = "05_iwae"
SEED = 0  # initial weights (the same for every model), data order, binarization, noise
THREADS = 1  # one CPU thread: a re-run gives the same bits
MODELS = {"vae": 1, "iwae5": 5, "iwae50": 50}  # name -> K of the objective (1: the ELBO)
EPOCHS = 5  # epochs per model (one learning-rate stage each)
BATCH = 100  # images per training step
LR = 1e-3  # learning rate of the first epoch
LR_DECAY_STAGES = 7  # lr of epoch i: LR * 10^(-i / 7) (Burda et al.: stage i lasts 3^i epochs)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-4}  # Burda et al.'s Adam
LOG_EVERY = 100  # training steps per logged value of the objective
TEST_BINARIZATION_SEED = 0  # the test set is binarized once, with this seed
SUBSET_SEED = 0  # the NLL subset: the first N_NLL of a seeded permutation of the test set
N_NLL = 1000  # test images of the NLL estimate
N_NOTEBOOK = 100  # the lecture recomputes the NLL of the first 100 images of the subset
NLL_K = 5000  # importance samples per image of the NLL estimate
NLL_CHUNK = 500  # ... drawn this many at a time (bounded memory)
EVAL_BATCH = 50  # images per batch of the NLL estimate
BOUNDS_BATCH = 500  # images per batch of the test bounds
ELBO_SAMPLES = 10  # samples per image of the test ELBO
AU_THRESHOLD = 0.01  # a unit is active when Var_x E_q[z_j | x] exceeds this
# the lecture's run, and --quick: a smoke test of the whole pipeline (not the lecture's figures)
FULL = {"epochs": EPOCHS, "n_train": 60_000, "n_nll": N_NLL, "nll_K": NLL_K, "n_curve": 1000}
QUICK = {"epochs": 2, "n_train": 1000, "n_nll": N_NOTEBOOK, "nll_K": 100, "n_curve": 200}
BURDA_TABLE1_MNIST = {  # Burda et al. (2016), Table 1, MNIST, one stochastic layer
    "vae": {"nll": 86.76, "active_units": 19},
    "iwae5": {"nll": 85.54, "active_units": 22},
    "iwae50": {"nll": 84.78, "active_units": 25},
}


def build(name: str) -> VAE:
    """The network of every model, initialised from the global seed (the same weights for all)."""
    if name not in MODELS:
        raise ValueError(f"build: name must be one of {list(MODELS)}, got {name!r}")
    torch.manual_seed(SEED)
    return VAE.for_mnist()


def objective(name: str) -> ELBO | IWAEBound:
    """The training objective of model ``name``: the ELBO for K = 1, else the K-sample bound."""
    K = MODELS[name]
    return ELBO() if K == 1 else IWAEBound(K)


def checkpoint_metadata(name: str, epochs: int) -> dict:
    """What the checkpoint of ``name`` records besides its weights and build spec."""
    return {"name": name, "K": MODELS[name], "epochs": epochs, "command": COMMAND}


def lr_of_epoch(epoch: int) -> float:
    """The learning rate of a (0-based) epoch: the paper's stages, one epoch each."""
    return LR * 10 ** (-epoch / LR_DECAY_STAGES)


def test_data() -> torch.Tensor:
    """The 10k test images binarized once with a fixed seed: float32 ``[10000, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


def nll_subset_indices(n_test: int, n: int) -> torch.Tensor:
    """The indices of the NLL subset: the first ``n`` of a permutation seeded ``SUBSET_SEED``."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]


def generator(model: torch.nn.Module, seed: int) -> torch.Generator:
    """A generator on the model's device, seeded ``seed``."""
    device = next(model.parameters()).device
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def bounds_on(model: VAE, x: torch.Tensor, seed: int) -> dict:
    """Mean ELBO (``ELBO_SAMPLES`` samples, analytic KL), L_5 and L_50 over ``x`` (nats), and
    the active units."""
    model.eval()
    g = generator(model, seed)
    device = next(model.parameters()).device
    elbo, l5, l50, mus = [], [], [], []
    for xb in x.split(BOUNDS_BATCH):
        xb = xb.to(device)
        elbo.append(model.elbo(xb, n_samples=ELBO_SAMPLES, generator=g))
        l5.append(iwae_bound(model.log_weights(xb, 5, generator=g)))
        l50.append(iwae_bound(model.log_weights(xb, 50, generator=g)))
        mus.append(model.encode(xb)[0])
    au = active_units(torch.cat(mus).cpu(), AU_THRESHOLD)
    return {
        "elbo": float(torch.cat(elbo).mean()),
        "iwae_5": float(torch.cat(l5).mean()),
        "iwae_50": float(torch.cat(l50).mean()),
        "active_units": au.count,
        "mu_variance": [round(float(v), 6) for v in au.variances],
    }


def nll_on(model: VAE, x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """Per-image K-sample NLL estimate of ``x`` (nats), in batches of ``EVAL_BATCH``: ``[N]``."""
    model.eval()
    g = generator(model, seed)
    device = next(model.parameters()).device

    def log_weights(xb: torch.Tensor, k: int) -> torch.Tensor:
        return model.log_weights(xb, k, generator=g)

    out = []
    for xb in x.split(EVAL_BATCH):
        out.append(estimate_nll(log_weights, xb.to(device), K=K, chunk=NLL_CHUNK).cpu())
        print(f"    NLL: {sum(map(len, out))}/{len(x)} images", flush=True)
    return torch.cat(out)


def train_one(
    name: str, train_images: Tensor, x_test: Tensor, cfg: dict, out: Path, device: str | None = None
) -> tuple[VAE, list[dict], float]:
    """Train ``name`` for ``cfg['epochs']`` epochs (resumable from ``out/l05_resume``); return
    the model, its curves and the training time in seconds."""
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=LR, **ADAM)
    trainer = Trainer(model, opt, objective(name), LOG_EVERY, progress=False, device=device)
    n_train = cfg["n_train"]
    key = "elbo" if MODELS[name] == 1 else "iwae"  # the bound the objective maximises
    steps = len(range(0, n_train, BATCH)) // LOG_EVERY  # logged values per epoch

    def batches(epoch: int):
        # everything random in an epoch is derived from (SEED, epoch): a resumed run is identical
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # the reparametrization noise
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n_train, generator=g)  # the binarization continues this stream
        for group in opt.param_groups:
            group["lr"] = lr_of_epoch(epoch)
        return (
            binarize_dynamic(train_images[i], generator=g).unsqueeze(1) for i in order.split(BATCH)
        )

    x_curve = x_test[: cfg["n_curve"]]

    def on_epoch_end(tr: Trainer) -> None:
        # a small test curve: ELBO and L_50 on the first n_curve test images, fixed generators
        model.eval()
        with torch.no_grad():
            g = generator(model, SEED)
            xc = x_curve.to(tr.device)
            elbo = float(model.elbo(xc, generator=g).mean())
            l50 = float(iwae_bound(model.log_weights(xc, 50, generator=g)).mean())
        logged = tr.history[key][-steps:] if steps else []
        train_bound = sum(logged) / len(logged) if logged else None
        curves.append(
            {
                "epoch": tr.epoch,
                "lr": lr_of_epoch(tr.epoch - 1),
                "train_bound": train_bound,
                "test_elbo": elbo,
                "test_iwae_50": l50,
            }
        )
        print(
            f"  {name} epoch {tr.epoch}/{cfg['epochs']}: train bound {train_bound}  "
            f"test ELBO {elbo:.3f}  test L_50 {l50:.3f}",
            flush=True,
        )
        # the curves and the time travel with the training state, so a resumed run keeps them
        tr.save(resume, extra={"curves": curves, "train_seconds": time.perf_counter() - t0})

    resume = out / "l05_resume" / f"{name}.train.safetensors"
    meta = trainer.load(resume) if resume.is_file() else {}
    curves, t0 = meta.get("curves", []), time.perf_counter() - meta.get("train_seconds", 0.0)
    trainer.fit(batches, cfg["epochs"], on_epoch_end=on_epoch_end)
    return model, curves, time.perf_counter() - t0


def evaluate(
    name: str, i: int, model: VAE, x_test: torch.Tensor, x_nll: torch.Tensor, cfg: dict
) -> dict:
    """The test figures of one model (the ``test`` entry of the results), nats."""
    print(f"  {name}: test bounds and active units on {len(x_test)} images", flush=True)
    test = bounds_on(model, x_test, seed=SEED + 1)
    print(f"  {name}: NLL (K = {cfg['nll_K']}) on {len(x_nll)} test images", flush=True)
    nll = nll_on(model, x_nll, cfg["nll_K"], seed=SEED + 2 + i)
    test["nll"], test["nll_se"] = mean_se(nll)
    test["nll_notebook_subset"] = [round(float(v), 4) for v in nll[:N_NOTEBOOK]]
    return test


def settings(cfg: dict, n_test: int, n_nll: int) -> dict:
    """The settings block of the results."""
    return {
        "seed": SEED,
        "threads": THREADS,
        "architecture": "VAE.for_mnist(): 784-200-200-(50+50) tanh encoder, "
        "50-200-200-784 tanh Bernoulli decoder",
        "objectives": {n: "ELBO()" if K == 1 else f"IWAEBound({K})" for n, K in MODELS.items()},
        "data": "Fashion-MNIST, dynamically binarized for training, test set binarized "
        f"once with seed {TEST_BINARIZATION_SEED}",
        "n_train": cfg["n_train"],
        "epochs": cfg["epochs"],
        "batch_size": BATCH,
        "optimizer": f"Adam(betas={ADAM['betas']}, eps={ADAM['eps']})",
        "learning_rate": f"{LR} * 10^(-epoch/{LR_DECAY_STAGES}), epoch = 0, 1, ...",
        "test_bounds_images": n_test,
        "elbo_samples": ELBO_SAMPLES,
        "active_unit_threshold": AU_THRESHOLD,
        "nll_K": cfg["nll_K"],
        "nll_chunk": NLL_CHUNK,
        "nll_images": n_nll,
        "nll_subset": f"torch.randperm(10000, generator=torch.Generator()."
        f"manual_seed({SUBSET_SEED}))[:{n_nll}]",
        "notebook_subset": f"the first {N_NOTEBOOK} images of the NLL subset",
        "curve_images": cfg["n_curve"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    ap.add_argument("--device", default=None, help="default: $DGMLIB_DEVICE, else cpu")
    args = ap.parse_args(argv)
    out, device = Path(args.out), get_device(args.device)
    (out / "l05_resume").mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)
    cfg = QUICK if args.quick else FULL

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[: cfg["n_train"]]
    x_test = test_data()
    x_nll = x_test[nll_subset_indices(len(x_test), cfg["n_nll"])]

    models: dict = {}
    for i, name in enumerate(MODELS):
        print(f"[{name}] K = {MODELS[name]}, {cfg['epochs']} epochs", flush=True)
        cache = out / "l05_resume" / f"{name}.eval.json"
        ckpt = out / f"l05_{name}.safetensors"
        if cache.is_file() and ckpt.is_file():  # trained and evaluated before an interruption
            models[name] = read_json(cache)
            load_model_file(ckpt, models[name]["sha256"])  # verifies the file
            continue
        model, curves, seconds = train_one(name, train_images, x_test, cfg, out, str(device))
        digest = save_model(ckpt, model, **checkpoint_metadata(name, cfg["epochs"]))
        print(f"  {name}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        test = evaluate(name, i, model, x_test, x_nll, cfg)
        models[name] = {
            "checkpoint": ckpt.name,
            "sha256": digest,
            "n_params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 1),
            "K_train": MODELS[name],
            "test": test,
            "curves": curves,
            "burda2016_table1_mnist": BURDA_TABLE1_MNIST[name],
        }
        atomic_write_json(cache, models[name])
        print(
            f"  {name}: ELBO {test['elbo']:.3f}  L_5 {test['iwae_5']:.3f}  "
            f"L_50 {test['iwae_50']:.3f}  active units {test['active_units']}  "
            f"NLL {test['nll']:.3f} +- {test['nll_se']:.3f} nats",
            flush=True,
        )

    path = write_results(
        out, "l05", LECTURE, COMMAND, settings(cfg, len(x_test), len(x_nll)), models, args.quick
    )
    shutil.rmtree(out / "l05_resume", ignore_errors=True)
    print("wrote", path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
