"""Loading the server extension: pick the side from ``c.Syftlab``, add the handlers."""

from __future__ import annotations

from typing import Any

from .config import Syftlab
from .handlers import Side, handlers
from .owner_side import OwnerSide
from .scientist_side import ScientistSide


def make_side(cfg: Syftlab) -> Side:
    if cfg.owner_state:
        return OwnerSide(cfg.owner_state)
    return ScientistSide(cfg.connections_file, cfg.datasets_ttl,
                         connect_timeout=cfg.connect_timeout, retry_after=cfg.retry_after)


def load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server at start-up (``_load_jupyter_server_extension``)."""
    cfg = Syftlab(parent=serverapp)
    side = make_side(cfg)
    web_app = serverapp.web_app
    web_app.settings["syftlab_side"] = side
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("syftlab: serving the %s side%s", side.side,
                       f" for {cfg.owner_state}" if cfg.owner_state else "")
