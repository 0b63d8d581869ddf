"""The ``syftlab`` command: run a worker, manage tokens, review requests, start the demo.

Run as ``syftlab ...`` (the console script) or ``python -m kernel_bridge ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import cli_he, smpc_cli
from .errors import ConfigError, SyftError
from .owner.terminal import clean


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, help="the worker's state directory")


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """The ``syftlab`` command line (built once per process: the fork server builds it
    before forking, so a launched worker does not spend ~35 ms of CPU on 30 subcommands
    and the gettext lookups of their help strings)."""
    parser = argparse.ArgumentParser(
        prog="syftlab", description="Remote, privacy-preserving data science in Jupyter.")
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a data owner's worker")
    w.add_argument("name", nargs="?", help="worker name (or from --config)")
    w.add_argument("--config", help="TOML file describing the worker and its assets")
    w.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    w.add_argument("--port", type=int, help="websocket port (0 = any free port)")
    w.add_argument("--state", help="state directory (tokens, requests, audit)")
    w.add_argument("--asset", action="append", default=[], metavar="NAME=PATH",
                   help="a private asset (csv, parquet, npy, pt); repeatable")
    w.add_argument("--mock", action="append", default=[], metavar="NAME=PATH",
                   help="the mock of an asset; repeatable")
    w.add_argument("--threads", type=int, help="threads per kernel process (default 1)")
    w.add_argument("--frame-limit-mb", type=float, help="largest websocket frame, MiB")
    w.add_argument("--exec-timeout", type=float, help="default cell timeout, seconds")
    w.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run kernels without bubblewrap (scientist code then sees everything)")
    w.add_argument("--tls", action="store_true",
                   help="serve wss:// with a self-signed certificate kept in the state dir "
                        "(scientists pin its fingerprint)")
    w.add_argument("--tls-cert", help="serve wss:// with this PEM certificate (and --tls-key)")
    w.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    w.add_argument("--upload-quota-mb", type=float,
                   help="upload bytes one session may have outstanding, MiB (default 4096)")
    w.add_argument("--upload-quota-worker-mb", type=float,
                   help="upload bytes all sessions may have outstanding, MiB (default 16384)")
    w.add_argument("--upload-ttl", type=float,
                   help="seconds an upload ticket lives (default 60)")
    w.add_argument("--dealer", action="store_true",  # smpc
                   help="run as an SMPC dealer (crypto provider): holds no assets")
    w.add_argument("--ready-file", help=argparse.SUPPRESS)
    w.add_argument("-v", "--verbose", action="store_true")

    t = sub.add_parser("token", help="scientist tokens")
    tsub = t.add_subparsers(dest="action", required=True)
    ta = tsub.add_parser("add", help="create a token for a scientist (printed once)")
    ta.add_argument("scientist")
    _state_arg(ta)
    tl = tsub.add_parser("list", help="list scientists with tokens")
    _state_arg(tl)
    tr = tsub.add_parser("revoke", help="revoke a scientist's token")
    tr.add_argument("scientist")
    _state_arg(tr)

    r = sub.add_parser("requests", help="review requests for private values")
    rsub = r.add_subparsers(dest="action", required=True)
    rl = rsub.add_parser("list", help="pending requests (--all for every one)")
    rl.add_argument("--all", action="store_true")
    _state_arg(rl)
    rs = rsub.add_parser("show", help="a request's value, lineage and size")
    rs.add_argument("id", type=int)
    _state_arg(rs)
    ra = rsub.add_parser("approve", help="release a request's snapshot to its requester")
    ra.add_argument("id", type=int)
    _state_arg(ra)
    rd = rsub.add_parser("deny", help="deny a request, with a reason")
    rd.add_argument("id", type=int)
    rd.add_argument("--reason", required=True)
    _state_arg(rd)

    d = sub.add_parser("demo", help="start the sample workers (alice, bob, carol; dave the "
                                       "dealer) on localhost")
    d.add_argument("--datasets", help="folder with alice.toml/bob.toml (default: the repo's)")
    d.add_argument("--workers", nargs="+", default=None,
                   help="which sample workers (default: alice bob carol dave)")
    d.add_argument("--state-root", help="folder for the workers' state dirs (default .demo/)")
    d.add_argument("--any-port", action="store_true",
                   help="workers take free ports instead of the configured ones")
    d.add_argument("--no-lab", action="store_true", help="start the workers only")
    d.add_argument("--lab-port", type=int, default=8888, help="JupyterLab's port (0 = free)")
    d.add_argument("--execute", nargs="?", const="start_here.ipynb", metavar="NOTEBOOK",
                   help="run a notebook (default notebooks/start_here.ipynb) headless and "
                        "print where the executed copy is, instead of starting JupyterLab")
    d.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="workers run kernels without bubblewrap (where it cannot run)")
    d.add_argument("--keep-state", action="store_true",
                   help="keep the previous run's requests, budgets and Lab workspaces "
                        "(default: every demo starts clean)")

    b = sub.add_parser("budget", help="DP budgets: spent and remaining per scientist and asset")
    b.add_argument("--state", help="the worker's state directory")
    bsub = b.add_subparsers(dest="action")
    bs = bsub.add_parser("set", help="change a scientist's allowance on an asset")
    bs.add_argument("scientist")
    bs.add_argument("asset")
    bs.add_argument("--epsilon", type=float, required=True)
    bs.add_argument("--delta", type=float)
    bs.add_argument("--state", default=argparse.SUPPRESS)
    bt = bsub.add_parser("set-total", help="change an asset's total allowance (all scientists)")
    bt.add_argument("asset")
    bt.add_argument("--epsilon", type=float, required=True)
    bt.add_argument("--delta", type=float)
    bt.add_argument("--state", default=argparse.SUPPRESS)

    lab = sub.add_parser("lab", help="JupyterLab with the syftlab panel: the owner's approvals "
                         "(--owner-state) or a scientist's remote-data sidebar (--connections)")
    side = lab.add_mutually_exclusive_group(required=True)
    side.add_argument("--owner-state", help="the worker's state directory (approval panel)")
    side.add_argument("--connections", help="JSON list of {name, url, token} (sidebar)")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                     help="passed on to `jupyter lab` (e.g. --port 8889 --no-browser)")

    tl_ = sub.add_parser("tls", help="the worker's TLS certificate")
    tlsub = tl_.add_subparsers(dest="action", required=True)
    tf = tlsub.add_parser("fingerprint", help="print the fingerprint scientists pin")
    tf.add_argument("--cert", help="a PEM certificate (default: the state dir's own)")
    tf.add_argument("--state", help="the worker's state directory")

    from . import plans_cli  # plans

    plans_cli.add_parser(sub)
    cli_he.add_parser(sub)  # HE: syftlab he ...
    smpc_cli.add_parser(sub)  # smpc

    a = sub.add_parser("audit", help="the audit log")
    a.add_argument("--limit", type=int, default=50)
    _state_arg(a)
    return parser


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def run_worker(args: argparse.Namespace) -> int:
    from .owner.config import WorkerConfig, parse_asset_flags
    from .owner.server import WorkerServer

    # Before torch loads (on the first SMPC op): its buffers of 2 MB and more get huge
    # pages, where each 4 KB page of a fresh 8 MB share would fault in on its own (on a VM,
    # a fault costs microseconds: 5 ms per fresh 8 MB tensor).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "threads", "exec_timeout"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.state is not None:
        overrides["state"] = args.state
    if args.frame_limit_mb is not None:
        overrides["frame_limit"] = int(args.frame_limit_mb * 2**20)
    if args.unsafe_no_sandbox:
        overrides["sandbox"] = "none"
    if args.tls or args.tls_cert or args.tls_key:
        overrides["tls"] = True
    if args.tls_cert or args.tls_key:
        from pathlib import Path

        if not (args.tls_cert and args.tls_key):
            raise ConfigError("give both --tls-cert and --tls-key")
        overrides["tls_cert"] = Path(args.tls_cert).resolve()
        overrides["tls_key"] = Path(args.tls_key).resolve()
    for flag, key in (("upload_quota_mb", "upload_quota"),
                      ("upload_quota_worker_mb", "upload_quota_worker")):
        if getattr(args, flag) is not None:
            overrides[key] = int(getattr(args, flag) * 2**20)
    if args.upload_ttl is not None:
        overrides["upload_ttl"] = args.upload_ttl

    assets, mocks = parse_asset_flags(args.asset), parse_asset_flags(args.mock)
    if args.config:
        config = WorkerConfig.from_toml(args.config)
        if args.name:
            overrides["name"] = args.name
        if assets or mocks:
            extra = WorkerConfig.from_args(config.name, state=config.state, assets=assets,
                                           mocks=mocks)
            overrides["assets"] = {**config.assets, **extra.assets}
        config = config.with_overrides(**overrides) if overrides else config
    else:
        if not args.name or "state" not in overrides:
            raise ConfigError("give a worker NAME and --state, or --config FILE")
        state = overrides.pop("state")
        config = WorkerConfig.from_args(args.name, state=state, assets=assets, mocks=mocks,
                                        **overrides)
    if args.dealer:  # smpc
        import dataclasses

        config = config.with_overrides(smpc=dataclasses.replace(config.smpc, dealer=True))
    server = WorkerServer(config)

    def ready(port: int) -> None:
        url = f"{'wss' if config.tls else 'ws'}://{config.host}:{port}"
        print(f"syftlab worker {config.name!r} ready at {url}", flush=True)
        if server.tls_fingerprint:
            print(f"  TLS certificate fingerprint (scientists pin it): "
                  f"{server.tls_fingerprint}", flush=True)
        print(f"  assets: {', '.join(server.assets) or '(none)'}; state: {config.state}",
              flush=True)
        print(f"  give a scientist a token: syftlab token add NAME --state {config.state}",
              flush=True)
        if args.ready_file:
            with open(args.ready_file, "w") as f:
                f.write(url)

    asyncio.run(server.serve_forever(ready))
    return 0


def run_token(args: argparse.Namespace) -> int:
    from .owner.owner_api import Owner

    owner = Owner(args.state)
    if args.action == "add":
        print(owner.add_token(args.scientist))
    elif args.action == "list":
        for t in owner.tokens():
            print(f"{clean(t['name']):<20} created {_when(t['created'])}"
                  f"{'  REVOKED' if t['revoked'] else ''}")
    elif args.action == "revoke":
        if not owner.revoke_token(args.scientist):
            print(f"no token for {args.scientist!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.scientist}")
    return 0


def run_requests(args: argparse.Namespace) -> int:
    from ._format import human_size
    from .owner.owner_api import Owner, render_value

    owner = Owner(args.state)
    if args.action == "list":
        rows = owner.requests(None if args.all else "pending")
        if not rows:
            print("no pending requests" if not args.all else "no requests")
        for r in rows:
            print(clean(f"#{r.id} [{r.status}] {r.scientist}: {r.value_type}, "
                        f"{human_size(r.size)}, {_when(r.created)}  reason: {r.reason or '-'}"))
            code = clean(r.code()).splitlines()
            for line in code[:8]:  # the step that produced the value comes first
                print(f"    {line}")
            if len(code) > 8:
                print(f"    ... ({len(code) - 8} more lines: requests show {r.id})")
    elif args.action == "show":
        r = owner.request(args.id)
        print(clean(f"request #{r.id} by {r.scientist} [{r.status}]"
                    + (f" reason for denial: {r.deny_reason}" if r.deny_reason else "")))
        print(clean(f"reason: {r.reason or '-'}"))
        print(clean(f"value: {r.value_type}, {human_size(r.size)}, sha256 {r.sha256}"))
        print("lineage (the step that produced the value first):")
        for line in clean(r.code(full=True)).splitlines():
            print(f"    {line}")
        print("value:")
        print(clean(render_value(owner.value(args.id))))
    elif args.action == "approve":
        r = owner.approve(args.id)
        print(clean(f"request #{r.id} ({r.scientist}) was already approved: nothing changed"
                    if r.already_decided else f"approved request #{r.id} ({r.scientist})"))
    elif args.action == "deny":
        r = owner.deny(args.id, args.reason)
        print(clean(f"request #{r.id} ({r.scientist}) was already denied: nothing changed"
                    if r.already_decided
                    else f"denied request #{r.id} ({r.scientist}): {args.reason}"))
    return 0


def run_budget(args: argparse.Namespace) -> int:
    from .owner.owner_api import Owner

    if not args.state:
        raise ConfigError("give the worker's --state directory")
    owner = Owner(args.state)
    if args.action in ("set", "set-total"):
        who = args.scientist if args.action == "set" else None
        b = owner.set_budget(who, args.asset, args.epsilon, args.delta)
        print(f"{who or 'total'} on {args.asset}: epsilon limit {b['epsilon_limit']:g}, "
              f"spent {b['epsilon_spent']:g}, remaining {b['epsilon_remaining']:g}")
        return 0
    rows = owner.budget()
    if not rows:
        print("no DP assets recorded (start the worker once with [assets.NAME.dp] declared)")
    print(f"{'asset':<14}{'scientist':<20}{'eps spent':>10}{'eps limit':>10}{'eps left':>10}"
          f"{'delta spent':>12}{'delta limit':>12}")
    for r in rows:
        print(f"{r['asset']:<14}{r['scientist'] or '(total)':<20}{r['epsilon_spent']:>10.4g}"
              f"{r['epsilon_limit']:>10.4g}{r['epsilon_remaining']:>10.4g}"
              f"{r['delta_spent']:>12.3g}{r['delta_limit']:>12.3g}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from .owner.owner_api import Owner

    for e in Owner(args.state).audit(args.limit):
        print(clean(f"{_when(e['ts'])} {e['actor']:<12} {e['event']:<14} {e['detail']}"))
    return 0


def run_tls(args: argparse.Namespace) -> int:
    from .owner.tls import fingerprint_of_file, generated_paths

    if args.cert:
        cert = args.cert
    elif args.state:
        cert = generated_paths(args.state)[0]
    else:
        raise ConfigError("give the worker's --state directory or a --cert file")
    print(fingerprint_of_file(cert))
    return 0


def run_lab(args: argparse.Namespace) -> int:
    """Replace this process with ``jupyter lab`` configured for one side (``c.Syftlab``)."""
    import os
    from pathlib import Path

    if args.owner_state:
        flag = f"--Syftlab.owner_state={Path(args.owner_state).resolve()}"
    else:
        flag = f"--Syftlab.connections_file={Path(args.connections).resolve()}"
    extra = [a for a in args.jupyter_args if a != "--"]
    argv = [sys.executable, "-m", "jupyterlab", flag, *extra]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover - execv does not return


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "worker":
            return run_worker(args)
        if args.command == "token":
            return run_token(args)
        if args.command == "requests":
            return run_requests(args)
        if args.command == "plans":  # plans
            from . import plans_cli

            return plans_cli.run(args)
        if args.command == "demo":
            from pathlib import Path

            from .demo import main as demo_main
            from .demo import repo_root

            execute = None
            if args.execute is not None:
                execute = Path(args.execute)
                if not execute.exists():
                    execute = repo_root() / "notebooks" / args.execute
            return demo_main(Path(args.datasets) if args.datasets else None, args.workers,
                             state_root=Path(args.state_root) if args.state_root else None,
                             any_port=args.any_port, lab=not args.no_lab,
                             lab_port=args.lab_port, execute=execute,
                             unsafe_no_sandbox=args.unsafe_no_sandbox,
                             keep_state=args.keep_state)
        if args.command == "audit":
            return run_audit(args)
        if args.command == "smpc":
            return smpc_cli.run(args)
        if args.command == "tls":
            return run_tls(args)
        if args.command == "budget":
            return run_budget(args)
        if args.command == "lab":
            return run_lab(args)
        if args.command == "he":
            return cli_he.run(args)
    except (SyftError, KeyError, ValueError) as exc:
        msg = exc.message if isinstance(exc, SyftError) else str(exc).strip("'\"")
        print(clean(f"syftlab: error: {msg}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
