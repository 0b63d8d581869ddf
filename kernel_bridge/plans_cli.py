"""``syftlab plans list / show N / approve N / deny N --reason ... / revoke N --reason ...``.

A plan is code plus declared inputs plus an output policy
(:mod:`kernel_bridge.plan_document`); approving it lets its exact hash run on
this worker under that policy, as often as the policy allows.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from .owner.terminal import clean


def add_parser(sub: Any) -> None:
    """Register ``plans`` and its actions on the ``syftlab`` parser's subparsers."""
    p = sub.add_parser("plans", help="review plans (code run under an output policy)")
    psub = p.add_subparsers(dest="action", required=True)
    pl = psub.add_parser("list", help="pending plans (--all for every one)")
    pl.add_argument("--all", action="store_true")
    pl.add_argument("--state", required=True, help="the worker's state directory")
    ps = psub.add_parser("show", help="a plan's code, inputs, policy and progress")
    ps.add_argument("id", type=int)
    ps.add_argument("--state", required=True, help="the worker's state directory")
    pa = psub.add_parser("approve", help="let the plan's exact hash run under its policy")
    pa.add_argument("id", type=int)
    pa.add_argument("--hash", help="the hash you reviewed (plans show); refused if it differs")
    pa.add_argument("--state", required=True, help="the worker's state directory")
    pd = psub.add_parser("deny", help="deny a plan, with a reason")
    pd.add_argument("id", type=int)
    pd.add_argument("--reason", required=True)
    pd.add_argument("--state", required=True, help="the worker's state directory")
    pr = psub.add_parser("revoke", help="stop an approved plan (no further runs)")
    pr.add_argument("id", type=int)
    pr.add_argument("--reason", required=True)
    pr.add_argument("--state", required=True, help="the worker's state directory")


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _progress(p: dict[str, Any]) -> str:
    text = f"runs {p['runs_used']}/{p['max_runs']}"
    if p.get("epsilon_total") is not None:
        text += f", ε {p['epsilon_spent']:.4g} of {p['epsilon_total']:g} spent"
    return text


def run(args: argparse.Namespace) -> int:
    """Carry out ``syftlab plans ...``; returns the exit status."""
    from .owner.owner_api import Owner

    owner = Owner(args.state)
    try:
        if args.action == "list":
            rows = owner.plans(None if args.all else "pending")
            if not rows:
                print("no pending plans" if not args.all else "no plans")
            for p in rows:
                print(clean(f"#{p['id']} [{p['status']}] {p['scientist']}: {p['name']!r} on "
                            f"{p['asset']}, {_progress(p)}, {_when(p['created'])}  "
                            f"reason: {p['reason'] or '-'}"))
                for line in p["policy_words"]:
                    print(clean(f"    - {line}"))
        elif args.action == "show":
            p = owner.plan(args.id)
            doc = p["document"]
            print(clean(f"plan #{p['id']} {p['name']!r} by {p['scientist']} [{p['status']}]"
                        + (f" reason for denial: {p['deny_reason']}" if p["deny_reason"] else "")))
            print(clean(f"hash: {p['hash']}"))
            print(clean(f"reason: {p['reason'] or '-'}"))
            if doc.get("description"):
                print(clean(f"description: {doc['description']}"))
            print("policy:")
            for line in p["policy_words"]:
                print(clean(f"    - {line}"))
            print(clean(f"progress: {_progress(p)}"))
            print(clean(f"code (entry function {doc['entry']!r}):"))
            for i, line in enumerate(doc["code"].splitlines(), 1):
                print(clean(f"{i:>5} | {line}"))
            if p["runs"]:
                print("runs:")
            for r in p["runs"]:
                print(clean(f"    run {r['id']} [{r['status']}] {_when(r['started'])}"
                            + (f" ε {r['epsilon']:.4g}" if r["epsilon"] else "")
                            + (f" error {r['error_type']}" if r["error_type"] else "")))
        elif args.action == "approve":
            p = owner.approve_plan(args.id, args.hash)
            print(clean(f"plan #{p['id']} ({p['scientist']}) was already approved: nothing "
                        "changed" if p["already_decided"] else
                        f"approved plan #{p['id']} ({p['scientist']}), hash {p['hash'][:16]}…"))
        elif args.action == "deny":
            p = owner.deny_plan(args.id, args.reason)
            print(clean(f"plan #{p['id']} ({p['scientist']}) was already denied: nothing changed"
                        if p["already_decided"]
                        else f"denied plan #{p['id']} ({p['scientist']}): {args.reason}"))
        elif args.action == "revoke":
            p = owner.revoke_plan(args.id, args.reason)
            print(clean(f"revoked plan #{p['id']} ({p['scientist']}): {args.reason}"))
    finally:
        owner.close()
    return 0
