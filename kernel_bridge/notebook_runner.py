"""Running the tutorial notebooks headless with nbclient, against live workers.

The kernel that runs them must be this Python (the one with ``kernel_bridge``
installed), whatever kernelspecs the machine has: :func:`kernelspec_dir`
writes a ``python3`` spec pointing at :data:`sys.executable` into a folder
that goes first on ``JUPYTER_PATH`` (JupyterLab in the demo uses it too).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .scientist import connections

KERNEL_NAME = "python3"
DISPLAY_NAME = "Python 3 (ipykernel)"


def kernelspec_dir(root: str | os.PathLike[str]) -> Path:
    """Write a ``python3`` kernelspec for this interpreter under ``root``; returns ``root``."""
    spec = Path(root) / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        # The standard name: notebooks saved anywhere say it, so Lab does not mark them
        # modified on open to record another kernel name.
        "display_name": DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
    }, indent=1))
    return Path(root)


def kernel_env(jupyter_dir: Path, connection_file: Path) -> dict[str, str]:
    """The environment variables a notebook kernel needs to find our spec and the workers."""
    path = os.pathsep.join(p for p in (str(jupyter_dir), os.environ.get("JUPYTER_PATH")) if p)
    return {"JUPYTER_PATH": path, connections.ENV_VAR: str(connection_file),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def execute(notebook: str | os.PathLike[str], out: str | os.PathLike[str],
            connection_file: str | os.PathLike[str], timeout: float = 300,
            progress: bool = True,
            after_cell: Callable[[int, Any], None] | None = None) -> Any:
    """Execute ``notebook`` top to bottom and write the executed copy to ``out``.

    Parameters
    ----------
    notebook, out : path
        The notebook to run and where its executed copy goes.
    connection_file : path
        The workers (``connections.json``) the notebook's cells connect to.
    timeout : float
        Seconds one cell may take.
    progress : bool
        Show a tqdm bar over the cells on stderr.
    after_cell : callable, optional
        Called as ``after_cell(index, cell)`` once each cell has run (a test can
        play the data owner there, e.g. decide in "the panel" before the owner cell).

    Returns
    -------
    nbformat.NotebookNode
        The executed notebook (also written to ``out``, even when a cell failed).
    """
    import nbformat
    from nbclient import NotebookClient
    from tqdm import tqdm

    src, dst = Path(notebook), Path(out)
    nb = nbformat.read(src, as_version=4)
    jupyter_dir = kernelspec_dir(dst.parent / ".jupyter-kernels")
    env = kernel_env(jupyter_dir, Path(connection_file).resolve())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernelspec lookup and the kernel both read these
    bar = tqdm(total=sum(c.cell_type == "code" for c in nb.cells), desc=src.name, unit="cell",
               disable=not progress, file=sys.stderr)
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                                resources={"metadata": {"path": str(src.parent.resolve())}},
                                on_cell_executed=lambda **kw: _executed(kw, bar, after_cell))
        try:
            client.execute()
        finally:
            dst.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dst)
    finally:
        bar.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _executed(kw: dict[str, Any], bar: Any,
              after_cell: Callable[[int, Any], None] | None) -> None:
    bar.update()
    if after_cell is not None:
        after_cell(int(kw.get("cell_index", -1)), kw.get("cell"))


def output_text(nb: Any) -> str:
    """Every output of an executed notebook as one string (text and HTML), for checks."""
    parts: list[str] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(str(o.get("text", "")))
            for v in (o.get("data") or {}).values():
                parts.append(v if isinstance(v, str) else json.dumps(v))
            parts.append(str(o.get("evalue", "")))
            parts.extend(str(t) for t in o.get("traceback", []))
    return "\n".join(parts)
