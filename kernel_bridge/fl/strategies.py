"""Aggregation strategies: how a round's updates become the next global model.

The definitions follow Flower 1.42's ``flwr.serverapp.strategy`` (FedAvg,
FedProx, FedAdagrad, FedAdam, FedYogi) line by line, with the same defaults, so
results match Flower's on the same updates (``benchmarks/fl.py`` checks it by
running Flower's own strategies in their own venv). They are written here, not
imported, because ``flwr`` 1.42 pins ``packaging==25.0`` (this project's
environment has 26) and brings grpcio, fastapi, uvicorn, SQLAlchemy and about
25 other packages into the data owner's and the scientist's environment for
six formulas; see the README.

Every strategy starts from the *weighted mean* of the workers' weights: the
sum of ``n_k * w_k`` over the sum of ``n_k``, which is all a secure aggregate
reveals. FedAvg and FedProx return that mean (FedProx's proximal term lives in
the workers' training code: ``prox_mu``); the FedOpt family (Reddi et al.,
2021) treats ``mean - current`` as a pseudo-gradient for a server optimizer.
A strategy is any object with ``aggregate(current, mean, server_round)``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

Weights = dict[str, torch.Tensor]


class Strategy(Protocol):
    """What an FL job asks of its strategy."""

    #: Proximal term of the workers' local loss (FedProx), 0 for none.
    prox_mu: float

    def aggregate(self, current: Weights, mean: Weights, server_round: int) -> Weights:
        """The next global weights from the current ones and the round's weighted mean."""
        ...


def weighted_mean(summed: Weights, total: float) -> Weights:
    """``sum_k n_k w_k / sum_k n_k`` from the two sums (what secure aggregation reveals)."""
    if total <= 0:
        raise ValueError("no examples in the round's aggregate")
    return {k: (v.double() / total).float() for k, v in summed.items()}


class FedAvg:
    """Federated averaging (McMahan et al., 2017): the weighted mean, as Flower's ``FedAvg``."""

    prox_mu = 0.0

    def aggregate(self, current: Weights, mean: Weights, server_round: int) -> Weights:
        return {k: v.clone() for k, v in mean.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg's aggregation; workers add ``mu/2 ||w - w_t||^2``.

    Parameters
    ----------
    proximal_mu : float
        The proximal term's weight (Flower's ``proximal_mu``).
    """

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if proximal_mu < 0:
            raise ValueError("proximal_mu must be >= 0")
        self.prox_mu = float(proximal_mu)

    def __repr__(self) -> str:
        return f"FedProx(proximal_mu={self.prox_mu})"


class FedOpt:
    """Shared part of FedAdagrad, FedAdam and FedYogi (Flower's ``FedOpt``).

    ``delta = mean - current``; ``m = beta_1 m + (1 - beta_1) delta``.
    """

    prox_mu = 0.0

    def __init__(self, eta: float = 1e-1, beta_1: float = 0.0, beta_2: float = 0.0,
                 tau: float = 1e-3) -> None:
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau
        self.m_t: dict[str, Any] = {}
        self.v_t: dict[str, Any] = {}

    def _delta_and_m(self, current: Weights, mean: Weights) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
        if set(current) != set(mean):
            raise ValueError("the aggregate's keys differ from the current model's")
        x = {k: current[k].double() for k in current}
        delta = {k: mean[k].double() - x[k] for k in current}
        if not self.m_t:
            self.m_t = {k: torch.zeros_like(v) for k, v in delta.items()}
        self.m_t = {k: self.beta_1 * v + (1 - self.beta_1) * delta[k]
                    for k, v in self.m_t.items()}
        return x, delta

    def _step(self, x: dict[str, Any], eta: float) -> Weights:
        return {k: (v + eta * self.m_t[k] / (self.v_t[k].sqrt() + self.tau)).float()
                for k, v in x.items()}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eta={self.eta}, beta_1={self.beta_1}, "
                f"beta_2={self.beta_2}, tau={self.tau})")


class FedAdagrad(FedOpt):
    """FedAdagrad (Reddi et al., 2021): ``v += delta^2``; ``x + eta m / (sqrt v + tau)``."""

    def __init__(self, eta: float = 1e-1, tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=0.0, beta_2=0.0, tau=tau)

    def aggregate(self, current: Weights, mean: Weights, server_round: int) -> Weights:
        x, delta = self._delta_and_m(current, mean)
        if not self.v_t:
            self.v_t = {k: torch.zeros_like(v) for k, v in delta.items()}
        self.v_t = {k: v + delta[k] ** 2 for k, v in self.v_t.items()}
        return self._step(x, self.eta)


class FedAdam(FedOpt):
    """FedAdam: Adam on the pseudo-gradient, with Flower's bias-corrected step size."""

    def __init__(self, eta: float = 1e-1, beta_1: float = 0.9, beta_2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def aggregate(self, current: Weights, mean: Weights, server_round: int) -> Weights:
        x, delta = self._delta_and_m(current, mean)
        if not self.v_t:
            self.v_t = {k: torch.zeros_like(v) for k, v in delta.items()}
        self.v_t = {k: self.beta_2 * v + (1 - self.beta_2) * delta[k] ** 2
                    for k, v in self.v_t.items()}
        eta_norm = (self.eta * (1 - self.beta_2 ** (server_round + 1.0)) ** 0.5
                    / (1 - self.beta_1 ** (server_round + 1.0)))
        return self._step(x, eta_norm)


class FedYogi(FedOpt):
    """FedYogi: ``v -= (1 - beta_2) delta^2 sign(v - delta^2)``, Flower's defaults."""

    def __init__(self, eta: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99,
                 tau: float = 1e-3) -> None:
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def aggregate(self, current: Weights, mean: Weights, server_round: int) -> Weights:
        x, delta = self._delta_and_m(current, mean)
        if not self.v_t:
            self.v_t = {k: torch.zeros_like(v) for k, v in delta.items()}
        self.v_t = {k: v - (1.0 - self.beta_2) * delta[k] ** 2 * torch.sign(v - delta[k] ** 2)
                    for k, v in self.v_t.items()}
        return self._step(x, self.eta)


STRATEGIES: dict[str, type] = {"fedavg": FedAvg, "fedprox": FedProx, "fedadagrad": FedAdagrad,
                               "fedadam": FedAdam, "fedyogi": FedYogi}
