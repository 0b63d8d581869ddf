"""The connection file a demo writes, so notebooks connect with no manual step.

``syftlab demo`` writes ``.demo/connections.json``::

    {"alice": {"url": "ws://127.0.0.1:8765", "token": "...", "state": "/.../.demo/alice"},
     "bob": {...}}

and exports its path as ``SYFTLAB_CONNECTIONS`` to the kernels it starts.
A worker served over TLS has a ``wss://`` URL and a ``"fingerprint":
"sha256:..."`` entry: the certificate the client pins.
The ``state`` entry is for the owner cells of the tutorials (``kb.Owner``),
which run on the same machine in the demo. A list of ``{"name", "url",
"token", ...}`` objects is read the same way (JupyterLab's sidebar accepts it).

This is the one reader of the file: the ``%remote connect`` magic, the
notebook runner and the Lab's "Remote data" sidebar all use :func:`read`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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


class ConnectionsError(ValueError):
    """The connections file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class ConnectionEntry:
    """One worker of the connections file.

    Attributes
    ----------
    name, url, token : str
        The worker's local name, its ``ws://``/``wss://`` address and the scientist's token.
    fingerprint : str or None
        For a ``wss://`` worker: the certificate's ``sha256:...`` to pin.
    state : str or None
        The worker's state directory (the demo's owner cells open it).
    """

    name: str
    url: str
    token: str
    fingerprint: str | None = None
    state: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"url", "token"}`` and whichever of ``fingerprint``/``state`` are set."""
        out: dict[str, Any] = {"url": self.url, "token": self.token}
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        if self.state:
            out["state"] = self.state
        return out


def read(path: str | os.PathLike[str] | None = None) -> list[ConnectionEntry]:
    """The workers of a connections file, in the file's order.

    Parameters
    ----------
    path : path, optional
        The file; :func:`find` locates it by default.

    Raises
    ------
    ConnectionsError
        The file cannot be read, is not JSON, or an entry lacks a string
        ``name``, ``url`` or ``token`` (or has a non-string fingerprint/state).
    """
    p = Path(path) if path is not None else find()
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConnectionsError(f"cannot read connections file {p}: {exc}") from None
    items = ([{**v, "name": k} for k, v in raw.items() if isinstance(v, dict)]
             if isinstance(raw, dict) else raw)
    if not isinstance(items, list):
        raise ConnectionsError(f"{p}: expected a list of {{name, url, token}}")
    out = []
    for it in items:
        if not (isinstance(it, dict) and all(isinstance(it.get(k), str)
                                             for k in ("name", "url", "token"))):
            raise ConnectionsError(f"{p}: every entry needs string name, url and token")
        optional = {k: it.get(k) for k in ("fingerprint", "state")}
        if any(v is not None and not isinstance(v, str) for v in optional.values()):
            raise ConnectionsError(f"{p}: {it['name']}: fingerprint and state are strings")
        out.append(ConnectionEntry(it["name"], it["url"], it["token"], **optional))
    return out


def load(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The workers of the connection file: name -> ``{"url", "token", "state"}``
    (and ``"fingerprint"`` for a ``wss://`` worker); see :func:`read`."""
    return {c.name: c.as_dict() for c in read(path)}


def write(path: str | os.PathLike[str], workers: dict[str, dict[str, Any]]) -> Path:
    """Write the connection file (readable by its owner only: it holds tokens)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(workers, indent=2))
    tmp.chmod(0o600)
    tmp.replace(p)
    return p
