"""Benchmark of dgmlib.kernels: time and peak memory (not part of the tests).

CPU (always): the chunked torch path of ``mixture_logpdf`` against the naive broadcast (where it
fits) up to N = 60 000, M = 10 000, D = 32, and ``vq_nearest`` against
``torch.cdist(...).argmin(1)`` at M = 65 536, K = 512, D = 64. Every measurement runs in a fresh
Python process with ``torch.set_num_threads(2)``; peak memory is the growth of the resident-set
high-water mark (``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs`` after
the inputs are built and a small warm-up call), so it counts every allocator, not only torch's.

GPU (:func:`gpu_suite`, run by ``benchmarks/gpu.sh``, which writes ``results/gpu.json``): every
kernel's Triton path against its torch path and ``torch.compile`` (and, for the mixture, a dense
torch version that stores the M x N matrix), timed with ``triton.testing.do_bench``, with the peak
GPU memory and the largest error against a float64 reference, set against a measured roofline:
the float32 and TF32 matrix-product peaks (the pairwise kernels) and the copy bandwidth (the
row-wise kernels, which are memory-bound).

Usage::

    python benchmarks/kernels.py            # the CPU suite; writes results/cpu.json
    python benchmarks/kernels.py --quick    # small sizes only (results/cpu_quick.json)
    python benchmarks/kernels.py --table    # print the Markdown tables from results/*.json
    bash benchmarks/gpu.sh                  # the GPU half (with the CUDA tests, one epoch)

Results are written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
THREADS = 2
NAIVE_LIMIT_GB = 2.5  # skip the naive broadcast above this estimated peak

# ----------------------------------------------------------------------------------------------
# One measurement in a fresh process
# ----------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def child(spec: dict) -> dict:
    """Run one CPU case described by ``spec``; return its time (s) and peak-memory growth (MB)."""
    import torch

    torch.set_num_threads(THREADS)
    from dgmlib.kernels import mixture_logpdf, mixture_logpdf_ref, vq_nearest

    g = torch.Generator().manual_seed(0)
    op, method = spec["op"], spec["method"]
    if op == "mixture":
        n, m, d = spec["N"], spec["M"], spec["D"]
        mu = torch.randn(n, d, generator=g)
        logvar = 0.2 * torch.randn(n, d, generator=g) - 1.0
        z = torch.randn(m, d, generator=g)
        backward = spec.get("backward", False)
        if backward:
            z.requires_grad_()
            mu.requires_grad_()
            logvar.requires_grad_()
        fn = mixture_logpdf_ref if method == "naive" else mixture_logpdf

        def run(zz, mm, ll):
            out = fn(zz, mm, ll)
            if backward:
                torch.autograd.grad(out.sum(), [zz, mm, ll])
            return out

        def warm():
            run(z[:4], mu[:8], logvar[:8])

        def main():
            return run(z, mu, logvar)

    elif op == "vq":
        m, k, d = spec["M"], spec["K"], spec["D"]
        x = torch.randn(m, d, generator=g)
        codebook = torch.randn(k, d, generator=g)
        if method == "cdist":

            def fn(a, b):
                return torch.cdist(a, b).argmin(1)
        else:

            def fn(a, b):
                return vq_nearest(a, b, backend="torch")[0]

        def warm():
            fn(x[:64], codebook)

        def main():
            return fn(x, codebook)

    else:
        raise ValueError(op)

    warm()
    with torch.no_grad() if not spec.get("backward") else torch.enable_grad():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current resident set
        base = _status_kb("VmRSS")
        t0 = time.perf_counter()
        out = main()
        seconds = time.perf_counter() - t0
        peak_mb = (_status_kb("VmHWM") - base) / 1024
    result = dict(seconds=round(seconds, 3), peak_growth_mb=round(peak_mb, 1))
    if op == "vq":
        result["indices_sample"] = out[::257].tolist()
    return result


def run_child(spec: dict, **extra_env: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra_env)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return dict(error=proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# CPU suite
# ----------------------------------------------------------------------------------------------


def naive_estimate_gb(n: int, m: int, d: int) -> float:
    """The broadcast holds about three float32 M x N x D tensors at once."""
    return 3 * 4 * n * m * d / 1e9


def cpu_suite(quick: bool) -> dict:
    cases = [(1000, 1000, 32), (4000, 1000, 32), (10000, 1000, 32)]
    if not quick:
        cases += [(60000, 1000, 32), (60000, 10000, 32)]
    rows = []
    for n, m, d in cases:
        for method in ("chunked", "naive"):
            spec = dict(op="mixture", method=method, N=n, M=m, D=d)
            row = dict(spec, naive_estimate_gb=round(naive_estimate_gb(n, m, d), 2))
            if method == "naive" and naive_estimate_gb(n, m, d) > NAIVE_LIMIT_GB:
                row["skipped"] = f"one M x N x D tensor is {4 * n * m * d / 1e9:.1f} GB"
            else:
                row.update(run_child(spec))
            print(json.dumps(row), flush=True)
            rows.append(row)
    backward_cases = [(10000, 1000, 32)] if quick else [(10000, 1000, 32), (60000, 1000, 32)]
    for n, m, d in backward_cases:
        spec = dict(op="mixture", method="chunked", N=n, M=m, D=d, backward=True)
        row = dict(spec, **run_child(spec))
        print(json.dumps(row), flush=True)
        rows.append(row)
    vq_rows = []
    m, k, d = (8192, 512, 64) if quick else (65536, 512, 64)
    for method in ("cdist", "vq_nearest"):
        row = dict(op="vq", method=method, M=m, K=k, D=d)
        row.update(run_child(row))
        print(json.dumps(row), flush=True)
        vq_rows.append(row)
    same = vq_rows[0].get("indices_sample") == vq_rows[1].get("indices_sample")
    ratio = vq_rows[1]["peak_growth_mb"] / max(vq_rows[0]["peak_growth_mb"], 1e-9)
    # On a busy machine, OpenMP threads that spin while waiting steal the cores they wait for:
    # the largest cases again with OMP_WAIT_POLICY=PASSIVE (threads sleep instead).
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        n, m_, d_ = cases[-1]
        spec = dict(op="mixture", method="chunked", N=n, M=m_, D=d_)
        row = dict(spec, omp_wait_policy="PASSIVE", **run_child(spec, OMP_WAIT_POLICY="PASSIVE"))
        print(json.dumps(row), flush=True)
        rows.append(row)
        for row in [dict(r) for r in vq_rows]:
            row.pop("seconds", None)
            row.pop("peak_growth_mb", None)
            row["omp_wait_policy"] = "PASSIVE"
            row.update(run_child(row, OMP_WAIT_POLICY="PASSIVE"))
            print(json.dumps(row), flush=True)
            vq_rows.append(row)
    for row in vq_rows:
        row.pop("indices_sample", None)
    return dict(
        mixture=rows,
        vq=vq_rows,
        vq_memory_ratio=round(ratio, 3),
        vq_same_indices_on_sample=same,
    )


# ----------------------------------------------------------------------------------------------
# GPU suite
# ----------------------------------------------------------------------------------------------

# Problem sizes of the GPU half: the course's largest cases (``quick``: the smaller ones only) and,
# for the dry run on the CPU (``benchmarks/gpu.py --dry-run``), sizes the Triton interpreter
# runs in seconds.
GPU_SIZES = {
    "full": dict(
        mixture=[(60000, 1000, 32), (60000, 10000, 32)],
        vq=(65536, 512, 64),
        lme=(4096, 4096),
        rsample=(65536, 64),
    ),
    "quick": dict(
        mixture=[(60000, 1000, 32)], vq=(65536, 512, 64), lme=(4096, 4096), rsample=(65536, 64)
    ),
    "dry": dict(mixture=[(300, 64, 8)], vq=(256, 32, 8), lme=(64, 128), rsample=(64, 16)),
}


def bench_ms(fn, device) -> float:
    """Time of one call of ``fn`` in ms: ``triton.testing.do_bench`` on CUDA (median of many
    runs, the L2 cache flushed between them); on the CPU (the dry run) the median of 3 calls."""
    if device.type == "cuda":  # pragma: no cover - needs a GPU
        from triton.testing import do_bench

        return float(do_bench(fn))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[1]


def peak_mb(fn, device) -> float | None:
    """Peak GPU memory allocated by one call of ``fn`` beyond what was allocated before, MB
    (None on the CPU)."""
    if device.type != "cuda":
        fn()
        return None
    import torch  # pragma: no cover - needs a GPU

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def roofline(device, dry_run: bool) -> dict:
    """Measured peaks of this device: float32 and TF32 matrix products (TFLOP/s) and the copy
    bandwidth (GB/s, bytes read plus bytes written)."""
    import torch

    n = 256 if dry_run else 8192
    a = torch.randn(n, n, device=device)
    torch.backends.cuda.matmul.allow_tf32 = False
    t_fp32 = bench_ms(lambda: a @ a, device) * 1e-3
    torch.backends.cuda.matmul.allow_tf32 = True
    t_tf32 = bench_ms(lambda: a @ a, device) * 1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
    big = torch.empty((2**16 if dry_run else 2**28), device=device)
    t_copy = bench_ms(lambda: big.clone(), device) * 1e-3
    return dict(
        fp32_tflops=sig(2 * n**3 / t_fp32 / 1e12),
        tf32_tflops=sig(2 * n**3 / t_tf32 / 1e12),
        copy_gb_s=sig(2 * big.numel() * 4 / t_copy / 1e9),
    )


def sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}")


def max_rel_err(out, ref) -> float:
    """Largest ``|out - ref| / max(|ref|, 1)`` over finite reference entries (2 significant
    digits)."""
    import torch

    ref = ref.double()
    ok = torch.isfinite(ref)
    err = ((out.double() - ref).abs() / ref.abs().clamp(min=1.0))[ok].max().item()
    return float(f"{err:.2e}")


def _timed_rows(common: dict, methods: dict, device, work: dict, roof: dict, errors) -> list:
    """One row per method: time, achieved rate against the roofline, peak memory, error."""
    rows = []
    for name, fn in methods.items():
        row = dict(common, method=name)
        try:
            out = fn()
            row["ms"] = sig(bench_ms(fn, device), 4)
            row["peak_mem_mb"] = peak_mb(fn, device)
        except Exception as exc:  # e.g. out of memory for a dense version
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        seconds = row["ms"] * 1e-3
        if "flops" in work:
            row["tflops"] = sig(work["flops"] / seconds / 1e12)
            row["fraction_of_fp32_peak"] = sig(row["tflops"] / roof["fp32_tflops"])
        if "bytes" in work:
            row["gb_s"] = sig(work["bytes"] / seconds / 1e9)
            row["fraction_of_copy_bandwidth"] = sig(row["gb_s"] / roof["copy_gb_s"])
        row.update(errors(out))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def gpu_suite(quick: bool = False, device: str = "cuda", dry_run: bool = False) -> dict:
    """The GPU half: every kernel's Triton path against its torch path and ``torch.compile``
    (and a dense torch version for the pairwise kernels), timed, set against the measured
    roofline, with the largest error against a float64 reference.

    ``dry_run`` runs the same code on the CPU with tiny sizes, Triton in its interpreter and
    ``torch.compile(backend="eager")`` (a check of this code, no measurement); the caller must
    have set ``TRITON_INTERPRET=1`` before triton was imported.
    """
    import torch
    import triton

    from dgmlib.kernels import (
        gaussian_rsample_kl,
        gaussian_rsample_kl_ref,
        iwae_logmeanexp,
        iwae_logmeanexp_ref,
        mixture_logpdf,
        vq_nearest,
    )
    from dgmlib.kernels.mixture import expand_mixture

    dev = torch.device(device)
    sizes = GPU_SIZES["dry" if dry_run else "quick" if quick else "full"]
    compile_opts = dict(backend="eager") if dry_run else {}
    roof = roofline(dev, dry_run)
    print(json.dumps(dict(roofline=roof)), flush=True)

    def dense(z, mu, logvar):
        a_, b_, c_ = expand_mixture(z, mu, logvar, None)
        return torch.logsumexp(torch.addmm(c_, a_, b_.T), 1)

    compiled_dense = torch.compile(dense, **compile_opts)
    mixture = []
    for n, m, d in sizes["mixture"]:
        g = torch.Generator(device=dev).manual_seed(0)
        mu = torch.randn(n, d, device=dev, generator=g)
        logvar = 0.2 * torch.randn(n, d, device=dev, generator=g) - 1.0
        z = torch.randn(m, d, device=dev, generator=g)
        ref = mixture_logpdf(z.double(), mu.double(), logvar.double(), backend="torch")
        args = (z, mu, logvar)
        methods = {
            "triton": lambda a=args: mixture_logpdf(*a, backend="triton"),
            "torch chunked": lambda a=args: mixture_logpdf(*a, backend="torch"),
            "torch dense": lambda a=args: dense(*a),
            "torch.compile dense": lambda a=args: compiled_dense(*a),
        }
        work = dict(flops=2 * m * n * 2 * d)  # the expanded product; plus one exp per pair

        def mixture_errors(out, ref=ref):
            return dict(max_rel_err=max_rel_err(out, ref))

        mixture += _timed_rows(dict(N=n, M=m, D=d), methods, dev, work, roof, mixture_errors)
        leaves = [t.clone().requires_grad_() for t in (z, mu, logvar)]

        def fwd_bwd(leaves=leaves):
            torch.autograd.grad(mixture_logpdf(*leaves, backend="triton").sum(), leaves)

        mixture += _timed_rows(dict(N=n, M=m, D=d), {"triton fwd+bwd": fwd_bwd}, dev,
                               dict(flops=3 * work["flops"]), roof, lambda out: {})  # fmt: skip

    m, k, d = sizes["vq"]
    x = torch.randn(m, d, device=dev)
    codebook = torch.randn(k, d, device=dev)
    ref_idx = torch.cdist(x.double(), codebook.double()).argmin(1)

    def vq_errors(out):
        idx = out[0] if isinstance(out, tuple) else out
        return dict(index_agreement=round((idx == ref_idx).double().mean().item(), 6))

    vq = _timed_rows(
        dict(M=m, K=k, D=d),
        {
            "triton": lambda: vq_nearest(x, codebook, backend="triton"),
            "torch chunked": lambda: vq_nearest(x, codebook, backend="torch"),
            "cdist argmin": lambda: torch.cdist(x, codebook).argmin(1),
        },
        dev, dict(flops=2 * m * k * d), roof, vq_errors,
    )  # fmt: skip

    # Row-wise kernels: memory-bound, so set against the copy bandwidth.
    rows, cols = sizes["lme"]
    log_w = 10 * torch.randn(rows, cols, device=dev)
    lme_ref, w_ref = iwae_logmeanexp_ref(log_w.double())
    compiled_lme = torch.compile(iwae_logmeanexp_ref, **compile_opts)

    def lme_errors(out):
        w_err = (out[1].double() - w_ref).abs().max().item()
        return dict(
            max_rel_err=max_rel_err(out[0], lme_ref), max_abs_err_weights=float(f"{w_err:.2e}")
        )

    leaf = log_w.clone().requires_grad_()

    def lme_fwd_bwd(backend):
        return lambda: torch.autograd.grad(iwae_logmeanexp(leaf, backend=backend)[0].sum(), leaf)

    lme = _timed_rows(
        dict(op="iwae_logmeanexp", R=rows, K=cols),
        {
            "triton": lambda: iwae_logmeanexp(log_w, backend="triton"),
            "torch": lambda: iwae_logmeanexp(log_w, backend="torch"),
            "torch.compile": lambda: compiled_lme(log_w),
        },
        dev, dict(bytes=2 * log_w.numel() * 4), roof, lme_errors,
    )  # fmt: skip
    lme += _timed_rows(
        dict(op="iwae_logmeanexp", R=rows, K=cols),
        {"triton fwd+bwd": lme_fwd_bwd("triton"), "torch fwd+bwd": lme_fwd_bwd("torch")},
        dev, dict(bytes=5 * log_w.numel() * 4), roof, lambda out: {},
    )  # fmt: skip

    rows, zdim = sizes["rsample"]
    mu, logvar, eps = (torch.randn(rows, zdim, device=dev) for _ in range(3))
    z_ref, kl_ref = gaussian_rsample_kl_ref(mu.double(), logvar.double(), eps.double())
    compiled_rsample = torch.compile(gaussian_rsample_kl_ref, **compile_opts)

    def rsample_errors(out):
        return dict(
            max_rel_err=max_rel_err(out[1], kl_ref), max_rel_err_z=max_rel_err(out[0], z_ref)
        )

    rsample = _timed_rows(
        dict(op="gaussian_rsample_kl", R=rows, D=zdim),
        {
            "triton": lambda: gaussian_rsample_kl(mu, logvar, eps, backend="triton"),
            "torch": lambda: gaussian_rsample_kl(mu, logvar, eps, backend="torch"),
            "torch.compile": lambda: compiled_rsample(mu, logvar, eps),
        },
        dev, dict(bytes=4 * mu.numel() * 4), roof, rsample_errors,
    )  # fmt: skip
    return dict(
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (dry run)",
        torch=torch.__version__,
        triton=triton.__version__,
        roofline=roof,
        mixture=mixture,
        vq=vq,
        rowwise=lme + rsample,
    )


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=cpu,
        threads=THREADS,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"),
        load_average_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )


def table(results: Path = RESULTS) -> str:
    lines = []
    cpu_path = results / "cpu.json"
    if cpu_path.exists():
        cpu = json.loads(cpu_path.read_text())
        env = cpu["environment"]
        lines += [
            f"CPU: {env['cpu']}, {env['threads']} threads, torch {env['torch']} "
            f"(1-minute load average {env['load_average_1min']} when it ran).",
            "",
            "| op | N | M | D | method | time (s) | peak memory growth (MB) |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for r in cpu["mixture"]:
            op = "mixture_logpdf" + (" fwd+bwd" if r.get("backward") else "")
            method = r["method"] + (" (passive OpenMP)" if "omp_wait_policy" in r else "")
            t = r.get("seconds", "-")
            mem = r.get("peak_growth_mb", r.get("skipped", r.get("error", "-")))
            lines.append(f"| {op} | {r['N']} | {r['M']} | {r['D']} | {method} | {t} | {mem} |")
        lines += ["", "| op | M | K | D | method | time (s) | peak memory growth (MB) |",
                  "|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
        for r in cpu["vq"]:
            method = r["method"] + (" (passive OpenMP)" if "omp_wait_policy" in r else "")
            lines.append(
                f"| vq_nearest | {r['M']} | {r['K']} | {r['D']} | {method} | "
                f"{r.get('seconds', '-')} | {r.get('peak_growth_mb', r.get('error', '-'))} |"
            )
        lines += [
            "",
            f"vq_nearest / cdist peak-memory ratio: {cpu['vq_memory_ratio']}; "
            f"same indices on the checked sample: {cpu['vq_same_indices_on_sample']}.",
        ]
    gpu_path = results / "gpu.json"
    if gpu_path.exists():
        lines += ["", gpu_table(json.loads(gpu_path.read_text()))]
    return "\n".join(lines)


GPU_COLUMNS = [  # (key, heading) of the GPU tables, in order; a row shows the keys it has
    ("op", "op"), ("N", "N"), ("M", "M"), ("K", "K"), ("R", "R"), ("D", "D"),
    ("method", "method"), ("ms", "ms"), ("tflops", "TFLOP/s"),
    ("fraction_of_fp32_peak", "of fp32 peak"), ("gb_s", "GB/s"),
    ("fraction_of_copy_bandwidth", "of copy bandwidth"), ("peak_mem_mb", "peak MB"),
    ("max_rel_err", "max rel. err"), ("index_agreement", "same index"), ("error", "error"),
]  # fmt: skip


def gpu_table(gpu: dict) -> str:
    """Markdown tables of ``results/gpu.json`` (written by ``benchmarks/gpu.sh``)."""
    env, kern = gpu["environment"], gpu["kernels"]
    roof = kern["roofline"]
    lines = [
        f"GPU: {env['device']}, torch {env['torch']}, triton {env['triton']}; measured roofline: "
        f"{roof['fp32_tflops']} TFLOP/s float32, {roof['tf32_tflops']} TFLOP/s TF32, "
        f"{roof['copy_gb_s']} GB/s copy. CUDA-only tests: {gpu['tests']['summary']}.",
    ]
    for section in ("mixture", "vq", "rowwise"):
        rows = kern[section]
        cols = [(k, h) for k, h in GPU_COLUMNS if any(k in r for r in rows)]
        lines += ["", "| " + " | ".join(h for _, h in cols) + " |",
                  "|" + "|".join("---" for _ in cols) + "|"]  # fmt: skip
        for r in rows:
            lines.append("| " + " | ".join(str(r.get(k, "-")) for k, _ in cols) + " |")
    lines += ["", "| model | objective | backend | epoch (s) | mean loss | last logged loss |",
              "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in gpu["epochs"]:
        lines.append(
            f"| {r['model']} | {r['objective']} | {r['backend']} | {r['epoch_seconds']} | "
            f"{r['mean_loss']} | {r['last_logged_loss']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--table", action="store_true", help="print the tables and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.table:
        print(table())
        return
    env = environment()
    cpu = cpu_suite(args.quick)
    name = "cpu_quick.json" if args.quick else "cpu.json"
    write_json(RESULTS / name, dict(environment=env, **cpu))
    print(table())
    print("The GPU half (gpu_suite) runs from benchmarks/gpu.sh (make gpu) on a CUDA machine.")


if __name__ == "__main__":
    main()
