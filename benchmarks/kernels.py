"""Benchmark of dgmlib.kernels: time and peak memory (not part of the tests).

CPU (always): the chunked torch path of ``mixture_logpdf`` against the naive broadcast (where it
fits) up to N = 60 000, M = 10 000, D = 32, and ``vq_nearest`` against
``torch.cdist(...).argmin(1)`` at M = 65 536, K = 512, D = 64. Every measurement runs in a fresh
Python process with ``torch.set_num_threads(2)``; peak memory is the growth of the resident-set
high-water mark (``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs`` after
the inputs are built and a small warm-up call), so it counts every allocator, not only torch's.

GPU (when CUDA and triton are available): Triton against the torch path, a dense torch version
and ``torch.compile`` of it, timed with ``triton.testing.do_bench`` and set against a measured
roofline (the float32 and TF32 matrix-product peaks and the copy bandwidth of the same GPU).

Usage::

    python benchmarks/kernels.py            # CPU, and GPU when present; writes results/*.json
    python benchmarks/kernels.py --quick    # small sizes only
    python benchmarks/kernels.py --table    # print the Markdown tables from results/*.json

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


def _roofline(torch, do_bench, dev) -> dict:  # pragma: no cover - needs a GPU
    """Measured peaks of this GPU: float32 and TF32 matrix products, and copy bandwidth."""
    a = torch.randn(8192, 8192, device=dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    t_fp32 = do_bench(lambda: a @ a) * 1e-3
    torch.backends.cuda.matmul.allow_tf32 = True
    t_tf32 = do_bench(lambda: a @ a) * 1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
    big = torch.empty(256 * 2**20, device=dev)
    t_copy = do_bench(lambda: big.clone()) * 1e-3
    return dict(
        fp32_tflops=round(2 * 8192**3 / t_fp32 / 1e12, 1),
        tf32_tflops=round(2 * 8192**3 / t_tf32 / 1e12, 1),
        copy_gb_s=round(2 * big.numel() * 4 / t_copy / 1e9, 0),
    )


def _mixture_methods(z, mu, logvar, dense, compiled) -> dict:  # pragma: no cover - needs a GPU
    from dgmlib.kernels import mixture_logpdf

    return {
        "triton": lambda: mixture_logpdf(z, mu, logvar, backend="triton"),
        "torch chunked": lambda: mixture_logpdf(z, mu, logvar, backend="torch"),
        "torch dense": lambda: dense(z, mu, logvar),
        "torch.compile dense": lambda: compiled(z, mu, logvar),
    }


def gpu_suite(quick: bool) -> dict:  # pragma: no cover - needs a GPU
    import torch
    import triton
    from triton.testing import do_bench

    from dgmlib.kernels import mixture_logpdf, vq_nearest
    from dgmlib.kernels.mixture import expand_mixture

    dev = torch.device("cuda")

    roof = _roofline(torch, do_bench, dev)

    def dense(z, mu, logvar):
        a_, b_, c_ = expand_mixture(z, mu, logvar, None)
        return torch.logsumexp(torch.addmm(c_, a_, b_.T), 1)

    compiled = torch.compile(dense)
    rows = []
    cases = [(60000, 1000, 32)] if quick else [(60000, 1000, 32), (60000, 10000, 32)]
    for n, m, d in cases:
        g = torch.Generator(device=dev).manual_seed(0)
        mu = torch.randn(n, d, device=dev, generator=g)
        logvar = 0.2 * torch.randn(n, d, device=dev, generator=g) - 1.0
        z = torch.randn(m, d, device=dev, generator=g)
        flops = 2 * m * n * 2 * d  # the expanded product; plus one exp per pair
        methods = _mixture_methods(z, mu, logvar, dense, compiled)
        ref = mixture_logpdf(z.double(), mu.double(), logvar.double(), backend="torch")
        for name, fn in methods.items():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            try:
                out = fn()
                ms = do_bench(fn)
            except Exception as exc:  # e.g. out of memory for the dense version
                rows.append(dict(N=n, M=m, D=d, method=name, error=type(exc).__name__))
                continue
            err = ((out.double() - ref).abs() / ref.abs()).max().item()
            rows.append(
                dict(
                    N=n, M=m, D=d, method=name, ms=round(ms, 3),
                    tflops=round(flops / ms / 1e9, 2),
                    fraction_fp32_peak=round(flops / ms / 1e9 / roof["fp32_tflops"], 3),
                    peak_mem_mb=round((torch.cuda.max_memory_allocated() - base) / 2**20, 1),
                    max_rel_err=float(f"{err:.2e}"),
                )
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        leaves = [t.clone().requires_grad_() for t in (z, mu, logvar)]

        def fwd_bwd(leaves=leaves):
            torch.autograd.grad(mixture_logpdf(*leaves, backend="triton").sum(), leaves)

        ms = do_bench(fwd_bwd)
        rows.append(dict(N=n, M=m, D=d, method="triton fwd+bwd", ms=round(ms, 3),
                         tflops=round(3 * flops / ms / 1e9, 2)))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    x = torch.randn(65536, 64, device=dev)
    codebook = torch.randn(512, 64, device=dev)
    vq_rows = []
    for name, fn in {
        "triton": lambda: vq_nearest(x, codebook, backend="triton"),
        "torch chunked": lambda: vq_nearest(x, codebook, backend="torch"),
        "cdist argmin": lambda: torch.cdist(x, codebook).argmin(1),
    }.items():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        vq_rows.append(dict(method=name, ms=round(do_bench(fn), 3), peak_mem_mb=round(peak, 1)))
        print(json.dumps(vq_rows[-1]), flush=True)
    return dict(
        device=torch.cuda.get_device_name(),
        triton=triton.__version__,
        roofline=roof,
        mixture=rows,
        vq=vq_rows,
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
        gpu = json.loads(gpu_path.read_text())
        roof = gpu["roofline"]
        lines += [
            "",
            f"GPU: {gpu['device']}, triton {gpu['triton']}; measured roofline: "
            f"{roof['fp32_tflops']} TFLOP/s float32, {roof['tf32_tflops']} TFLOP/s TF32, "
            f"{roof['copy_gb_s']} GB/s copy.",
            "",
            "| N | M | D | method | ms | TFLOP/s | of fp32 peak | peak MB | max rel. err |",
            "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in gpu["mixture"]:
            lines.append(
                f"| {r['N']} | {r['M']} | {r['D']} | {r['method']} | {r.get('ms', '-')} | "
                f"{r.get('tflops', '-')} | {r.get('fraction_fp32_peak', '-')} | "
                f"{r.get('peak_mem_mb', '-')} | {r.get('max_rel_err', r.get('error', '-'))} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--cpu-only", action="store_true")
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
    if not args.cpu_only:
        import torch

        from dgmlib.kernels import triton_available

        if torch.cuda.is_available() and triton_available():
            gpu = gpu_suite(args.quick)
            write_json(RESULTS / ("gpu_quick.json" if args.quick else "gpu.json"), gpu)
        else:
            print("no CUDA GPU with triton: GPU suite skipped")
    print(table())


if __name__ == "__main__":
    main()
