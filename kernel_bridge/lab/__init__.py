"""syftlab in JupyterLab: the server extension behind the sidebar and approval panel.

The same extension serves one of two sides, chosen by configuration
(:class:`~kernel_bridge.lab.config.Syftlab`): a *scientist* JupyterLab lists
the workers in ``c.Syftlab.connections_file``; an *owner* JupyterLab
(``c.Syftlab.owner_state = "./state/alice"``) reviews that worker's requests.
"""

from __future__ import annotations

from typing import Any

from .app import load_jupyter_server_extension


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kernel_bridge.lab"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "syftlab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    load_jupyter_server_extension(serverapp)


__all__ = ["_jupyter_labextension_paths", "_jupyter_server_extension_points",
           "_load_jupyter_server_extension"]
