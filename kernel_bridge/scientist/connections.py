"""The connection file a demo writes, so notebooks connect with no manual step.

``syftlab demo`` writes ``.demo/connections.json``::

    {"alice": {"url": "ws://127.0.0.1:8765", "token": "...", "state": "/.../.demo/alice"},
     "bob": {...}}

and exports its path as ``SYFTLAB_CONNECTIONS`` to the kernels it starts.
A worker served over TLS has a ``wss://`` URL and a ``"fingerprint":
"sha256:..."`` entry: the certificate the client pins.
The ``state`` entry is for the owner cells of the tutorials (``kb.Owner``),
which run on the same machine in the demo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "SYFTLAB_CONNECTIONS"
FILE_NAME = "connections.json"


def find(start: str | os.PathLike[str] | None = None) -> Path:
    """Where the connection file is: ``$SYFTLAB_CONNECTIONS``, else ``.demo/`` upwards."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / ".demo" / FILE_NAME
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"no {FILE_NAME} found (set {ENV_VAR} or run `make demo` from the repository)")


def load(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The workers of the connection file: name -> ``{"url", "token", "state"}``
    (and ``"fingerprint"`` for a ``wss://`` worker)."""
    data = json.loads(Path(path or find()).read_text())
    if not isinstance(data, dict):
        raise ValueError("a connection file holds a JSON object of workers")
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def write(path: str | os.PathLike[str], workers: dict[str, dict[str, Any]]) -> Path:
    """Write the connection file (readable by its owner only: it holds tokens)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(workers, indent=2))
    tmp.chmod(0o600)
    tmp.replace(p)
    return p
