"""``python -m benchmarks``: run the figures and print them next to their anchors.

Exit status: 0 when every benchmark ran (goals missed are marked MISSED in the
table; with ``--strict`` they also fail the run), 1 when one failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time

from . import core

#: Modules whose import registers benchmarks, in the order they run.
MODULES = ("bridge", "magic", "dp", "widgets", "hostile",
           "smpc_local",  # SMPC (in-process engine vs CrypTen)
           "he",  # HE
           "fl")  # FL (10 real workers vs Flower's run_simulation)
MODULES += ("smpc",)  # smpc: over real workers with a dealer, vs CrypTen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations and smaller sizes (a smoke run)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (a key or its prefix; repeat or use "
                             "commas for several)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a figure misses its goal")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--scientists", type=int, metavar="N",
                        help="scientists of the hostile-load benchmark (default 20, quick 5)")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help="seconds of each phase of the hostile-load benchmark "
                             "(default 60, quick 10)")
    args = parser.parse_args(argv)

    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}")
    if args.list:
        for b in core.REGISTRY.values():
            print(f"{b.key:12} {b.doc}")
        return 0

    import torch

    torch.set_num_threads(1)
    cfg = core.Config.make(args.quick)
    if args.scientists is not None:
        cfg = dataclasses.replace(cfg, hostile_scientists=args.scientists)
    if args.seconds is not None:
        cfg = dataclasses.replace(cfg, hostile_seconds=args.seconds)
    chosen = core.select(args.only)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results, failures = core.run(chosen, cfg, progress)
    elapsed = time.perf_counter() - t0
    print(core.table(results, failures))
    print(f"\n{'quick' if cfg.quick else 'full'} run, {len(results)} figure(s) in "
          f"{elapsed:.1f} s (torch threads: {torch.get_num_threads()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": cfg.quick, "seconds": elapsed,
                       "results": [{**r._asdict(), "goal": str(r.goal), "ok": r.ok}
                                   for r in results],
                       "failures": [f._asdict() for f in failures]}, f, indent=2)
    if failures or (args.strict and not all(r.ok for r in results)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
