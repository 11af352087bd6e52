"""Fail early, and clearly, when torch and FBGEMM do not belong together.

FBGEMM's wheels (``fbgemm-gpu`` for CUDA, ``fbgemm-gpu-cpu`` for CPU) are compiled against
exactly one torch release; loading one built for another torch fails deep inside
``torch.ops.load_library`` with undefined C++ symbols, long after start-up. This module
checks the pair first and names the fix.

Run ``python -m torchrec_app.env_check`` to check an environment by hand.
"""

from __future__ import annotations

import importlib.metadata
import sys

#: FBGEMM minor release -> the torch minor release it is built for. Extend when pinning anew.
FBGEMM_FOR_TORCH = {
    "1.6": "2.11",
    "1.7": "2.12",
    "1.8": "2.13",
}


class EnvironmentMismatch(RuntimeError):
    """The installed torch / FBGEMM / torchrec set cannot work together."""


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def installed_fbgemm() -> tuple[str, str] | None:
    """Return ``(distribution name, version)`` of the installed FBGEMM build, if any."""
    for dist in ("fbgemm-gpu", "fbgemm-gpu-cpu", "fbgemm-gpu-nightly", "fbgemm-gpu-nightly-cpu"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_torch_fbgemm(torch_version: str, fbgemm: tuple[str, str] | None) -> None:
    """Raise :class:`EnvironmentMismatch` unless ``fbgemm`` was built for ``torch_version``.

    >>> check_torch_fbgemm("2.13.0+cpu", ("fbgemm-gpu-cpu", "1.8.0"))
    >>> check_torch_fbgemm("2.13.0", ("fbgemm-gpu-cpu", "1.9.0"))
    Traceback (most recent call last):
    ...
    torchrec_app.env_check.EnvironmentMismatch: fbgemm-gpu-cpu 1.9.0 is not built for torch 2.13.0 ...
    """
    if fbgemm is None:
        raise EnvironmentMismatch(
            "FBGEMM is not installed: install fbgemm-gpu-cpu (CPU) or fbgemm-gpu (CUDA) "
            "matching your torch; see requirements/cpu.txt or requirements/gpu.txt."
        )
    dist, version = fbgemm
    wanted = FBGEMM_FOR_TORCH.get(_minor(version))
    if wanted != _minor(torch_version):
        known = ", ".join(f"fbgemm {f} <-> torch {t}" for f, t in FBGEMM_FOR_TORCH.items())
        raise EnvironmentMismatch(
            f"{dist} {version} is not built for torch {torch_version} "
            f"(it needs torch {wanted or 'unknown'}; known pairs: {known}). "
            "Reinstall with `bash launch/install_env.sh` or pin a matching pair."
        )


def check_environment() -> None:
    """Check the installed torch/FBGEMM pair, then that torchrec imports."""
    import torch

    check_torch_fbgemm(torch.__version__, installed_fbgemm())
    import torchrec  # noqa: F401  (loads FBGEMM's operators)


def main() -> int:
    try:
        check_environment()
    except EnvironmentMismatch as err:
        print(f"environment check failed: {err}", file=sys.stderr)
        return 1
    import torch
    import torchrec

    fbgemm = installed_fbgemm()
    print(f"ok: torch {torch.__version__}, {fbgemm[0]} {fbgemm[1]}, torchrec {torchrec.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
