"""What an FL job did, round by round: loss, accuracy, who took part, ε per owner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundRecord:
    """One round of an FL job.

    Attributes
    ----------
    round : int
        1-based.
    workers : list of str
        Workers whose updates are in the aggregate.
    dropped : dict
        Workers left out of the round, and why (the error's type and message).
    examples : int
        Samples behind the aggregate (the sum of the workers' counts).
    seconds : float
        Wall time of the round, on the scientist's side.
    loss, accuracy : float or None
        The received global model's mean loss and accuracy over the workers'
        data, as the plan released them (None with DP: not released).
    epsilon : dict
        ε each owner's plan has spent after the round.
    stop : str or None
        Why the job stopped after this round (a budget or run limit), if it did.
    """

    round: int
    workers: list[str]
    dropped: dict[str, str]
    examples: int
    seconds: float
    loss: float | None = None
    accuracy: float | None = None
    epsilon: dict[str, float] = field(default_factory=dict)
    stop: str | None = None

    def summary(self) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"loss={self.loss:.4f}")
        if self.accuracy is not None:
            parts.append(f"acc={self.accuracy:.3f}")
        if any(self.epsilon.values()):
            parts.append("ε=" + "/".join(f"{e:.2f}" for e in self.epsilon.values()))
        if self.dropped:
            parts.append(f"dropped: {', '.join(self.dropped)}")
        return ", ".join(parts)


class History:
    """The rounds of an FL job (``job.history``; :meth:`FLJob.run` returns it).

    Parameters
    ----------
    workers : list of str
        The job's workers.
    dp : bool
        Whether the job trains with DP (then ε is plotted and loss is not released).
    """

    def __init__(self, workers: list[str], dp: bool = False) -> None:
        self.workers = list(workers)
        self.dp = dp
        self.rounds: list[RoundRecord] = []
        self.stopped: str | None = None

    def add(self, record: RoundRecord) -> None:
        self.rounds.append(record)

    def __len__(self) -> int:
        return len(self.rounds)

    def __getitem__(self, i: int) -> RoundRecord:
        return self.rounds[i]

    @property
    def loss(self) -> list[float | None]:
        """Mean loss of the global model each round received (None where not released)."""
        return [r.loss for r in self.rounds]

    @property
    def accuracy(self) -> list[float | None]:
        """Accuracy of the global model each round received, over the workers' data."""
        return [r.accuracy for r in self.rounds]

    @property
    def epsilon(self) -> dict[str, list[float]]:
        """ε spent on each owner's plan after each round."""
        return {w: [r.epsilon.get(w, 0.0) for r in self.rounds] for w in self.workers}

    @property
    def dropped(self) -> dict[int, dict[str, str]]:
        """Rounds in which workers were left out, and why."""
        return {r.round: r.dropped for r in self.rounds if r.dropped}

    def __repr__(self) -> str:
        lines = [f"<History: {len(self.rounds)} round(s) on {', '.join(self.workers)}"
                 + (f"; stopped: {self.stopped}" if self.stopped else "") + ">"]
        for r in self.rounds[-10:]:
            lines.append(f"  round {r.round:>3}: {len(r.workers)} workers, {r.examples} "
                         f"examples, {r.seconds:.2f} s; {r.summary()}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Loss and accuracy per round, and ε per owner (matplotlib); returns the figure."""
        import matplotlib.pyplot as plt

        panels = [p for p in ("loss", "accuracy") if any(v is not None for v in getattr(self, p))]
        if self.dp:
            panels.append("epsilon")
        panels = panels or ["loss"]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2),
                                 squeeze=False)
        x = [r.round for r in self.rounds]
        for a, panel in zip(axes[0], panels, strict=True):
            if panel == "epsilon":
                for w, eps in self.epsilon.items():
                    a.plot(x, eps, marker="o", label=w)
                a.set_ylabel("ε spent")
                a.legend()
            else:
                values = getattr(self, panel)
                a.plot(x, [float("nan") if v is None else v for v in values], marker="o")
                a.set_ylabel(panel)
            a.set_xlabel("round")
            a.grid(alpha=0.3)
        fig.tight_layout()
        return fig
