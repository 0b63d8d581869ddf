"""Federated learning: training plans, encoding, strategies and secure aggregation.

The pure protocol code lives here (importable by the worker and the
scientist): :mod:`.encoding` (table -> tensors from public declarations),
:mod:`.model_code` (a model's structure as code), :mod:`.training_plan` (the
plan every worker runs each round), :mod:`.strategies` (FedAvg, FedProx,
FedAdagrad, FedAdam, FedYogi, as Flower defines them) and :mod:`.secagg`
(Bonawitz et al.'s secure aggregation).

The scientist's API is re-exported lazily from
:mod:`kernel_bridge.scientist.fl` (PEP 562), so the worker, which imports this
package, never loads the client::

    from kernel_bridge import fl
    job = fl.FedAvg(model, workers=[alice, bob, carol], data="heart", ...)
"""

from __future__ import annotations

from typing import Any

from .training_plan import DP, TrainingConfig

#: Names served by kernel_bridge.scientist.fl (the one edge listed in the layers contract).
_SCIENTIST = ("FLJob", "FedAvg", "FedProx", "FedAdam", "FedYogi", "FedAdagrad", "History",
              "send_model", "ModelPointer")


def __getattr__(name: str) -> Any:
    if name in _SCIENTIST:
        from ..scientist import fl as _client

        return getattr(_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SCIENTIST])


__all__ = ["DP", "TrainingConfig", *_SCIENTIST]
