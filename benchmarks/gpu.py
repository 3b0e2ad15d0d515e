"""The GPU measurements of the course; ``benchmarks/gpu.sh`` runs them (``make gpu``).

On a machine with a CUDA GPU this measures, and writes into one JSON file
(``benchmarks/results/gpu.json``):

* ``environment``: the GPU's name and compute capability, the torch, CUDA and triton versions;
* ``tests``: the outcome of the CUDA-only tests, which ``gpu.sh`` ran (``--tests JUNIT.xml``);
* ``kernels``: the GPU half of ``benchmarks/kernels.py`` (:func:`kernels.gpu_suite`): every
  Triton kernel against its torch path and ``torch.compile``, timed, with its peak memory, its
  largest error against a float64 reference, and its rate against the measured roofline;
* ``epochs``: one training epoch of the Lecture 05 models (the VAE with the ELBO, the IWAE with
  K = 5) on the 60 000 dynamically binarized Fashion-MNIST training images, through
  :class:`dgmlib.train.Trainer` with ``DGMLIB_DEVICE=cuda``, once with the automatic backend (the
  objectives call the fused Triton kernels) and once with ``backend="torch"``: the epoch's time,
  mean and last logged loss (nats), peak memory, and whether the fused kernel ran.

Usage::

    python benchmarks/gpu.py --probe                  # exit 0: a GPU (its name); 3: none (why)
    python benchmarks/gpu.py --tests JUNIT.xml --out benchmarks/results/gpu.json [--quick]
    python benchmarks/gpu.py --dry-run --out OUT.json # the same code on the CPU, tiny sizes

``--dry-run`` runs every step on the CPU with tiny sizes, Triton in its interpreter and
``torch.compile(backend="eager")``: it checks this program where there is no GPU (the tests do),
and its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

NO_GPU = 3  # exit status of --probe where there is no CUDA GPU
BROKEN = 2  # exit status of --probe where there is a GPU but the set-up cannot use it
SEED = 0
BATCH = 100  # the Lecture 05 training settings: mini-batches of 100, Adam(1e-3, eps=1e-4)
LR = 1e-3
ADAM = {"betas": (0.9, 0.999), "eps": 1e-4}
LOG_EVERY = 100
WARMUP_STEPS = 10  # untimed steps on a copy first: Triton compilation, cuBLAS start-up
DRY_RUN_IMAGES = 300
KERNEL_NODES = {"ELBO": "RsampleKLBackward", "IWAEBound": "LogSumExpSoftmaxBackward"}


def probe() -> tuple[int, str]:
    """``(status, text)``: 0 and the GPU's name; NO_GPU and why none is usable; BROKEN and why a
    GPU that is there cannot be used."""
    import torch

    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = f"torch {torch.__version__} is a CPU-only build"
        else:
            why = (
                f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device "
                f"(torch.cuda.device_count() = {torch.cuda.device_count()}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})"
            )
        return NO_GPU, why
    from dgmlib.kernels import triton_available

    if not triton_available():
        return BROKEN, (
            f"{torch.cuda.get_device_name()} found, but triton does not import "
            "(pip install -r requirements.txt)"
        )
    return 0, torch.cuda.get_device_name()


def environment(device) -> dict:
    """What ran: the device, its compute capability, and the library versions."""
    import torch
    import triton

    env = dict(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton.__version__,
        python=platform.python_version(),
        device="cpu (dry run)",
    )
    if device.type == "cuda":  # pragma: no cover - needs a GPU
        major, minor = torch.cuda.get_device_capability(device)
        env.update(
            device=torch.cuda.get_device_name(device),
            capability=f"{major}.{minor}",
            memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1),
        )
    return env


def test_outcome(junit: Path | None) -> dict:
    """Counts (and failing test ids) from the JUnit XML that pytest wrote."""
    if junit is None:
        return dict(summary="not run")
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    counts["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    bad = counts["failures"] + counts["errors"]
    return dict(
        counts,
        passed=passed,
        failed_ids=failed,
        summary=f"{passed} passed, {bad} failed, {counts['skipped']} skipped",
    )


def train_epoch(objective, images, dry_run: bool) -> dict:
    """One epoch of ``VAE.for_mnist()`` on ``images`` (uint8 ``[N, 28, 28]``) with ``objective``,
    through a :class:`dgmlib.train.Trainer` on the device that ``$DGMLIB_DEVICE`` names."""
    import torch

    from dgmlib.data import binarize_dynamic, to_unit_interval
    from dgmlib.experiment import epoch_order
    from dgmlib.kernels.backend import autograd_nodes
    from dgmlib.models.vae import VAE
    from dgmlib.train import Trainer

    torch.manual_seed(SEED)
    model = VAE.for_mnist()
    warm = copy.deepcopy(model)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=LR, **ADAM), objective,
                      log_every=1 if dry_run else LOG_EVERY, progress=False)  # fmt: skip
    dev = trainer.device
    expected = "cpu" if dry_run else "cuda"
    if dev.type != expected or next(trainer.model.parameters()).device.type != expected:
        raise RuntimeError(f"the Trainer computes on {dev}, not on {expected} ($DGMLIB_DEVICE)")
    pixels = to_unit_interval(images).to(dev)
    gen = torch.Generator(device=dev).manual_seed(SEED)

    def batches(epoch: int):
        order = epoch_order(len(pixels), epoch, SEED).to(dev)
        for start in range(0, len(pixels), BATCH):
            yield binarize_dynamic(pixels[order[start : start + BATCH]], gen)

    warm_trainer = Trainer(warm, torch.optim.Adam(warm.parameters(), lr=LR, **ADAM), objective,
                           progress=False)  # fmt: skip
    for step, x in enumerate(batches(0)):
        if step == WARMUP_STEPS:
            break
        warm_trainer.train_step(x)
    fused = KERNEL_NODES[type(objective).__name__] in autograd_nodes(
        objective(warm_trainer.model, next(iter(batches(0))))["loss"]
    )
    if dev.type == "cuda":  # pragma: no cover - needs a GPU
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    history = trainer.fit(batches, epochs=1)
    if dev.type == "cuda":  # pragma: no cover - needs a GPU
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    losses = history["loss"]
    return dict(
        device=str(dev),
        steps=trainer.step,
        epoch_seconds=round(seconds, 3),
        mean_loss=round(sum(losses) / len(losses), 3),
        last_logged_loss=round(losses[-1], 3),
        peak_mem_mb=(
            round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None
        ),
        fused_kernel_used=fused,
    )


def epochs(dry_run: bool) -> list[dict]:
    """The Lecture 05 VAE (ELBO) and IWAE (K = 5), each with the automatic backend (Triton on
    CUDA; explicitly ``"triton"`` in the dry run) and with ``backend="torch"``."""
    from dgmlib.data import load_fashion_mnist
    from dgmlib.objectives import ELBO, IWAEBound

    images, _ = load_fashion_mnist("train")
    if dry_run:
        images = images[:DRY_RUN_IMAGES]
    rows = []
    fused = "triton" if dry_run else None
    for model, make in (("vae", ELBO), ("iwae5", lambda backend: IWAEBound(5, backend=backend))):
        for backend in (fused, "torch"):
            objective = make(backend=backend)
            row = dict(model=model, objective=type(objective).__name__,
                       backend=backend or "auto")  # fmt: skip
            row.update(train_epoch(objective, images, dry_run))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", action="store_true", help="say whether a CUDA GPU is usable")
    parser.add_argument("--tests", type=Path, help="the JUnit XML of the CUDA-only tests")
    parser.add_argument("--out", type=Path, help="the JSON file to write")
    parser.add_argument("--quick", action="store_true", help="the smaller kernel sizes only")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes")
    args = parser.parse_args()
    if args.dry_run:  # before anything imports triton: its interpreter, torch on the CPU
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["DGMLIB_DEVICE"] = "cpu"
    else:
        os.environ.setdefault("DGMLIB_DEVICE", "cuda")
    if args.probe:
        status, text = probe()
        print(text)
        return status
    if args.out is None:
        parser.error("--out is required (unless --probe)")
    if not args.dry_run:
        status, text = probe()
        if status:
            print(f"gpu.py: {text}", file=sys.stderr)
            return status
    import kernels as kernel_bench
    import torch

    device = torch.device("cpu" if args.dry_run else "cuda")
    t0 = time.perf_counter()
    result = dict(
        schema="dgmlib.gpu/1",
        command="bash benchmarks/gpu.sh" + (" --quick" if args.quick else ""),
        dry_run=args.dry_run,
        environment=environment(device),
        tests=test_outcome(args.tests),
        kernels=kernel_bench.gpu_suite(args.quick, str(device), dry_run=args.dry_run),
        epochs=epochs(args.dry_run),
    )
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    kernel_bench.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
