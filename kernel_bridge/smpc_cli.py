"""``syftlab smpc ...``: a worker's SMPC identity and the peers and dealers its owner trusts."""

from __future__ import annotations

import argparse

from .smpc import keys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``syftlab smpc fingerprint | trust | trusted``."""
    s = sub.add_parser("smpc", help="SMPC: this worker's key fingerprint, trusted peers/dealers")
    ssub = s.add_subparsers(dest="action", required=True)
    f = ssub.add_parser("fingerprint", help="print this worker's SMPC key fingerprint "
                        "(give it to the owners of the other parties)")
    f.add_argument("--state", required=True, help="the worker's state directory")
    f.add_argument("--name", default="worker", help=argparse.SUPPRESS)
    t = ssub.add_parser("trust", help="pin another worker's fingerprint as a peer or dealer")
    t.add_argument("name")
    t.add_argument("fingerprint")
    role = t.add_mutually_exclusive_group()
    role.add_argument("--peer", dest="role", action="store_const", const="peer")
    role.add_argument("--dealer", dest="role", action="store_const", const="dealer")
    t.add_argument("--state", required=True, help="the worker's state directory")
    lst = ssub.add_parser("trusted", help="list the pinned peers and dealers (trust file)")
    lst.add_argument("--state", required=True, help="the worker's state directory")


def run(args: argparse.Namespace) -> int:
    """Run ``syftlab smpc ACTION``."""
    if args.action == "fingerprint":
        print(keys.load_or_create(args.state, args.name).fingerprint)
    elif args.action == "trust":
        keys.trust(args.state, args.name, args.fingerprint, args.role or "peer")
        print(f"trusted {args.name} as {args.role or 'peer'}")
    elif args.action == "trusted":
        for role, table in keys.TrustStore(args.state).entries().items():
            for name, fp in sorted(table.items()):
                print(f"{role:<7} {name:<20} {fp}")
    return 0
