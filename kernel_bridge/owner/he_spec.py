"""The owner's HE declarations: the ``[assets.<name>.he]`` table of the worker's TOML.

Two kinds of service, one per asset:

* **encrypted predictions** from a model asset (a ``.pt`` state_dict of linear
  layers)::

      [assets.risk_model.he]
      predictions_per_scientist = 20      # model-extraction defence
      activation = [0.0, 0.0, 1.0]        # c0 + c1 x + c2 x² between layers (default x²)

* **encrypted evaluation** of a scientist's linear model on a table's rows, with
  a DP aggregate (the asset needs a ``[assets.<name>.dp]`` table: ε is debited
  on its ledger)::

      [assets.heart.he]
      columns = ["age", "trestbps", "chol", "thalach", "oldpeak", "exang"]
      label = "target"
      epsilon_per_evaluation = 0.5

Feature columns must be declared with bounds (or be ``bool``): the worker scales
them into [0, 1] with those bounds, which is what the DP noise is calibrated to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kernel_bridge.specs import AssetSpec, key_error

__all__ = ["HESpec", "parse_he"]

_PREDICT_KEYS = {"predictions_per_scientist", "activation"}
_EVALUATE_KEYS = {"columns", "label", "epsilon_per_evaluation"}


@dataclass
class HESpec:
    """One asset's HE service.

    Attributes
    ----------
    asset : str
        The asset's name.
    kind : {"predict", "evaluate"}
        Encrypted predictions from a model, or encrypted evaluation on rows.
    predictions_per_scientist : int
        (predict) Predictions each scientist may ask for, ever.
    activation : list of float
        (predict) ``c0, c1, c2`` of the activation between layers.
    columns : list of str
        (evaluate) Feature columns, in the order of the scientist's weights.
    label : str
        (evaluate) The label column (values clipped into [0, 1]).
    epsilon_per_evaluation : float
        (evaluate) ε debited per evaluation.
    """

    asset: str
    kind: str
    predictions_per_scientist: int = 0
    activation: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    columns: list[str] = field(default_factory=list)
    label: str = ""
    epsilon_per_evaluation: float = 0.0

    def to_doc(self) -> dict[str, Any]:
        """The declaration as JSON-friendly types (public: it is policy, not data)."""
        if self.kind == "predict":
            return {"asset": self.asset, "kind": self.kind,
                    "predictions_per_scientist": self.predictions_per_scientist,
                    "activation": list(self.activation)}
        return {"asset": self.asset, "kind": self.kind, "columns": list(self.columns),
                "label": self.label, "epsilon_per_evaluation": self.epsilon_per_evaluation}


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_he(raw: Any, spec: AssetSpec) -> HESpec:
    """Check an ``[assets.<name>.he]`` table against its asset.

    Raises
    ------
    ConfigError
        Unknown keys, a mix of both kinds, bad values, or an asset that cannot serve it;
        the key is relative to the ``he`` table.
    """
    if not isinstance(raw, dict):
        raise key_error("he", "expected a table")
    keys = set(raw)
    unknown = keys - _PREDICT_KEYS - _EVALUATE_KEYS
    if unknown:
        allowed = ", ".join(sorted(_PREDICT_KEYS | _EVALUATE_KEYS))
        raise key_error(f"he.{sorted(unknown)[0]}", f"unknown key (allowed: {allowed})")
    if keys & _PREDICT_KEYS and keys & _EVALUATE_KEYS:
        raise key_error("he", "declare either predictions (a model) or evaluation (a table)")
    if keys & _PREDICT_KEYS:
        n = raw.get("predictions_per_scientist")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise key_error("he.predictions_per_scientist", "must be a non-negative integer")
        act = raw.get("activation", [0.0, 0.0, 1.0])
        if not isinstance(act, list) or len(act) != 3 or not all(_is_num(c) for c in act) \
                or act[2] == 0:
            raise key_error("he.activation", "must be [c0, c1, c2] with c2 != 0")
        if spec.path.suffix.lower() != ".pt":
            raise key_error("he", "encrypted predictions need a model asset (.pt state_dict)")
        return HESpec(spec.name, "predict", predictions_per_scientist=n,
                      activation=[float(c) for c in act])
    columns, label = raw.get("columns"), raw.get("label")
    eps = raw.get("epsilon_per_evaluation")
    if not isinstance(columns, list) or not columns or \
            not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise key_error("he.columns", "must be a non-empty list of distinct column names")
    if not isinstance(label, str):
        raise key_error("he.label", "must name the label column")
    if not isinstance(eps, int | float) or not _is_num(eps) or not 0 < eps < math.inf:
        raise key_error("he.epsilon_per_evaluation", "must be a positive number")
    if spec.dp is None:
        raise key_error("he", "encrypted evaluation debits ε: the asset needs a dp table")
    declared = {c.name: c for c in spec.columns}
    for name in [*columns, label]:
        col = declared.get(name)
        if col is None:
            raise key_error("he.columns", f"{name!r} is not a declared column")
        if col.kind == "bool":
            continue
        if col.kind not in ("int", "float") or not col.bounded:
            raise key_error("he.columns", f"{name!r} needs numeric lower and upper bounds "
                            "(or type bool)")
    return HESpec(spec.name, "evaluate", columns=list(columns), label=label,
                  epsilon_per_evaluation=float(eps))
