"""Backend choice (``"torch"`` or ``"triton"``) and lazy loading of the Triton kernels.

Nothing here imports triton or touches a GPU driver at import time. Triton is imported the first
time a caller asks for the Triton backend (or for the automatic choice on a CUDA tensor).

The kernels live in ``jit.py``. ``triton.jit`` decides when a function is *defined* whether it
is compiled for the GPU or run by the CPU interpreter (``TRITON_INTERPRET=1``), and Triton's own
library (``tl.zeros``, ``tl.max``, ...) is defined when ``triton`` is first imported. So
``TRITON_INTERPRET=1`` must be in the environment before ``triton`` is first imported in the
process (torch.compile imports it too). The kernel module is executed on first use, once per mode;
a mode that does not match the one triton was imported in raises a clear error.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch

BACKENDS = ("torch", "triton")
ENV_BACKEND = "DGMLIB_BACKEND"

_triton_importable: bool | None = None
_kernel_modules: dict[bool, ModuleType] = {}


def triton_available() -> bool:
    """Whether ``import triton`` works (checked once, on first call)."""
    global _triton_importable
    if _triton_importable is None:
        try:
            import triton  # noqa: F401

            _triton_importable = True
        except Exception:  # ImportError, or a broken install
            _triton_importable = False
    return _triton_importable


def interpret_mode() -> bool:
    """Whether Triton kernels would run in the CPU interpreter (``TRITON_INTERPRET`` is set)."""
    if triton_available():
        import triton

        knobs = getattr(triton, "knobs", None)
        if knobs is not None:
            return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def resolve_backend(
    backend: str | None, *tensors: torch.Tensor, op: str, unsupported: str | None = None
) -> str:
    """The backend that runs ``op`` on ``tensors``.

    ``backend=None`` means: ``$DGMLIB_BACKEND`` when set, else Triton for CUDA tensors when triton
    imports, else torch. An explicit (or environment) ``"triton"`` is checked: it needs triton
    importable, and CPU tensors need ``TRITON_INTERPRET=1``. ``unsupported`` says why the Triton
    path cannot take this call (e.g. a feature dimension too large): the automatic choice then
    falls back to torch and an explicit ``"triton"`` raises ``ValueError``.
    """
    source = "backend"
    if backend is None:
        env = os.environ.get(ENV_BACKEND, "").strip().lower()
        if env in ("", "auto"):
            on_cuda = any(t.is_cuda for t in tensors)
            use = on_cuda and unsupported is None and triton_available()
            return "triton" if use else "torch"
        backend, source = env, f"${ENV_BACKEND}"
    if backend not in BACKENDS:
        raise ValueError(
            f"{op}: {source} must be 'torch', 'triton' or None (auto), got {backend!r}"
        )
    if backend == "triton":
        if unsupported is not None:
            raise ValueError(f"{op}: the Triton path {unsupported}; use backend='torch'")
        if not triton_available():
            raise RuntimeError(
                f"{op}: {source}='triton' needs the triton package "
                "(pip install 'dgmlib[kernels]'), which does not import here; use backend='torch'."
            )
        if any(not t.is_cuda for t in tensors) and not interpret_mode():
            raise RuntimeError(
                f"{op}: {source}='triton' got CPU tensors; Triton runs on CPU tensors only in its "
                "interpreter (set the environment variable TRITON_INTERPRET=1 before the first "
                "Triton call). Use backend='torch' for the CPU path."
            )
    return backend


def triton_kernels() -> ModuleType:
    """The module of Triton kernels and launchers, defined for the current mode (GPU or CPU
    interpreter)."""
    mode = interpret_mode()
    _check_mode_matches_import(mode)
    module = _kernel_modules.get(mode)
    if module is None:
        spec = importlib.util.find_spec("dgmlib.kernels.jit")
        if spec is None or spec.loader is None:  # pragma: no cover - broken install
            raise ImportError("dgmlib.kernels.jit not found")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _kernel_modules[mode] = module
    return module


def _check_mode_matches_import(interpret: bool) -> None:
    import triton.language as tl

    imported_interpreted = type(tl.zeros).__name__ == "InterpretedFunction"
    if interpret and not imported_interpreted:
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton had been imported in this process, so the "
            "Triton interpreter cannot run. Set it before the first import of triton (in the "
            "shell, or at the top of the script before importing torch._dynamo or triton)."
        )
    if not interpret and imported_interpreted:
        raise RuntimeError(
            "triton was imported with TRITON_INTERPRET=1, which has since been unset; compiled "
            "Triton kernels cannot run in this process. Keep TRITON_INTERPRET=1 or restart."
        )


def autograd_nodes(t: torch.Tensor) -> set[str]:
    """Class names of every node of the autograd graph that produced ``t`` (e.g. to see whether
    a fused kernel's autograd function, rather than torch's ops, made a loss)."""
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names
