"""The OS sandbox around scientist kernels (bubblewrap).

Kernels run scientist code, so they get: no network (``--unshare-net``), their
own pid namespace, a read-only view of the system, an empty ``/tmp`` and
``/dev/shm``, a clean environment, and nothing of the worker's state dir or of
the private asset files (the worker loads assets itself and hands them over).
Their only door out is the ZeroMQ ``ipc`` socket directory bind-mounted in.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

#: Directories replaced by empty tmpfs in every sandbox.
HIDDEN_DIRS = ("/tmp", "/dev/shm", "/root", "/home", "/run", "/var/tmp", "/mnt", "/media")


@functools.cache
def bwrap_path() -> str | None:
    """Path of a working ``bwrap``, or None where user namespaces are not available."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    try:
        probe = subprocess.run(
            [exe, "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev",
             "--proc", "/proc", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return exe if probe.returncode == 0 else None


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _python_dirs() -> list[Path]:
    """Directories the kernel's Python needs to see inside hidden trees."""
    import kernel_bridge

    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(kernel_bridge.__file__).parent}
    # A venv's python is often a symlink into a pyenv/conda tree under $HOME.
    dirs.add(Path(os.path.realpath(sys.executable)).parent.parent)
    return sorted(dirs)


def sandbox_env(threads: int) -> dict[str, str]:
    """The whole environment a kernel starts with (nothing inherited from the worker)."""
    n = str(max(1, int(threads)))
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TORCH_NUM_THREADS": n,
    }


def kernel_argv(ipc_dir: Path, hide: Iterable[Path], threads: int = 1) -> list[str]:
    """The bubblewrap command line that starts one ipykernel.

    Parameters
    ----------
    ipc_dir : Path
        The kernel's own socket directory (bind-mounted read-write).
    hide : iterable of Path
        Files and directories the kernel must not see (state dir, private files).
    threads : int
        Threads for OpenMP/MKL/torch inside the kernel.
    """
    exe = bwrap_path()
    if exe is None:
        raise RuntimeError("bubblewrap is not available")
    argv = [
        exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--clearenv",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
    ]
    hidden_roots = [Path(d) for d in HIDDEN_DIRS if Path(d).is_dir()]
    for d in hidden_roots:
        argv += ["--tmpfs", str(d)]
    rebound = [p for p in _python_dirs() if _under(p, hidden_roots) and p.exists()]
    for p in rebound:
        argv += ["--ro-bind", str(p), str(p)]
    for raw in hide:
        p = Path(raw).resolve()
        if not p.exists() or (_under(p, hidden_roots) and not _under(p, rebound)):
            continue  # already invisible
        if p.is_dir():
            argv += ["--tmpfs", str(p)]
        else:
            argv += ["--ro-bind", "/dev/null", str(p)]
    argv += ["--bind", str(ipc_dir), str(ipc_dir), "--chdir", "/tmp"]
    for k, v in sandbox_env(threads).items():
        argv += ["--setenv", k, v]
    argv += [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return argv


def unsandboxed_argv() -> list[str]:
    """The plain kernel command line used with ``--unsafe-no-sandbox``."""
    return [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
