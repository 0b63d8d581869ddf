"""The ``[smpc]`` table of the worker TOML: the dealer role, pinned peers and dealers.

::

    [smpc]
    dealer = false          # true: a dealer (crypto provider) holding no assets
    timeout = 30            # seconds any protocol wait may take before it fails
    [smpc.peers]            # computing parties this worker exchanges masked values with
    bob = "sha256:<64 hex>"
    [smpc.dealers]          # dealers whose correlated randomness this worker accepts
    dave = "sha256:<64 hex>"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class SmpcSettings:
    """A worker's SMPC settings (see the module docstring)."""

    dealer: bool = False
    timeout: float = 30.0
    peers: dict[str, str] = field(default_factory=dict)
    dealers: dict[str, str] = field(default_factory=dict)

    def pins(self) -> dict[str, dict[str, str]]:
        """``{role: {name: fingerprint}}`` for :class:`~kernel_bridge.smpc.keys.TrustStore`."""
        return {"peer": dict(self.peers), "dealer": dict(self.dealers)}


def _pins(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"smpc.{where}: expected a table of name = \"sha256:...\"",
                          key=f"smpc.{where}")
    out = {}
    for name, fp in value.items():
        if not (isinstance(fp, str) and fp.startswith("sha256:") and len(fp) == 71):
            raise ConfigError(f"smpc.{where}.{name}: expected \"sha256:\" and 64 hex digits "
                              "(syftlab smpc fingerprint on that worker)",
                              key=f"smpc.{where}.{name}")
        out[str(name)] = fp.lower()
    return out


def parse_smpc(table: Any) -> SmpcSettings:
    """Parse the ``[smpc]`` table; :class:`ConfigError` names the bad key."""
    if not isinstance(table, Mapping):
        raise ConfigError("smpc: expected a table", key="smpc")
    unknown = sorted(set(table) - {"dealer", "timeout", "peers", "dealers"})
    if unknown:
        raise ConfigError(f"smpc.{unknown[0]}: unknown key (allowed: dealer, timeout, "
                          "peers, dealers)", key=f"smpc.{unknown[0]}")
    dealer = table.get("dealer", False)
    if not isinstance(dealer, bool):
        raise ConfigError("smpc.dealer: expected true or false", key="smpc.dealer")
    timeout = table.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
            not 0 < timeout < math.inf:
        raise ConfigError("smpc.timeout: expected a positive number of seconds",
                          key="smpc.timeout")
    return SmpcSettings(dealer=dealer, timeout=float(timeout),
                        peers=_pins(table.get("peers", {}), "peers"),
                        dealers=_pins(table.get("dealers", {}), "dealers"))
