"""Train the continuous normalizing flow of Appendix A1; write a small checkpoint and its curve.

Usage: python tools/train_lectureA1.py [--out data/checkpoints] [--quick]
Runtime: about a minute and a half of CPU time on one thread (76 s measured; 4.8 minutes of wall
time on a two-core machine shared with other jobs); ``--quick`` runs a few-second smoke test of
the pipeline (not the lecture's settings).

The model (FFJORD-style, exact trace in 2-D): ``dgmlib.cnf.CNF`` around
``dgmlib.cnf.ConcatMLP(**NET)``, base ``N(0, I)`` at ``t0 = 0``, data at ``t1 = 1``. The data:
``dgmlib.data.toy_2d("ring", N_TRAIN, seed=TRAIN_SEED, noise=RING_STD)``, a mixture of 8
Gaussians whose density ``dgmlib.cnf.ring_log_prob`` is exact. Training minimises the mean
negative log-likelihood ``-log p(x)`` of batches of ``BATCH`` points (indices from a generator
seeded ``BATCH_SEED``) by Adam (learning rate ``LR``, cosine decay to ``LR_END`` over ``STEPS``
steps), differentiating through a fixed-grid solver (``rk4`` with ``RK4_STEPS`` steps on
``[0, 1]``, float32): with a fixed grid every step costs the same and the run is reproducible.
Logged every ``LOG_EVERY`` steps: the mean training loss over those steps.

Evaluated at the end in float64 with an adaptive solver (``dopri5``, ``EVAL_TOL``), which is
the continuous-time model the lecture studies, on ``N_TEST`` fresh points (seed ``TEST_SEED``):
the mean of ``-log p_model(x)`` and of ``-log p_true(x)`` (an estimate of the data's entropy)
with their standard errors, the same mean with the training solver, and the number of
evaluations of ``f`` the adaptive solver needed.

Everything is deterministic: one CPU thread, fixed seeds. The script writes into ``--out``
``lA1_cnf.safetensors`` (weights, loadable with ``dgmlib.train.load_model`` into
:func:`build_model`) with its ``.sha256`` sidecar, and ``lA1_results.json`` (settings, command,
hash, curve, figures). On the same platform a re-run reproduces the hash bit for bit; another
CPU's float32 kernels change the trajectory slightly, which is why the lecture loads the file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.cnf import CNF, ConcatMLP, ring_log_prob  # noqa: E402
from dgmlib.data import toy_2d  # noqa: E402
from dgmlib.train import atomic_write_bytes, save_checkpoint  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "python tools/train_lectureA1.py"
SEED = 0
THREADS = 1

RING_STD = 0.25
N_TRAIN = 20_000
TRAIN_SEED = 1
N_TEST = 2000
TEST_SEED = 2
NET = {"dim": 2, "hidden": 64, "layers": 3, "activation": "tanh", "init_scale": 0.1}
STEPS = 1500
BATCH = 256
BATCH_SEED = 3
LR = 3e-3
LR_END = 1e-4
RK4_STEPS = 4
LOG_EVERY = 50
EVAL_TOL = {"rtol": 1e-7, "atol": 1e-9}


def build_model() -> CNF:
    """A freshly initialised CNF (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    return CNF(ConcatMLP(**NET))


def rk4_solver(n_steps: int = RK4_STEPS) -> dict:
    """torchdiffeq settings of the training solver: ``rk4`` on ``n_steps`` equal steps."""

    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=y0.dtype)

    return {"method": "rk4", "options": {"grid_constructor": grid}}


def train_data(n: int = N_TRAIN) -> torch.Tensor:
    return toy_2d("ring", n, seed=TRAIN_SEED, noise=RING_STD)[0]


def test_data(n: int = N_TEST) -> torch.Tensor:
    """The evaluation points, float64 ``[n, 2]``."""
    return toy_2d("ring", n, seed=TEST_SEED, noise=RING_STD)[0].double()


def train(steps: int = STEPS, n_train: int = N_TRAIN) -> tuple[CNF, dict]:
    """Train the CNF; return it and its loss curve."""
    x_all = train_data(n_train)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=LR_END)
    g = torch.Generator().manual_seed(BATCH_SEED)
    solver = rk4_solver()
    curve: dict[str, list] = {"step": [], "loss": []}
    acc = 0.0
    for step in range(1, steps + 1):
        xb = x_all[torch.randint(0, len(x_all), (BATCH,), generator=g)]
        loss = -model.log_prob(xb, **solver).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        acc += loss.item()
        if step % LOG_EVERY == 0 or step == steps:
            n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
            curve["step"].append(step)
            curve["loss"].append(float(f"{acc / n:.5g}"))
            acc = 0.0
    return model, curve


def evaluate(model: CNF, x: torch.Tensor) -> dict:
    """Test figures of the float64 continuous-time model (see the module docstring)."""
    m64 = CNF(ConcatMLP(**NET)).double()
    m64.load_state_dict(model.state_dict())
    with torch.no_grad():
        m64.nfe = 0
        lp = m64.log_prob(x, method="dopri5", **EVAL_TOL)
        nfe = m64.nfe
        lp_rk4 = m64.log_prob(x, **rk4_solver())
    lp_true = ring_log_prob(x, RING_STD)
    n = len(x)
    return {
        "nll": float(-lp.mean()),
        "nll_se": float(lp.std() / math.sqrt(n)),
        "nll_train_solver": float(-lp_rk4.mean()),
        "entropy": float(-lp_true.mean()),
        "entropy_se": float(lp_true.std() / math.sqrt(n)),
        "kl": float((lp_true - lp).mean()),
        "kl_se": float((lp_true - lp).std() / math.sqrt(n)),
        "nfe": nfe,
    }


def dumps(doc: dict) -> str:
    """``doc`` as indented JSON with every list of numbers on one line."""
    text = json.dumps(doc, indent=1)
    return re.sub(
        r"\[\s*([-+0-9.eE,\s]*?)\s*\]",
        lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]",
        text,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    steps, n_test = (20, 200) if args.quick else (STEPS, N_TEST)

    model, curve = train(steps)
    train_seconds = round(time.perf_counter() - t_start)
    path = out / "lA1_cnf.safetensors"
    meta = {"model": "cnf", "command": COMMAND, "kwargs": NET, "steps": steps}
    digest = save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)
    figures = evaluate(model, test_data(n_test))
    print(f"[cnf] {figures}, trained in {train_seconds} s", flush=True)

    doc = {
        "lecture": "A1_adjoint",
        "command": COMMAND,
        "quick": bool(args.quick),
        "settings": {
            "seed": SEED,
            "threads": THREADS,
            "ring_std": RING_STD,
            "n_train": N_TRAIN,
            "train_seed": TRAIN_SEED,
            "n_test": n_test,
            "test_seed": TEST_SEED,
            "net": NET,
            "steps": steps,
            "batch_size": BATCH,
            "batch_seed": BATCH_SEED,
            "learning_rate": LR,
            "learning_rate_end": LR_END,
            "rk4_steps": RK4_STEPS,
            "log_every": LOG_EVERY,
            "eval_tol": EVAL_TOL,
        },
        "checkpoint": path.name,
        "sha256": digest,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": train_seconds,
        "curve": curve,
        "test": figures,
    }
    atomic_write_bytes(out / "lA1_results.json", (dumps(doc) + "\n").encode())
    print("wrote", out / "lA1_results.json", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
