"""Train the VAE and the IWAEs (K = 5, 50) of Lecture 05, evaluate them, write checkpoints.

Usage: python tools/train_lecture05.py [--out data/checkpoints] [--quick] [--device cpu] [--long]
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

``--long`` runs the other part: the VAE and the IWAE (K = 5) trained for ``LONG_EPOCHS`` epochs
instead of ``EPOCHS`` (about 25 minutes on one thread of a busy two-core CPU, 7 of them CPU time),
to see whether each wins on its own objective once trained longer. The run repeats the lecture's
recipe up to epoch ``EPOCHS`` (same initial weights, data order, noise and learning rates; the
stored ``l05_<model>`` were made by an earlier version of the code, so the script records how far
its weights there are from theirs), then follows the learning-rate schedule through Burda et
al.'s last stage and stays at its rate. After every epoch a snapshot of each model is kept; at
the end every pair of snapshots of the same epoch is evaluated on the same ``n_eval`` test images
with the same random draws: the per-image ELBO (``ELBO_SAMPLES`` samples, analytic KL) and L_5,
and the paired differences with their standard errors; the lecture's ``l05_vae`` and
``l05_iwae5`` are compared the same way. It writes ``l05_<model>_long.safetensors`` and
``l05_long_results.json`` (``dgmlib.pretrained.results("l05_long")``), and resumes from
``<out>/l05_long_resume/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.bounds import estimate_nll, iwae_bound  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.diagnostics import active_units  # noqa: E402
from dgmlib.io import atomic_write_json, load_checkpoint, read_json  # noqa: E402
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
# --long: the VAE and the IWAE (K = 5) trained longer, compared on the bound each maximises
LONG_COMMAND = "python tools/train_lecture05.py --long"
LONG_MODELS = ("vae", "iwae5")  # the pair whose L_5 the lecture finds level after EPOCHS epochs
LONG_EPOCHS = 15  # Burda et al.'s 8 learning-rate stages (one epoch each), then 7 at the last rate
LONG_EVAL_SEED = 10  # generator of the per-epoch bounds: the same draws for both models
LONG = {"epochs": LONG_EPOCHS, "n_train": 60_000, "n_curve": 1000, "n_eval": 10_000}
LONG_QUICK = {"epochs": 2, "n_train": 1000, "n_curve": 200, "n_eval": 200}
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


def checkpoint_metadata(name: str, epochs: int, long: bool = False) -> dict:
    """What the checkpoint of ``name`` (``long``: of the ``--long`` run) records besides its
    weights and build spec."""
    if long:
        return {
            "name": f"{name}_long",
            "K": MODELS[name],
            "epochs": epochs,
            "command": LONG_COMMAND,
        }
    return {"name": name, "K": MODELS[name], "epochs": epochs, "command": COMMAND}


def lr_of_epoch(epoch: int) -> float:
    """The learning rate of a (0-based) epoch: the paper's stages ``i = 0, ..., 7``, one epoch
    each, then the last stage's rate (Burda et al.'s last stage is the longest)."""
    return LR * 10 ** (-min(epoch, LR_DECAY_STAGES) / LR_DECAY_STAGES)


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
    name: str,
    train_images: Tensor,
    x_test: Tensor,
    cfg: dict,
    out: Path,
    device: str | None = None,
    resume: Path | None = None,
    snapshot: Callable[[Trainer], None] | None = None,
) -> tuple[VAE, list[dict], float]:
    """Train ``name`` for ``cfg['epochs']`` epochs, resumable from the training state ``resume``
    (default ``out/l05_resume/<name>.train.safetensors``), calling ``snapshot(trainer)`` after
    every epoch; return the model, its curves and the training time in seconds."""
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
        if snapshot is not None:  # before the state: a resumed run never lacks a snapshot
            snapshot(tr)
        # the curves and the time travel with the training state, so a resumed run keeps them
        tr.save(resume, extra={"curves": curves, "train_seconds": time.perf_counter() - t0})

    if resume is None:
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


# --------------------------------------------------------------------------------------------
# --long: the VAE and the IWAE (K = 5) trained longer, each compared on its own bound
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def per_image_bounds(model: VAE, x: Tensor, seed: int) -> dict[str, Tensor]:
    """Per-image ``elbo`` (``ELBO_SAMPLES`` samples, analytic KL) and ``iwae_5`` (L_5) of ``x``:
    float64 ``[N]`` each, nats. The draws come from one generator seeded ``seed``, so two models
    with the same latent size see the same noise."""
    model.eval()
    g = generator(model, seed)
    device = next(model.parameters()).device
    elbo, l5 = [], []
    for xb in x.split(BOUNDS_BATCH):
        xb = xb.to(device)
        elbo.append(model.elbo(xb, n_samples=ELBO_SAMPLES, generator=g).cpu())
        l5.append(iwae_bound(model.log_weights(xb, 5, generator=g)).cpu())
    return {"elbo": torch.cat(elbo).double(), "iwae_5": torch.cat(l5).double()}


def compare_epoch(vae: VAE, iwae5: VAE, x: Tensor, epoch: int) -> dict:
    """One epoch of the comparison on the images ``x``: each model's mean ELBO and L_5, and each
    model's lead on the bound it maximises, ``elbo_vae_minus_iwae5`` and
    ``iwae_5_iwae5_minus_vae``, paired over the images, with standard errors (``_se``); nats."""
    a = per_image_bounds(vae, x, LONG_EVAL_SEED)
    b = per_image_bounds(iwae5, x, LONG_EVAL_SEED)
    d_elbo, d_elbo_se = mean_se(a["elbo"] - b["elbo"])
    d_l5, d_l5_se = mean_se(b["iwae_5"] - a["iwae_5"])
    return {
        "epoch": epoch,
        "vae": {k: float(v.mean()) for k, v in a.items()},
        "iwae5": {k: float(v.mean()) for k, v in b.items()},
        "elbo_vae_minus_iwae5": d_elbo,
        "elbo_vae_minus_iwae5_se": d_elbo_se,
        "iwae_5_iwae5_minus_vae": d_l5,
        "iwae_5_iwae5_minus_vae_se": d_l5_se,
    }


def weight_difference(a: Path, b: Path) -> dict:
    """How far the weights stored in checkpoint ``a`` are from those in ``b``: ``bitwise_equal``
    and ``max_abs_difference`` (the largest over all entries)."""
    ta, tb = load_checkpoint(a)[0], load_checkpoint(b)[0]
    if ta.keys() != tb.keys():
        raise ValueError(f"{a.name} and {b.name} hold different tensors")
    return {
        "bitwise_equal": all(torch.equal(ta[k], tb[k]) for k in ta),
        "max_abs_difference": max(float((ta[k] - tb[k]).abs().max()) for k in ta),
    }


def long_settings(cfg: dict, n_eval: int) -> dict:
    """The settings block of the ``--long`` results."""
    return {
        "seed": SEED,
        "threads": THREADS,
        "architecture": "VAE.for_mnist(): 784-200-200-(50+50) tanh encoder, "
        "50-200-200-784 tanh Bernoulli decoder",
        "objectives": {
            f"{n}_long": "ELBO()" if MODELS[n] == 1 else f"IWAEBound({MODELS[n]})"
            for n in LONG_MODELS
        },
        "data": "Fashion-MNIST, dynamically binarized for training, test set binarized "
        f"once with seed {TEST_BINARIZATION_SEED}",
        "n_train": cfg["n_train"],
        "epochs": cfg["epochs"],
        "lecture_epochs": EPOCHS,
        "batch_size": BATCH,
        "optimizer": f"Adam(betas={ADAM['betas']}, eps={ADAM['eps']})",
        "learning_rate": f"{LR} * 10^(-min(epoch, {LR_DECAY_STAGES})/{LR_DECAY_STAGES}), "
        "epoch = 0, 1, ...",
        "eval_images": n_eval,
        "eval_subset": f"the first {n_eval} test images (binarized once, as above)",
        "eval_seed": LONG_EVAL_SEED,
        "elbo_samples": ELBO_SAMPLES,
        "curve_images": cfg["n_curve"],
    }


def run_long(
    train_images: Tensor,
    x_test: Tensor,
    cfg: dict,
    out: Path,
    device: str | None = None,
    quick: bool = False,
) -> Path:
    """The ``--long`` run (see the module docstring): train ``LONG_MODELS`` for ``cfg['epochs']``
    epochs, keeping a snapshot after every epoch; compare the two snapshots of every epoch on the
    first ``cfg['n_eval']`` images of ``x_test``; write the checkpoints and
    ``l05_long_results.json`` into ``out`` and return its path. Resumable from
    ``out/l05_long_resume``, removed at the end."""
    work = out / "l05_long_resume"
    epochs = cfg["epochs"]

    def run(key: str, ckpt: Path) -> dict:
        name = key.removesuffix("_long")
        print(f"[{key}] K = {MODELS[name]}, {epochs} epochs", flush=True)

        def snapshot(tr: Trainer) -> None:
            path = work / f"{name}.epoch{tr.epoch}.safetensors"
            experiment.save_model(path, tr.model, name=name, epoch=tr.epoch)

        model, curves, seconds = train_one(
            name,
            train_images,
            x_test,
            cfg,
            out,
            device,
            work / f"{name}.train.safetensors",
            snapshot,
        )
        digest = experiment.save_model(ckpt, model, **checkpoint_metadata(name, epochs, long=True))
        print(f"  {key}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        lecture = out / f"l05_{name}.safetensors"
        # the lecture's model against this run's epoch EPOCHS (not in a smoke test)
        versus = {"file": lecture.name, "epoch": EPOCHS}
        if not quick and epochs >= EPOCHS and lecture.is_file():
            versus |= weight_difference(work / f"{name}.epoch{EPOCHS}.safetensors", lecture)
            print(f"  {key}: epoch {EPOCHS} against {lecture.name}: {versus}", flush=True)
        fields = {"K_train": MODELS[name], "curves": curves, "lecture_checkpoint": versus}
        return experiment.model_entry(ckpt, digest, model, round(seconds, 1), **fields)

    models = experiment.train_each([f"{name}_long" for name in LONG_MODELS], out, "l05", work, run)

    x_eval = x_test[: cfg["n_eval"]]
    t0, rows = time.perf_counter(), []
    for epoch in range(1, epochs + 1):
        cache = work / f"compare.epoch{epoch}.json"
        if not cache.is_file():
            pair = [
                experiment.load_model_file(work / f"{n}.epoch{epoch}.safetensors").to(device)
                for n in LONG_MODELS
            ]
            atomic_write_json(cache, compare_epoch(*pair, x_eval, epoch))
        rows.append(read_json(cache))
        r = rows[-1]
        print(
            f"  epoch {epoch:2d}: ELBO VAE - IWAE(5) {r['elbo_vae_minus_iwae5']:+.3f} +- "
            f"{r['elbo_vae_minus_iwae5_se']:.3f}   L_5 IWAE(5) - VAE "
            f"{r['iwae_5_iwae5_minus_vae']:+.3f} +- {r['iwae_5_iwae5_minus_vae_se']:.3f} nats",
            flush=True,
        )
    # the lecture's models, made by the main run (not in a smoke test), on the same images
    lecture_pair = None
    if not quick and all((out / f"l05_{n}.safetensors").is_file() for n in LONG_MODELS):
        cache = work / "compare.lecture.json"
        if not cache.is_file():
            pair = [
                experiment.load_model_file(out / f"l05_{n}.safetensors").to(device)
                for n in LONG_MODELS
            ]
            atomic_write_json(cache, compare_epoch(*pair, x_eval, EPOCHS))
        lecture_pair = read_json(cache)
    print(f"  comparison on {len(x_eval)} images: {time.perf_counter() - t0:.0f} s", flush=True)
    for name in LONG_MODELS:
        entry = models[f"{name}_long"]
        for curve, r in zip(entry["curves"], rows, strict=True):
            curve["eval_elbo"], curve["eval_iwae_5"] = r[name]["elbo"], r[name]["iwae_5"]
        entry["test"] = dict(rows[-1][name])  # the last epoch, on the comparison's images
    models["iwae5_long"]["paired_with_vae_long"] = [
        {k: v for k, v in r.items() if k not in LONG_MODELS} for r in rows
    ]
    # the same comparison of the lecture's l05_vae and l05_iwae5 (epoch EPOCHS of the main run)
    models["iwae5_long"]["lecture_models_compared"] = lecture_pair
    settings_long = long_settings(cfg, len(x_eval))
    path = experiment.write_results(
        out, "l05_long", LECTURE, LONG_COMMAND, settings_long, models, quick, work
    )
    print("wrote", path, flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    ap.add_argument("--device", default=None, help="default: $DGMLIB_DEVICE, else cpu")
    ap.add_argument("--long", action="store_true", help="the longer run of the VAE and IWAE(5)")
    args = ap.parse_args(argv)
    out, device = Path(args.out), get_device(args.device)
    seed_everything(SEED, threads=THREADS)
    if args.long:
        cfg = LONG_QUICK if args.quick else LONG
        train_images, _ = load_fashion_mnist("train")
        run_long(train_images[: cfg["n_train"]], test_data(), cfg, out, str(device), args.quick)
        return 0
    cfg = QUICK if args.quick else FULL

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[: cfg["n_train"]]
    x_test = test_data()
    x_nll = x_test[nll_subset_indices(len(x_test), cfg["n_nll"])]

    def run(name: str, ckpt: Path) -> dict:
        print(f"[{name}] K = {MODELS[name]}, {cfg['epochs']} epochs", flush=True)
        model, curves, seconds = train_one(name, train_images, x_test, cfg, out, str(device))
        digest = experiment.save_model(ckpt, model, **checkpoint_metadata(name, cfg["epochs"]))
        print(f"  {name}: wrote {ckpt.name} (sha256 {digest[:12]}...)", flush=True)
        test = evaluate(name, list(MODELS).index(name), model, x_test, x_nll, cfg)
        print(
            f"  {name}: ELBO {test['elbo']:.3f}  L_5 {test['iwae_5']:.3f}  "
            f"L_50 {test['iwae_50']:.3f}  active units {test['active_units']}  "
            f"NLL {test['nll']:.3f} +- {test['nll_se']:.3f} nats",
            flush=True,
        )
        paper = BURDA_TABLE1_MNIST[name]
        fields = {"K_train": MODELS[name], "test": test, "curves": curves}
        return experiment.model_entry(
            ckpt, digest, model, round(seconds, 1), **fields, burda2016_table1_mnist=paper
        )

    models = experiment.train_each(MODELS, out, "l05", out / "l05_resume", run)

    settings_run = settings(cfg, len(x_test), len(x_nll))
    path = experiment.write_results(
        out, "l05", LECTURE, COMMAND, settings_run, models, args.quick, out / "l05_resume"
    )
    print("wrote", path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
