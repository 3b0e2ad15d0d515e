"""Train the models of Lecture 11 (hierarchical VAEs): two-layer VAEs on Fashion-MNIST with
bottom-up and top-down inference, and an enumerable binary hierarchy on 8 x 8 digits.

Usage: python tools/train_lecture11.py [--out data/checkpoints] [--part fmnist|binary|all]
[--device cpu] [--quick]   (``make checkpoints`` runs it with the defaults.)

* ``fmnist``: :func:`dgmlib.models.hierarchical.two_layer_vae` with ``ARCH``, for each of the
  four ``VARIANTS`` (bottom-up or top-down inference, with or without a linear KL warm-up over
  the first ``WARMUP_STEPS`` steps) and each seed of ``SEEDS``: 12 models
  ``l11_<variant>_s<seed>``. Training: the 60k Fashion-MNIST training images, dynamically
  binarized (a fresh Bernoulli draw every epoch), mini-batches in the order of
  ``dgmlib.epoch_order``, Adam, the ELBO of ``dgmlib.objectives.ELBO`` with one
  sample (its ``kl_weight`` set by ``dgmlib.kl_control.scheduled`` for the warm-up variants).
  Evaluation on the first ``N_EVAL`` test images binarized once with seed 0
  (``dgmlib.models.hierarchical.layer_statistics``: ELBO, per-layer KL terms, active units per
  layer) and an importance-sampled ``nll`` with ``NLL_K`` samples on the first ``NLL_IMAGES``;
  after every epoch the same statistics on ``CURVE_IMAGES`` test images (``curves``).
* ``binary``: :class:`dgmlib.models.binary_hierarchy.BinaryHierarchyVAE` (64 pixels, 8 + 4
  binary latents) on the first ``BIN_N_TRAIN`` of scikit-learn's 8 x 8 digits binarized at 1/2,
  trained with exact gradients (every latent state enumerated, no sampling), full passes in
  mini-batches of ``BIN_BATCH``; two models: ``l11_binary_elbo`` (everything trained on the exact
  ELBO, as a VAE is) and ``l11_binary_ml`` (the generative model trained on the exact
  log-likelihood, the encoder on the exact ELBO of that model). Evaluation on the remaining
  digits: exact ``log p(x)``, the ELBO and its terms, the gap split by layer.

Everything is deterministic: one CPU thread, every random draw of an epoch derived from (seed,
epoch), so an interrupted run resumes where it stopped with identical results: each model's
training state is saved after every epoch under ``<out>/l11_resume/`` together with the entries
of the finished models (the folder is removed at the end). Outputs in ``--out``:
``l11_<name>.safetensors`` (weights with the build spec: ``dgmlib.pretrained.load(name)``) with
``.sha256`` sidecars, ``l11_results.json`` (the schema of ``dgmlib.experiment``; per model
``train_seconds`` is CPU time of the training epochs) and the manifest entries.

Runtime (measured, one thread): about 14 minutes of CPU time in all -- each Fashion-MNIST model
55 to 67 s of training (8 epochs) plus about 10 s of evaluation, each binary model about 45 s;
at ``nice -n 10`` on a two-core machine shared with other heavy jobs (load about 10) that took
67 minutes of wall time. Re-running reproduces the stored files bit for bit on the same platform.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.bounds import estimate_nll  # noqa: E402
from dgmlib.data import (  # noqa: E402
    binarize_dynamic,
    binarize_fixed,
    binarize_threshold,
    load_digits,
    load_fashion_mnist,
)
from dgmlib.io import atomic_write_json, read_json, sha256_file  # noqa: E402
from dgmlib.kl_control import linear_warmup, scheduled  # noqa: E402
from dgmlib.models.binary_hierarchy import BinaryHierarchyVAE  # noqa: E402
from dgmlib.models.hierarchical import layer_statistics, two_layer_vae  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.stats import mean_se  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import get_device, seed_everything  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture11.py"
LECTURE = "11_hierarchical_vae"
THREADS = 1  # one CPU thread: the float32 sums are the same on every run

# the Fashion-MNIST two-layer VAEs
SEEDS = (0, 1, 2)  # torch's seed before each model is built; each epoch's draws derive from it
ARCH = {"z1_dim": 32, "z2_dim": 16, "hidden": 200, "hidden_top": 100}  # two_layer_vae
VARIANTS = {  # name -> (inference, KL warm-up)
    "bottomup": ("bottom-up", False),
    "bottomup_warmup": ("bottom-up", True),
    "topdown": ("top-down", False),
    "topdown_warmup": ("top-down", True),
}
EPOCHS = 8  # passes over the 60k training images
BATCH = 100
LR = 1e-3  # Adam, constant
WARMUP_STEPS = 1200  # the KL weight rises linearly from 0 to 1 over these steps (2 epochs)
LOG_EVERY = 100  # steps per logged mean of the training terms
N_EVAL = 2000  # first test images of the test figures (binarized once with seed 0)
EVAL_SAMPLES = 20  # latent draws per image for the ELBO and its per-layer terms
MEAN_SAMPLES = 100  # draws per image for the posterior means of the active units
EVAL_SEED = 11
NLL_K = 100  # importance samples of the nll estimate ...
NLL_IMAGES = 1000  # ... on the first test images
NLL_SEED = 12
CURVE_IMAGES = 500  # test images of the per-epoch statistics
CURVE_SEED = 13
CHECK_IMAGES = 200  # test images of the figure the tests recompute (kl_z2, 4 draws each)
CHECK_SEED = 14

# the binary hierarchy on 8 x 8 digits
BIN_ARCH = {"x_dim": 64, "z1_dim": 8, "z2_dim": 4}  # BinaryHierarchyVAE
BIN_MODES = ("elbo", "ml")  # what the generative model is trained on (the encoder: the ELBO)
BIN_SEED = 0
BIN_N_TRAIN = 1500  # the remaining 297 digits are the test set
BIN_EPOCHS = 150
BIN_BATCH = 100
BIN_LR = 1e-2  # Adam, constant
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def fmnist_name(variant: str, seed: int) -> str:
    """The checkpoint name of a Fashion-MNIST model, e.g. ``l11_topdown_warmup_s1``."""
    return f"l11_{variant}_s{seed}"


def build_fmnist(variant: str, seed: int) -> torch.nn.Module:
    """A freshly initialised two-layer VAE (weights depend only on ``seed``)."""
    torch.manual_seed(seed)
    return two_layer_vae(VARIANTS[variant][0], **ARCH)


def fmnist_test_set(n: int) -> torch.Tensor:
    """The first ``n`` test images binarized once with seed 0: ``[n, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images[:n], seed=0).unsqueeze(1)


@torch.no_grad()
def check_figure(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The figure ``check_kl_z2`` that the tests recompute from the stored weights: the mean
    top-layer term ``kl_z2`` over ``x`` with 4 draws per image from ``CHECK_SEED``, nats."""
    g = torch.Generator().manual_seed(CHECK_SEED)
    return float(model.terms(x, 4, g)["kl_z2"].mean())


def fmnist_eval(model: torch.nn.Module, x: torch.Tensor, n_samples: int, seed: int) -> dict:
    """:func:`layer_statistics` on ``x`` with draws from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return layer_statistics(model, x, n_samples, MEAN_SAMPLES, generator=g)


def train_fmnist_one(
    variant: str,
    seed: int,
    train_images: torch.Tensor,
    x_curve: torch.Tensor,
    epochs: int,
    resume_file: Path,
    device: str,
) -> tuple[torch.nn.Module, list[dict], float]:
    """Train one model, resuming from ``resume_file``; return (model, curves, CPU seconds)."""
    model = build_fmnist(variant, seed)
    objective = ELBO()
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=LR),
        objective,
        log_every=LOG_EVERY,
        progress=False,
        device=device,
    )
    n = len(train_images)
    curves: list[dict] = []
    cpu = [0.0, time.process_time()]

    def batches(epoch: int):
        # every draw of an epoch derives from (seed, epoch): a resumed run is identical
        torch.manual_seed(20_000 * (seed + 1) + epoch)  # the reparametrization noise
        g = torch.Generator().manual_seed(10_000 * (seed + 1) + epoch)  # the binarization
        order = experiment.epoch_order(n, epoch, seed)
        for start in range(0, n, BATCH):
            yield binarize_dynamic(train_images[order[start : start + BATCH]], g).unsqueeze(1)

    if VARIANTS[variant][1]:
        batches = scheduled(batches, trainer, partial(linear_warmup, warmup_steps=WARMUP_STEPS))

    def on_epoch_end(tr: Trainer) -> None:
        cpu[0] += time.process_time() - cpu[1]
        model.cpu().eval()
        row = {"epoch": tr.epoch, "kl_weight": objective.kl_weight}
        row.update(fmnist_eval(model, x_curve, 4, CURVE_SEED))
        model.to(tr.device)
        curves.append(row)
        tr.state.update(curves=curves, cpu_seconds=cpu[0])  # saved with the checkpoint
        tr.save(resume_file)
        log(f"  {fmnist_name(variant, seed)} epoch {tr.epoch}/{epochs}: {row}")
        cpu[1] = time.process_time()

    if resume_file.is_file():
        trainer.load(resume_file)
        curves.extend(trainer.state.get("curves", []))
        cpu[0] = float(trainer.state.get("cpu_seconds", 0.0))
        if VARIANTS[variant][1]:
            objective.kl_weight = linear_warmup(trainer.step, WARMUP_STEPS)
        log(f"  {fmnist_name(variant, seed)}: resuming after epoch {trainer.epoch}")
    trainer.fit(batches, epochs, on_epoch_end=on_epoch_end)  # the state is saved above
    return model.cpu().eval(), curves, cpu[0]


def run_fmnist(out: Path, quick: bool, device: str, resume_dir: Path) -> dict:
    train_images, _ = load_fashion_mnist("train")
    n_eval, nll_images, curve_images = N_EVAL, NLL_IMAGES, CURVE_IMAGES
    seeds, epochs = SEEDS, EPOCHS
    if quick:
        train_images, seeds, epochs = train_images[:500], SEEDS[:1], 1
        n_eval, nll_images, curve_images = 100, 50, 50
    x_test = fmnist_test_set(max(n_eval, nll_images, CHECK_IMAGES))
    done_file = resume_dir / "done.json"
    models = {k: v for k, v in finished(out, done_file, "l11_").items() if "binary" not in k}
    for seed in seeds:
        for variant in VARIANTS:
            name = fmnist_name(variant, seed)
            path = out / f"{name}.safetensors"
            if name in models:
                log(f"  {name}: done before, kept")
                continue
            seed_everything(seed, threads=THREADS)
            model, curves, cpu_seconds = train_fmnist_one(
                variant,
                seed,
                train_images,
                x_test[:curve_images],
                epochs,
                resume_dir / f"{name}.train.safetensors",
                device,
            )
            test = fmnist_eval(model, x_test[:n_eval], EVAL_SAMPLES, EVAL_SEED)
            torch.manual_seed(NLL_SEED)
            nll, nll_se = mean_se(estimate_nll(model.log_weights, x_test[:nll_images], NLL_K, 50))
            test.update({"nll": nll, "nll_se": nll_se})
            inference, warmup = VARIANTS[variant]
            digest = experiment.save_model(
                path, model, command=COMMAND, variant=variant, seed=seed, epochs=epochs
            )
            models[name] = experiment.model_entry(
                path,
                digest,
                model,
                round(cpu_seconds, 1),
                variant=variant,
                inference=inference,
                kl_warmup=warmup,
                seed=seed,
                test=test,
                check_kl_z2=check_figure(model, x_test[:CHECK_IMAGES]),
                curves=curves,
            )
            save_finished(done_file, {name: models[name]})
            (resume_dir / f"{name}.train.safetensors").unlink(missing_ok=True)
            log(f"  {name}: {test}")
    return models


def finished(out: Path, done_file: Path, prefix: str) -> dict:
    """The entries of the models named ``prefix...`` finished before an interruption (with
    their checkpoint intact)."""
    done = read_json(done_file) if done_file.is_file() else {}
    return {
        k: v
        for k, v in done.items()
        if k.startswith(prefix)
        and (out / v["checkpoint"]).is_file()
        and sha256_file(out / v["checkpoint"]) == v["sha256"]
    }


def save_finished(done_file: Path, models: dict) -> None:
    """Add ``models`` to the entries of finished models."""
    done = read_json(done_file) if done_file.is_file() else {}
    atomic_write_json(done_file, {**done, **models})


def binary_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 x 8 digits binarized at 1/2, float64 ``[N, 64]``: (train, test)."""
    images, _ = load_digits()
    x = binarize_threshold(images).reshape(len(images), -1).to(torch.float64)
    return x[:BIN_N_TRAIN], x[BIN_N_TRAIN:]


def binary_objective(mode: str):
    """``elbo``: the model's own exact-ELBO loss; ``ml``: minus the exact log-likelihood for the
    generative model plus minus the exact ELBO for the encoder alone."""
    if mode == "elbo":
        return None

    def ml(model: BinaryHierarchyVAE, x: torch.Tensor) -> dict:
        log_px = model.log_prob(x).mean()
        t = {k: v.mean() for k, v in model.elbo_terms(x, detach=True).items()}
        return {"loss": -log_px - t["elbo"], "log_px": log_px, **t}

    return ml


@torch.no_grad()
def binary_eval(model: BinaryHierarchyVAE, x: torch.Tensor) -> dict:
    """Exact test figures, nats per image: ``nll`` = -log p(x), the ELBO and its terms, the gap
    split by layer (``gap_top``, ``gap_bottom``) and the top layer's information under the model,
    ``kl_posterior_z2`` = E_x KL(p(z2 | x) || p(z2))."""
    t = model.elbo_terms(x)
    gaps = model.posterior_kls(x)
    log_p2, _ = model.posterior(x)
    info2 = (log_p2.exp() * (log_p2 - model.log_pz2())).sum(-1)
    return {
        "nll": float(-model.log_prob(x).mean()),
        **{k: float(v.mean()) for k, v in t.items()},
        "gap_top": float(gaps["top"].mean()),
        "gap_bottom": float(gaps["bottom"].mean()),
        "kl_posterior_z2": float(info2.mean()),
    }


def run_binary(out: Path, quick: bool, device: str, resume_dir: Path) -> dict:
    x_train, x_test = binary_data()
    epochs = 2 if quick else BIN_EPOCHS
    done_file = resume_dir / "done.json"
    models = finished(out, done_file, "l11_binary_")
    for mode in BIN_MODES:
        name = f"l11_binary_{mode}"
        if name in models:
            log(f"  {name}: done before, kept")
            continue
        seed_everything(BIN_SEED, threads=THREADS)
        model = experiment.make(BinaryHierarchyVAE, **BIN_ARCH)
        trainer = Trainer(
            model,
            torch.optim.Adam(model.parameters(), lr=BIN_LR),
            binary_objective(mode),
            log_every=5,
            progress=False,
            device=device,
        )
        n = len(x_train)

        def batches(epoch: int, n: int = n):
            order = experiment.epoch_order(n, epoch, BIN_SEED)
            return [x_train[order[s : s + BIN_BATCH]] for s in range(0, n, BIN_BATCH)]

        t0 = time.process_time()
        trainer.fit(batches, epochs, checkpoint=resume_dir / f"{name}.train.safetensors")
        cpu_seconds = time.process_time() - t0
        model.cpu().eval()
        test = binary_eval(model, x_test)
        digest = experiment.save_model(
            out / f"{name}.safetensors", model, command=COMMAND, mode=mode
        )
        steps = trainer.history["step"]
        models[name] = experiment.model_entry(
            f"{name}.safetensors",
            digest,
            model,
            round(cpu_seconds, 1),
            mode=mode,
            test=test,
            train=binary_eval(model, x_train),
            curves=[
                {"step": int(s), "elbo": e}
                for s, e in zip(steps, trainer.history["elbo"], strict=True)
                if int(s) % 150 == 0
            ],
        )
        save_finished(done_file, {name: models[name]})
        log(f"  {name}: {test}")
    return models


def settings() -> dict:
    return {
        "threads": THREADS,
        "fmnist": {
            "seeds": list(SEEDS),
            "arch": ARCH,
            "variants": {k: list(v) for k, v in VARIANTS.items()},
            "data": "Fashion-MNIST train, dynamically binarized; test binarized once (seed 0)",
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "learning_rate": LR,
            **experiment.config_values(
                globals(), "WARMUP_STEPS N_EVAL EVAL_SAMPLES MEAN_SAMPLES EVAL_SEED"
            ),
            "active_unit_threshold": 0.01,
            **experiment.config_values(
                globals(),
                "NLL_K NLL_IMAGES NLL_SEED CURVE_IMAGES CURVE_SEED CHECK_IMAGES CHECK_SEED",
            ),
        },
        "binary": {
            "arch": BIN_ARCH,
            "modes": list(BIN_MODES),
            "data": "sklearn digits binarized at 1/2; first BIN_N_TRAIN train, rest test",
            "n_train": BIN_N_TRAIN,
            "seed": BIN_SEED,
            "epochs": BIN_EPOCHS,
            "batch_size": BIN_BATCH,
            "learning_rate": BIN_LR,
        },
    }


def write(out: Path, models: dict, quick: bool) -> Path:
    """Write ``l11_results.json``, keeping the models of the part not run now."""
    path = out / "l11_results.json"
    if path.is_file():
        doc = read_json(path)
        if doc.get("quick") == quick:
            models = {**doc["models"], **models}
    return experiment.write_results(out, "l11", LECTURE, COMMAND, settings(), models, quick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--part", choices=("fmnist", "binary", "all"), default="all")
    ap.add_argument("--device", default=str(get_device()), help="default: $DGMLIB_DEVICE or cpu")
    ap.add_argument("--quick", action="store_true", help="a tiny smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    resume_dir = out / "l11_resume"
    resume_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models: dict = {}
    if args.part in ("binary", "all"):
        models.update(run_binary(out, args.quick, args.device, resume_dir))
    if args.part in ("fmnist", "all"):
        models.update(run_fmnist(out, args.quick, args.device, resume_dir))
    path = write(out, models, args.quick)
    shutil.rmtree(resume_dir, ignore_errors=True)
    log(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
