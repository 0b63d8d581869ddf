"""``syftlab he ...``: the owner's view of the worker's HE services.

* ``syftlab he services --state DIR``: each HE service the worker declared (from its
  TOML, recorded when it last started) with what each scientist used of it;
* ``syftlab he reset SCIENTIST ASSET --state DIR``: forget a scientist's encrypted
  predictions on a model (audited).

ε spent by encrypted evaluations is on the DP ledger: ``syftlab budget``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``he`` and its subcommands to the ``syftlab`` parser."""
    he = sub.add_parser("he", help="HE services: encrypted predictions and evaluations")
    hsub = he.add_subparsers(dest="action", required=True)
    s = hsub.add_parser("services", help="the HE services and each scientist's use of them")
    s.add_argument("--state", required=True, help="the worker's state directory")
    r = hsub.add_parser("reset", help="forget a scientist's encrypted predictions on a model")
    r.add_argument("scientist")
    r.add_argument("asset")
    r.add_argument("--state", required=True, help="the worker's state directory")


def rows(state: str) -> list[dict[str, Any]]:
    """One row per (service, scientist): see :func:`kernel_bridge.owner.he_counter.overview`."""
    from .owner.he_counter import overview
    from .owner.store import Store

    store = Store(state)
    try:
        return overview(store)
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    """Run ``syftlab he ACTION``."""
    if args.action == "reset":
        from .owner.he_counter import PredictionCounter
        from .owner.store import Store

        store = Store(args.state)
        try:
            n = PredictionCounter(store).reset(args.scientist, args.asset)
        finally:
            store.close()
        print(f"forgot {n} encrypted prediction(s) of {args.scientist} on {args.asset}")
        return 0
    table = rows(args.state)
    if not table:
        print("no HE services (declare [assets.<name>.he] in the worker's TOML and start it)")
        return 0
    print(f"{'asset':14} {'service':24} {'scientist':16} {'used':>10} {'limit':>10}")
    for r in table:
        what = "encrypted predictions" if r["kind"] == "predict" else \
            f"encrypted evaluation (ε={r['epsilon_per_evaluation']:g} each)"
        unit = "" if r["kind"] == "predict" else " ε"
        who = r["scientist"] or "(all)"
        limit = "-" if r["limit"] is None else f"{r['limit']:g}{unit}"
        print(f"{r['asset']:14} {what:24} {who:16} {r['used']:>10g}{unit} {limit:>10}")
    return 0
