"""``Syftlab``: the extension's settings, one traitlets object (``c.Syftlab.*``)."""

from __future__ import annotations

import os

from traitlets import Float, Unicode, default
from traitlets.config import Configurable


class Syftlab(Configurable):
    """Which side this JupyterLab serves, and how it reaches the workers.

    Set ``owner_state`` for a data owner's JupyterLab (the approval panel);
    otherwise it is a scientist's JupyterLab and lists the workers in
    ``connections_file``.
    """

    owner_state = Unicode(
        "", config=True,
        help="The worker's state directory. Set: this JupyterLab is the owner's approval panel.",
    )
    connections_file = Unicode(
        "", config=True,
        help="JSON list of {name, url, token}: the workers a scientist's sidebar shows "
             "(default: $SYFTLAB_CONNECTIONS, which the demo and binder/start export).",
    )

    @default("connections_file")
    def _connections_default(self) -> str:
        return os.environ.get("SYFTLAB_CONNECTIONS", "")
    datasets_ttl = Float(
        30.0, config=True,
        help="Seconds a worker's dataset list is cached (it changes when the worker restarts).",
    )
    connect_timeout = Float(
        3.0, config=True, help="Seconds to wait for a worker to answer when connecting.")
    retry_after = Float(
        10.0, config=True,
        help="Seconds a worker that failed to connect is shown offline before the next try.")

    @property
    def side(self) -> str:
        return "owner" if self.owner_state else "scientist"
