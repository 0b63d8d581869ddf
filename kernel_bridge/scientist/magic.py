"""The ``%remote`` line magic and ``%%remote`` cell magic (``%load_ext kernel_bridge``).

``%%remote alice [bob ...] [--mock] [--timeout S] [--noblock]`` runs the cell
on each named worker at once. A cell that fails on a worker stops "Run All"
like a local error (``--allow-error``, or ``%remote config stop_on_error=off``,
lets the notebook go on); ``--mock-on-error`` (or ``%remote config
mock_on_error=on``) re-runs a failed private cell on the mock kernel and shows
the mock's error message next to the receipt, marked MOCK. From a private
kernel only a receipt comes back (the outputs are held, and can be requested);
from a mock kernel the outputs are shown too, marked MOCK. The magic's value
(``_``) is the receipt, or one receipt per worker. Ctrl-C or the notebook's
stop button interrupts the remote cells; their kernels keep their variables.

``%remote connect | list | status | disconnect | config`` manage the workers the magic
knows by name. A :class:`~kernel_bridge.scientist.worker.Worker` bound to a
variable (``alice = kb.connect(...)``) is found by that name too.
"""

from __future__ import annotations

import concurrent.futures as cf
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import Interrupted, RemoteError
from . import connections
from .display import publish, republish
from .receipt import Receipt, receipts_html
from .worker import Worker

#: Seconds to wait for the interrupted cells' receipts before giving up on them.
INTERRUPT_GRACE = 10.0


def _submit(workers: list[Worker], code: str, mock: bool, timeout: float | None
            ) -> list[cf.Future[Receipt]]:
    """Start the cell on every worker at once (coroutines on the client's loop)."""
    return [w.core.submit(w.core.run(code, mock, timeout)) for w in workers]


class Receipts(list):  # type: ignore[type-arg]
    """One receipt per worker of a multi-worker cell; ``receipts["bob"]`` picks one."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for r in self:
                if r.worker.name == key:
                    return r
            raise KeyError(f"no receipt from {key!r}")
        return super().__getitem__(key)

    def __repr__(self) -> str:
        return "\n".join(repr(r) for r in self)

    def _repr_html_(self) -> str:
        return receipts_html(self)


class RemoteRun:
    """A ``%%remote --noblock`` cell in flight: ``done()``, ``result()``, ``interrupt()``."""

    def __init__(self, workers: list[Worker], futures: list[cf.Future[Receipt]],
                 mock: bool) -> None:
        self.workers, self.futures, self.mock = workers, futures, mock
        self._shown = False

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def result(self, timeout: float | None = None) -> Receipt | Receipts:
        """Wait for every worker (at most ``timeout`` s) and return the receipt(s).

        The first call also shows the mock outputs.
        """
        receipts = _collect(self.workers, self.futures, self.mock, timeout)
        if not self._shown:
            self._shown = True
            _show_mock_outputs(receipts)
        return receipts[0] if len(receipts) == 1 else receipts

    def interrupt(self) -> None:
        for w in self.workers:
            w.interrupt(mock=self.mock)

    def __repr__(self) -> str:
        names = ", ".join(w.name for w in self.workers)
        return f"<%%remote on {names}: {'done' if self.done() else 'running'}>"


def _collect(workers: list[Worker], futures: list[cf.Future[Receipt]], mock: bool,
             timeout: float | None) -> Receipts:
    done, pending = cf.wait(futures, timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} worker(s) still running the cell")
    out = Receipts()
    for f in futures:
        out.append(f.result())  # re-raises a worker's error (connection lost, kernel died)
    return out


def _show_mock_outputs(receipts: list[Receipt]) -> None:
    for r in receipts:
        if r.mock and r.outputs:
            republish(r.outputs, r.worker.name, "MOCK")


def run_cell(workers: list[Worker], code: str, mock: bool = False,
             timeout: float | None = None) -> Receipts:
    """Run ``code`` on every worker at once and wait; Ctrl-C interrupts them all.

    Raises
    ------
    Interrupted
        After a KeyboardInterrupt: the remote cells were interrupted (their
        receipts are shown first); the kernels keep their variables.
    """
    futures = _submit(workers, code, mock, timeout)
    try:
        while not all(f.done() for f in futures):
            # Short waits: SIGINT arrives as KeyboardInterrupt in this (main) thread.
            cf.wait(futures, timeout=0.1)
    except KeyboardInterrupt:
        for w in workers:
            try:
                w.interrupt(mock=mock)
            except Exception:  # a dead connection: its future reports the error
                pass
        cf.wait(futures, timeout=INTERRUPT_GRACE)
        finished = Receipts(f.result() for f in futures if f.done() and not f.exception())
        if finished:
            publish({"text/plain": repr(finished), "text/html": finished._repr_html_()})
        names = ", ".join(w.name for w in workers)
        err = Interrupted(f"the cell on {names} was interrupted; the remote kernel keeps "
                          "its variables")
        raise err from None  # IPython shows its one line (SyftError._render_traceback_)
    return _collect(workers, futures, mock, 0)


def _cell_failed(failed: list[Receipt], mock: bool) -> RemoteError:
    """The one-line error a failed ``%%remote`` cell raises (after its receipts are shown)."""
    where = ", ".join(f"{r.worker.name} ({r.error_type or 'error'}"
                      + (f", line {r.error_line})" if r.error_line is not None else ")")
                      for r in failed)
    if mock:
        hint = "its traceback is shown above"
    elif all(r.mock_rerun is not None for r in failed):
        hint = "the mock re-run's message is shown under the receipt"
    else:
        hint = ("a private error's message stays on the worker: --mock-on-error re-runs "
                "the cell on mock data and shows the mock's message")
    err = RemoteError(f"the cell failed on {where}; {hint}. (--allow-error lets "
                      "Run All go on)", workers=[r.worker.name for r in failed])
    err.receipts = failed  # type: ignore[attr-defined]
    return err


@magics_class
class RemoteMagics(Magics):
    """``%remote`` and ``%%remote``; see the module docstring."""

    #: ``%remote config`` options: a failed cell raises (stops Run All); a failed
    #: private cell is re-run on the mock kernel to show the mock's message.
    OPTIONS = ("stop_on_error", "mock_on_error")

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.workers: dict[str, Worker] = {}
        self.stop_on_error = True
        self.mock_on_error = False

    # -- finding workers --------------------------------------------------------
    def worker(self, name: str) -> Worker:
        """The worker called ``name``: connected by ``%remote connect`` or a variable."""
        w = self.workers.get(name)
        if w is None and self.shell is not None:
            candidate = self.shell.user_ns.get(name)
            if isinstance(candidate, Worker):
                w = candidate
        if w is None:
            raise UsageError(f"no worker called {name!r}: run `%remote connect {name} URL "
                             f"--token TOKEN` or `{name} = kb.connect(URL, TOKEN)` first")
        return w

    def known(self) -> dict[str, Worker]:
        found = dict(self.workers)
        if self.shell is not None:
            for k, v in list(self.shell.user_ns.items()):
                if isinstance(v, Worker) and not k.startswith("_"):
                    found.setdefault(k, v)
        return found

    # -- %%remote ---------------------------------------------------------------
    @magic_arguments()
    @argument("targets", nargs="+", help="worker names (variables or %remote connect names)")
    @argument("--mock", action="store_true", help="run on the mock data; outputs shown")
    @argument("--timeout", type=float, default=None, help="seconds before the cell is stopped")
    @argument("--noblock", action="store_true", help="return a handle at once (.result())")
    @argument("--mock-on-error", action="store_true",
              help="if the private cell fails, re-run it on the mock kernel and show its "
                   "error message (marked MOCK)")
    @argument("--allow-error", action="store_true",
              help="a failed cell does not raise (Run All goes on)")
    @cell_magic("remote")  # type: ignore[arg-type]
    def remote_cell(self, line: str, cell: str) -> Any:
        """Run the cell on one or more workers: ``%%remote alice bob [--mock] [--timeout S]``."""
        args = parse_argstring(self.remote_cell, line)  # type: ignore[arg-type]
        workers = [self.worker(n) for n in args.targets]
        if len({id(w) for w in workers}) != len(workers):
            raise UsageError("a worker is named twice")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout takes a positive number of seconds")
        if args.noblock:
            futures = _submit(workers, cell, args.mock, args.timeout)
            return RemoteRun(workers, futures, args.mock)
        receipts = run_cell(workers, cell, args.mock, args.timeout)
        _show_mock_outputs(receipts)
        failed = [r for r in receipts if r.status == "error"]
        if failed and not args.mock and (args.mock_on_error or self.mock_on_error):
            for r in failed:
                r.on_mock(args.timeout)
        value = receipts[0] if len(receipts) == 1 else receipts
        if failed and self.stop_on_error and not args.allow_error:
            # The receipts first (a raised cell has no result to display), then one line.
            publish({"text/plain": repr(value), "text/html": value._repr_html_()})
            raise _cell_failed(failed, args.mock)
        return value

    # -- %remote ----------------------------------------------------------------
    @line_magic("remote")  # type: ignore[arg-type]
    def remote_line(self, line: str) -> Any:
        """``%remote connect NAME [URL --token T] | list | status | disconnect NAME | config``.

        ``%remote connect alice bob`` (no URL) reads the demo's connection file.
        """
        words = shlex.split(line)
        if not words:
            raise UsageError(self.remote_line.__doc__ or "")  # type: ignore[arg-type]
        cmd, rest = words[0], words[1:]
        if cmd == "connect":
            return self._connect(rest)
        if cmd == "list":
            return self._list()
        if cmd == "status":
            return self._status(rest)
        if cmd == "config":
            return self._config(rest)
        if cmd == "disconnect":
            for name in rest or list(self.workers):
                w = self.worker(name)
                w.close()
                self.workers.pop(name, None)
                print(f"disconnected from {name}")
            return None
        raise UsageError(f"unknown %remote command {cmd!r}: connect, list, status, "
                         "disconnect, config")

    def _config(self, rest: list[str]) -> None:
        """``%remote config [stop_on_error=on|off] [mock_on_error=on|off]``; prints the options."""
        for item in rest:
            key, _, raw = item.partition("=")
            if key not in self.OPTIONS or raw.lower() not in ("on", "off", "true", "false",
                                                               "1", "0"):
                raise UsageError(f"%remote config {'|'.join(self.OPTIONS)}=on|off "
                                 f"(got {item!r})")
            setattr(self, key, raw.lower() in ("on", "true", "1"))
        print("  ".join(f"{k}={'on' if getattr(self, k) else 'off'}" for k in self.OPTIONS))

    def _connect(self, rest: list[str]) -> None:
        token = None
        if "--token" in rest:
            i = rest.index("--token")
            if i + 1 >= len(rest):
                raise UsageError("--token needs a value")
            token = rest[i + 1]
            rest = rest[:i] + rest[i + 2:]
        if not rest:
            raise UsageError("%remote connect NAME [URL --token TOKEN]")
        if len(rest) == 2 and rest[1].startswith(("ws://", "wss://")):
            if token is None:
                raise UsageError("connecting by URL needs --token TOKEN")
            targets = {rest[0]: {"url": rest[1], "token": token}}
        else:
            known = connections.load()
            missing = [n for n in rest if n not in known]
            if missing:
                raise UsageError(f"{', '.join(missing)} not in {connections.find()} "
                                 f"(it has {', '.join(known) or 'no workers'})")
            targets = {n: known[n] for n in rest}
        for name, info in targets.items():
            w = Worker(str(info["url"]), str(info["token"]), name,
                       fingerprint=info.get("fingerprint"))
            self.workers[name] = w
            if self.shell is not None:
                self.shell.user_ns[name] = w
            print(f"connected to {name} at {w.url} as {w.scientist} (session {w.session_id})")

    def _list(self) -> None:
        rows = self.known()
        if not rows:
            print("no workers: %remote connect NAME URL --token TOKEN")
        for name, w in rows.items():
            state = "connected" if w.connected else "disconnected"
            print(f"{name:<10} {w.url:<28} {state:<12} session {w.session_id}")

    def _status(self, names: list[str]) -> None:
        for name in names or list(self.known()):
            w = self.worker(name)
            if not w.connected:
                print(f"{name:<10} disconnected")
                continue
            ping = w.ping() * 1000
            reqs = w.requests()
            pending = sum(r.status == "pending" for r in reqs)
            approved = sum(r.status == "approved" for r in reqs)
            print(f"{name:<10} {w.url:<28} ping {ping:.1f} ms · {pending} pending, "
                  f"{approved} approved request(s)")


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%remote`` / ``%%remote`` magics (``%load_ext kernel_bridge`` calls this)."""
    ipython.register_magics(RemoteMagics)
