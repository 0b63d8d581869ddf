"""Adversarial tests of the kernel sandbox and of the gate on cell results.

Every test plays a malicious scientist: code runs in the session's private or
mock kernel and tries to reach the worker's state, private files, the network,
the worker's environment, the host's file system or another session. Results
are read back through what a scientist can really see: the mock kernel's full
outputs, receipts, pointer reprs, and held outputs only after owner approval.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATASETS, PLANTED_NUMBER, PLANTED_TEXT, ROOT, write_secret_asset

import kernel_bridge as kb
from kernel_bridge.owner import sandbox

#: Host directories a kernel sees (read-only): the system, the Python installation, the package.
SHOWN = sandbox.shown_dirs()
#: Shown directories below a scratch tmpfs such as /tmp (a checkout under /tmp).
REBOUND = [p for p in SHOWN if any(Path(r) in p.parents for r in sandbox.SCRATCH_DIRS)]


def under_hidden_root(p: Path) -> bool:
    """True when ``p`` lies outside every directory the sandbox shows: inside the sandbox
    it does not exist (or, below /tmp, is a scratch path of the kernel's own)."""
    return not any(r == p or r in p.parents for r in SHOWN)


def mountpoint_names(root: str = "/tmp") -> set[str]:
    """Names bubblewrap must create in ``root`` to rebind directories below it."""
    return {p.relative_to(root).parts[0] for p in REBOUND if Path(root) in p.parents}

#: Forms in which the planted values would show up if they leaked.
LEAK_FORMS = (str(PLANTED_NUMBER), f"{PLANTED_NUMBER:,}", PLANTED_TEXT,
              PLANTED_TEXT.replace("-", "_"), PLANTED_TEXT.lower())
#: Marks the JSON line a probe cell prints.
MARK = "@@SYFTLAB-PROBE@@"


# -- helpers -------------------------------------------------------------------------------------
def leaked(text: str) -> list[str]:
    """The planted values (in any of their forms) found in ``text``."""
    return [form for form in LEAK_FORMS if form in text]


def mock_text(receipt: kb.Receipt) -> str:
    """All text a mock run showed: streams, rich data, errors (names, values, tracebacks)."""
    parts: list[str] = []
    for out in receipt.outputs:
        content = out["content"]
        parts.append(str(content.get("text", "")))
        parts.extend(str(v) for v in (content.get("data") or {}).values())
        parts.append(str(content.get("ename", "")))
        parts.append(str(content.get("evalue", "")))
        parts.extend(str(t) for t in content.get("traceback") or [])
    return "\n".join(parts)


def scientist_view(receipt: kb.Receipt) -> str:
    """Everything a scientist can read off a receipt, as one string."""
    parts = [repr(receipt), receipt._repr_html_(), json.dumps(receipt.data, default=repr),
             repr(receipt.names), str(receipt.error_type), str(receipt.status)]
    parts += [repr(h) for h in receipt.held]
    parts += [repr(sorted(h.taint)) + str(h.type_name) for h in receipt.held]
    if receipt.mock:
        parts.append(mock_text(receipt))
    return "\n".join(parts)


def assert_no_leak(*receipts: kb.Receipt) -> None:
    for r in receipts:
        found = leaked(scientist_view(r))
        assert not found, f"planted value(s) {found} visible in a receipt: {r!r}"


def probe(w: kb.Worker, body: str) -> Any:
    """Run ``body`` (which sets ``result``) in the mock kernel; return ``result`` via JSON.

    The whole output is also checked for planted values.
    """
    code = textwrap.dedent(body) + (
        f"\nimport json as _json\nprint({MARK!r} + _json.dumps(result, default=repr))\n")
    r = w.run(code, mock=True)
    text = mock_text(r)
    assert r.status == "ok", f"probe cell failed: {r!r}\n{text}"
    assert not leaked(text), f"planted value(s) in mock outputs: {leaked(text)}"
    lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    assert len(lines) == 1, text
    return json.loads(lines[0][len(MARK):])


def private_ok(w: kb.Worker, body: str) -> kb.Receipt:
    """Run ``body`` in the private kernel; its asserts decide the receipt status."""
    r = w.run(textwrap.dedent(body))
    assert_no_leak(r)
    assert r.status == "ok", f"private probe failed: {r!r}"
    return r


#: A cell helper that tries an action and reports "ok" or the exception type.
TRY = """
def attempt(fn):
    try:
        fn()
    except BaseException as exc:
        return type(exc).__name__
    return "ok"
"""


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    """A worker whose state dir and private file live *outside* the sandbox's tmpfs dirs.

    The alice fixture keeps everything under /tmp, which every kernel sees as an empty
    tmpfs anyway; here hiding depends on the explicit per-path rules of the sandbox.
    """
    base = ROOT / "test-artifacts"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sandbox-", dir=base))
    private, mock = write_secret_asset(work / "data")
    w = kb.launch("olga", assets={"secret": str(private)}, mocks={"secret": str(mock)},
                  state=work / "state", scientist="olivia")
    try:
        yield w
    finally:
        try:
            w.close()
        finally:
            if w.process is not None:
                w.process.kill()
            shutil.rmtree(work, ignore_errors=True)


# -- the worker's state ------------------------------------------------------------------------
def _sqlite_self_approval(w: kb.Worker, state: Path) -> None:
    owner = kb.Owner(state)
    try:
        req = w.asset("secret")["value"].max().request("sandbox test: self-approval attempt")
        assert owner.request(req.id).status == "pending"
        db = state / "worker.sqlite"
        assert db.is_file()  # the file is really there on the host
        attack = f"""
            import os, sqlite3
            path = {str(db)!r}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            con = sqlite3.connect(path)
            con.execute("UPDATE requests SET status='approved', decided=1")
            con.commit()
        """
        r = w.run(textwrap.dedent(attack))
        assert r.status == "error", f"the cell could write the worker's database: {r!r}"
        assert_no_leak(r)
        rm = w.run(textwrap.dedent(attack), mock=True)
        assert rm.status == "error"
        seen = probe(w, f"""
            import os
            d = {str(state)!r}
            result = {{"exists": os.path.exists(d + "/worker.sqlite") and
                                 os.path.getsize(d + "/worker.sqlite") > 0,
                       "listing": sorted(os.listdir(d)) if os.path.isdir(d) else None}}
        """)
        # The mock kernel's own (empty, private) copy may exist; the real one is invisible.
        assert not seen["exists"], seen
        assert "worker.log" not in (seen["listing"] or []), seen
        assert owner.request(req.id).status == "pending"
        assert req.refresh().status == "pending"
        assert req.id not in {q.id for q in owner.requests(status="approved")}
    finally:
        owner.close()


def test_cell_cannot_approve_own_request_via_sqlite(session: kb.Worker,
                                                     alice: kb.Worker) -> None:
    """A private cell opens <state>/worker.sqlite to approve its own pending request."""
    _sqlite_self_approval(session, Path(alice.process.state))


def test_cell_cannot_approve_own_request_state_outside_tmp(outside: kb.Worker) -> None:
    """Same attack where the state dir is not under a tmpfs-hidden root like /tmp."""
    _sqlite_self_approval(outside, Path(outside.process.state))


# -- private files -------------------------------------------------------------------------------
READ_FILES = TRY + """
import glob, os
def read(p):
    try:
        return open(p, "rb").read().decode("utf-8", "replace")
    except BaseException as exc:
        return "!" + type(exc).__name__
result = {}
for p in PATHS:
    parent = os.path.dirname(p)
    result[p] = {
        "content": read(p),
        "via_proc": read("/proc/self/root" + p),
        "listing": sorted(os.listdir(parent)) if os.path.isdir(parent) else None,
        "glob": sorted(glob.glob(parent + "/*.csv")),
    }
"""


def test_mock_kernel_cannot_read_private_files(session: kb.Worker,
                                               secret_files: tuple[Path, Path]) -> None:
    """The mock kernel opens the private CSVs (the planted one in /tmp, alice's heart
    CSV inside the repository) by path and through /proc/self/root."""
    private, _ = secret_files
    heart = DATASETS / "heart" / "alice.csv"
    heart_mock = DATASETS / "heart" / "alice_mock.csv"
    paths = [str(private), str(heart), str(heart_mock)]
    got = probe(session, f"PATHS = {paths!r}\n" + READ_FILES)
    heart_row = heart.read_text().splitlines()[1]
    for p in (str(private), str(heart)):
        for key in ("content", "via_proc"):
            value = got[p][key]
            assert value == "" or value.startswith("!"), f"{p} readable: {value[:80]!r}"
            assert heart_row not in value
    assert got[str(private)]["listing"] in (None, []), got[str(private)]
    assert got[str(private)]["glob"] == []
    # Sanity: the same read works for public files, so the probe itself is sound.
    if under_hidden_root(heart_mock):  # the repository's data is not shown to kernels
        assert got[str(heart_mock)]["content"] == "!FileNotFoundError"
        control = Path(kb.__file__)
        seen = probe(session, f"result = open({str(control)!r}).read()")
        assert seen == control.read_text()
    else:
        assert got[str(heart_mock)]["content"] == heart_mock.read_text()
    assert heart.stat().st_size > 0


def test_private_kernel_cannot_read_private_files(session: kb.Worker,
                                                  secret_files: tuple[Path, Path]) -> None:
    """The private kernel reads its assets from disk instead of getting them from the worker."""
    private, _ = secret_files
    heart = DATASETS / "heart" / "alice.csv"
    heart_row = heart.read_text().splitlines()[1]
    private_ok(session, f"""
        data = b""
        for p in {[str(private), str(heart)]!r}:
            for q in (p, "/proc/self/root" + p):
                try:
                    data += open(q, "rb").read()
                except OSError:
                    pass
        assert {str(PLANTED_NUMBER).encode()!r} not in data
        assert {PLANTED_TEXT.encode()!r} not in data
        assert {heart_row.encode()!r} not in data
    """)


def test_private_files_outside_tmp_hidden(outside: kb.Worker) -> None:
    """A private asset file outside /tmp (bound over with /dev/null) reads empty from both
    kernels, while the worker still hands the asset over itself."""
    private = Path(outside.process.state).parent / "data" / "secret.csv"
    assert PLANTED_TEXT in private.read_text()
    got = probe(outside, f"PATHS = {[str(private)]!r}\n" + READ_FILES)
    assert got[str(private)]["content"] in ("", "!PermissionError", "!FileNotFoundError")
    assert got[str(private)]["via_proc"] in ("", "!PermissionError", "!FileNotFoundError")
    private_ok(outside, f"""
        try:
            data = open({str(private)!r}, "rb").read()
        except OSError:
            data = b""
        assert {PLANTED_TEXT.encode()!r} not in data
    """)
    # The worker, not the file system, gives the kernel its asset (tainted).
    ptr = outside.asset("secret")
    assert ptr.taint == frozenset({"secret"})
    with pytest.raises(kb.ApprovalRequired):
        ptr.get()


# -- network -----------------------------------------------------------------------------------
NET = TRY + """
import socket
def tcp(host, port):
    return lambda: socket.create_connection((host, port), timeout=3).close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"x", ("8.8.8.8", 53))
    s.recvfrom(10)
result = {
    "worker": attempt(tcp("127.0.0.1", WS_PORT)),
    "bulk": attempt(tcp("127.0.0.1", BULK_PORT)),
    "ssh": attempt(tcp("127.0.0.1", 22)),
    "external": attempt(tcp("1.1.1.1", 443)),
    "external_ip": attempt(tcp("8.8.8.8", 53)),
    "udp": attempt(udp),
    "dns": attempt(lambda: socket.getaddrinfo("example.com", 80)),
    "interfaces": [name for _, name in socket.if_nameindex()],
}
"""


def test_kernels_have_no_network(session: kb.Worker, alice: kb.Worker) -> None:
    """Cells open TCP to the worker's websocket and bulk ports, to :22 and to external IPs,
    send UDP and resolve DNS: every attempt fails in both kernels."""
    ws_port, bulk_port = alice.process.port, int(session._conn.info["bulk_port"])
    # Sanity: from the host these ports do accept connections.
    for port in (ws_port, bulk_port):
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    code = f"WS_PORT, BULK_PORT = {ws_port}, {bulk_port}\n" + NET
    got = probe(session, code)
    for key in ("worker", "bulk", "ssh", "external", "external_ip", "udp", "dns"):
        assert got[key] != "ok", f"{key} reachable from the mock kernel: {got}"
    assert got["interfaces"] == ["lo"]
    private_ok(session, code + "\nassert all(v != 'ok' for k, v in result.items() "
                               "if k != 'interfaces'), result\n")


# -- environment and processes -------------------------------------------------------------------
PROCS = """
import glob, os
procs = {}
for d in glob.glob("/proc/[0-9]*"):
    entry = {}
    for f in ("cmdline", "environ"):
        try:
            entry[f] = open(d + "/" + f, "rb").read().replace(b"\\0", b" ").decode("utf-8",
                                                                                  "replace")
        except OSError as exc:
            entry[f] = "!" + type(exc).__name__
    procs[d.rsplit("/", 1)[1]] = entry
result = {"environ": dict(os.environ), "procs": procs}
"""


def test_kernel_env_and_processes_are_isolated(fresh_worker: Callable[..., kb.Worker],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started with a secret in its environment: kernels see neither the variable
    (not in os.environ, not in any /proc/*/environ) nor the worker's process."""
    monkeypatch.setenv("SYFTLAB_TEST_SECRET", PLANTED_TEXT)
    w = fresh_worker("envy")
    monkeypatch.delenv("SYFTLAB_TEST_SECRET")
    got = probe(w, PROCS)  # probe() also checks the outputs for PLANTED_TEXT
    assert "SYFTLAB_TEST_SECRET" not in got["environ"]
    dump = json.dumps(got)
    assert "SYFTLAB_TEST_SECRET" not in dump
    # pid namespace: only the sandbox's own processes (bwrap's init and the kernel).
    assert 1 <= len(got["procs"]) <= 3, got["procs"].keys()
    for pid, entry in got["procs"].items():
        cmd = entry["cmdline"]
        assert "kernel_bridge.cli" not in cmd and "pytest" not in cmd, (pid, cmd)
        assert "bwrap" in cmd or "ipykernel_launcher" in cmd, (pid, cmd)
    assert str(os.getpid()) not in got["procs"] or os.getpid() <= 3
    assert str(w.process.proc.pid) not in got["procs"] or w.process.proc.pid <= 3
    private_ok(w, PROCS + "\nassert 'SYFTLAB_TEST_SECRET' not in repr(result)\n"
                          "assert 'kernel_bridge.cli' not in repr(result)\n")


# -- the file system -----------------------------------------------------------------------------
def test_writes_outside_scratch_do_not_reach_the_host(session: kb.Worker, alice: kb.Worker) -> None:
    """Cells write into the repository, the package, the venv, /etc, the worker's state dir,
    /home and /root: nothing lands on the host."""
    import kernel_bridge

    tag = f"syftlab-probe-{uuid.uuid4().hex}"
    state = Path(alice.process.state)
    candidates = [ROOT / tag, Path(kernel_bridge.__file__).parent / tag,
                  Path(sys.prefix) / tag, DATASETS / tag, Path("/etc") / tag,
                  Path("/usr") / tag]
    # In a checkout under /tmp or /root the repository is the kernel's scratch, not the host's.
    read_only = [p for p in candidates if not under_hidden_root(p)]
    hidden = [p for p in candidates if under_hidden_root(p)] + [
        state / tag, Path("/home") / tag, Path("/root") / tag, Path("/tmp") / tag,
        Path("/var/tmp") / tag, Path("/dev/shm") / tag]
    assert Path(kernel_bridge.__file__).parent / tag in read_only
    targets = [str(p) for p in read_only + hidden]
    code = TRY + f"""
import os
def write(p):
    def go():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write("written by a kernel")
    return go
result = {{p: attempt(write(p)) for p in {targets!r}}}
"""
    try:
        for mock in (True, False):
            if mock:
                got = probe(session, code)
                for p in read_only:
                    assert got[str(p)] != "ok", f"the mock kernel wrote {p}"
            else:
                session.run(code)
            for p in read_only + hidden:
                assert not p.exists(), f"a kernel's write reached the host: {p}"
    finally:
        for p in read_only + hidden:
            if p.is_file():
                p.unlink()


def test_tmp_starts_empty_and_is_private_per_kernel(connect_as: Callable[..., kb.Worker]
                                                    ) -> None:
    """/tmp holds nothing of the host at start, and a file written there by session A's
    mock kernel is invisible to A's private kernel, to session B's kernels and to the host."""
    a, b = connect_as("tmp-a"), connect_as("tmp-b")
    host_tmp = set(os.listdir("/tmp"))
    first = probe(b, "import os\nresult = sorted(os.listdir('/tmp'))")
    allowed = mountpoint_names("/tmp")  # empty directories bwrap needs to rebind the venv
    leftovers = [n for n in first if not (n.startswith(".") or n.startswith("ipykernel_"))
                 and n not in allowed]
    assert leftovers == [], f"/tmp of a fresh kernel is not empty: {first}"
    assert not (set(first) & host_tmp - {".ipython"} - allowed), first
    name = f"/tmp/from-a-{uuid.uuid4().hex}"
    assert probe(a, f"open({name!r}, 'w').write('hello')\nresult = open({name!r}).read()") \
        == "hello"
    assert probe(b, f"import os\nresult = os.path.exists({name!r})") is False
    private_ok(b, f"import os\nassert not os.path.exists({name!r})")
    private_ok(a, f"import os\nassert not os.path.exists({name!r})")
    assert not os.path.exists(name)


def test_other_sessions_socket_dirs_invisible(connect_as: Callable[..., kb.Worker]) -> None:
    """Session B's kernels look for session A's kernel socket directories under /dev/shm
    and /tmp (paths taken from the host): none is visible, only B's own."""
    a, b = connect_as("shm-a"), connect_as("shm-b")
    before = set(Path("/dev/shm").glob("syk-*"))
    a.run("x = 1")
    a.run("x = 1", mock=True)
    b.run("x = 1")
    got_b = probe(b, "import os\nresult = sorted(os.listdir('/dev/shm'))")
    after = {str(p) for p in Path("/dev/shm").glob("syk-*")}
    assert len(after - {str(p) for p in before}) >= 3  # the new kernels' dirs exist on the host
    assert len(got_b) == 1 and got_b[0].startswith("syk-mock-"), got_b
    own = f"/dev/shm/{got_b[0]}"
    assert own in after
    others = sorted(after - {own})
    seen = probe(b, f"""
        import glob, os
        result = {{"visible": [p for p in {others!r} if os.path.exists(p)],
                   "tmp": glob.glob("/tmp/syk-*") + glob.glob("/tmp/**/kernel.json",
                                                              recursive=True)}}
    """)
    assert seen == {"visible": [], "tmp": []}, seen
    private_ok(b, f"""
        import os
        listing = os.listdir("/dev/shm")
        assert len(listing) == 1 and listing[0].startswith("syk-private-"), listing
        mine = "/dev/shm/" + listing[0]
        assert mine in {sorted(after)!r}
        assert not any(os.path.exists(p) for p in {sorted(after)!r} if p != mine)
    """)


# -- what receipts can carry -------------------------------------------------------------------
SECRET_VALUES = (
    "n = int(secret['value'].max())\n"
    "t = str(secret['note'][3])\n"
)


def test_receipts_never_carry_printed_secret(session: kb.Worker) -> None:
    """Private cells print, display, return, raise, warn and write to stderr with the
    planted values: receipts carry no value, only the error's type name."""
    cells = {
        "print": ("print(t, n)", "ok", None),
        "display": ("from IPython.display import HTML, display\n"
                    "display(HTML(f'<b>{t}</b>'))\ndisplay({'n': n})", "ok", None),
        "expression": ("t + str(n)", "ok", None),
        "raise": ("raise ValueError(t + str(n))", "error", "ValueError"),
        "raise_key": ("{}[t]", "error", "KeyError"),
        "warning": ("import warnings\nwarnings.warn(t + str(n))", "ok", None),
        "stderr": ("import sys\nsys.stderr.write(t + str(n))\nsys.stderr.flush()", "ok", None),
        "assert": ("assert False, t", "error", "AssertionError"),
    }
    setup = session.run(SECRET_VALUES)
    assert setup.status == "ok"
    assert_no_leak(setup)
    for label, (code, status, error_type) in cells.items():
        r = session.run(code)
        assert_no_leak(r)
        assert (r.status, r.error_type) == (status, error_type), (label, r)
        assert len(r.held) == 1, (label, r)  # the outputs exist, and are held
        assert r.held[0].taint == frozenset({"secret"})
        with pytest.raises(kb.ApprovalRequired):
            r.held[0].get()


def test_names_and_types_cannot_encode_secret(session: kb.Worker) -> None:
    """Cells create variables whose names, class names or exception names spell out the
    secret (globals(), exec, type()): receipts only show source-assigned names and fixed
    type vocabularies."""
    session.run(SECRET_VALUES)
    r1 = session.run("globals()[f'v{n}'] = 1\n"
                     "globals()[t.replace('-', '_')] = 2\n"
                     "exec(f'w{n} = 3')\n"
                     "vars()[f'x{n}'] = 4")
    assert r1.status == "ok"
    # Only names written in the source may be reported (here: the ones read in the keys).
    assert {e["name"] for e in r1.names} <= {"n", "t"}, r1.names
    r2 = session.run("C = type(f'T{n}', (), {})\nobj = C()\n"
                     "D = type(t.replace('-', '_'), (dict,), {})\nd = D()")
    assert r2.status == "ok"
    # Private receipts carry names parsed from the source, never types.
    assert r2.names == [{"name": n, "change": "assigned"} for n in ("C", "obj", "D", "d")]
    r3 = session.run("E = type(f'E{n}', (Exception,), {})\nraise E(t)")
    assert (r3.status, r3.error_type) == ("error", "Exception")
    r4 = session.run("F = type(t.replace('-', '_'), (ValueError,), {})\nraise F()")
    assert (r4.status, r4.error_type) == ("error", "Exception")
    assert_no_leak(r1, r2, r3, r4)
    # Pointers to those objects report the same fixed vocabulary.
    for name in ("obj", "d", "C"):
        p = session.vars[name]
        assert not leaked(repr(p)) and p.type_name in ("object", "type"), repr(p)
        assert p.taint == frozenset({"secret"})


def test_held_output_released_only_after_approval(session: kb.Worker, owner: kb.Owner) -> None:
    """The held output of a printing cell and of a raising cell leaves only after the
    owner approves; then it holds the planted values."""
    session.run(SECRET_VALUES)
    printed = session.run("print(t, n)")
    raised = session.run("raise ValueError(t)")
    for r in (printed, raised):
        held = r.held[0]
        with pytest.raises(kb.ApprovalRequired):
            held.get()
        req = held.request("sandbox test: release held output")
        with pytest.raises(kb.RequestPending):
            req.result()
        assert not leaked(repr(req))
        owner.approve(req.id)
        released = json.dumps(req.result(), default=repr)
        assert PLANTED_TEXT in released
        if r is printed:
            assert str(PLANTED_NUMBER) in released
    # A second, unapproved request for the same output does not inherit the approval.
    again = printed.held[0].request("not approved")
    with pytest.raises(kb.RequestPending):
        again.result()


def test_background_thread_cannot_leak(session: kb.Worker) -> None:
    """A private cell starts a thread printing the secret every 10 ms; nothing the session
    sees afterwards (receipts, pointer ops, mock runs) carries it."""
    start = session.run(SECRET_VALUES + textwrap.dedent("""
        import sys, threading, time
        stop = threading.Event()
        def chatter():
            while not stop.is_set():
                print(t, n, flush=True)
                sys.stderr.write(t + "\\n")
                time.sleep(0.01)
        th = threading.Thread(target=chatter, daemon=True)
        th.start()
    """))
    assert start.status == "ok"
    assert_no_leak(start)
    try:
        deadline = time.monotonic() + 1.0
        rounds = 0
        while time.monotonic() < deadline or rounds < 3:
            rounds += 1
            r = session.run("y = 1")
            assert r.status == "ok"
            assert_no_leak(r)
            m = session.run("print('mock says hi')", mock=True)
            assert_no_leak(m)
            assert "mock says hi" in mock_text(m)
            clean = session.send([1, 2, 3], mock=True)
            assert clean.get() == [1, 2, 3]
            p = session.send(5)
            q = p + 1
            assert not leaked(repr(p) + repr(q))
            assert q.get() == 6  # sent values live in the clean kernel, out of its reach
            with pytest.raises(kb.ApprovalRequired):  # the private kernel taints everything
                session.vars["y"].get()
            time.sleep(0.05)
    finally:
        session.run("stop.set()")


# -- isolation checks and limits -----------------------------------------------------------------
def test_probe_reports_an_unprivileged_filtered_kernel() -> None:
    """The probe runs the real sandbox command line and sees itself from inside."""
    from kernel_bridge.owner.config import SandboxLimits

    seen = sandbox.probe(SandboxLimits())
    assert seen["uid"] != 0 and seen["CapEff"] == "0000000000000000", seen
    assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2" and seen["mount"] != 0, seen
    if os.geteuid() == 0:
        assert seen["uid"] >= SandboxLimits().uid_base


def test_sandbox_limits_from_toml(tmp_path: Path) -> None:
    """The [sandbox] table sets every limit; a bad or unknown key names itself."""
    from kernel_bridge.errors import ConfigError
    from kernel_bridge.owner.config import SandboxLimits, WorkerConfig

    toml = tmp_path / "w.toml"
    toml.write_text('[worker]\nname = "w"\nstate = "s"\n\n[sandbox]\nmemory_mb = 2048\n'
                    "processes = 100\ncpu_seconds = 60\noutput_mb = 4\nuid_base = 300000\n")
    limits = WorkerConfig.from_toml(toml).limits
    assert (limits.memory_mb, limits.processes, limits.cpu_seconds, limits.output_mb,
            limits.uid_base) == (2048, 100, 60, 4, 300000)
    assert limits.file_size_mb == SandboxLimits().file_size_mb
    for body, needle in (("memory_mb = 0", "sandbox.memory_mb"),
                         ("processes = 'many'", "sandbox.processes"),
                         ("procs = 10", "sandbox.procs: unknown key"),
                         ("memory_mb = 100", "at least 512")):
        toml.write_text(f'[worker]\nname = "w"\nstate = "s"\n\n[sandbox]\n{body}\n')
        with pytest.raises(ConfigError, match=needle):
            WorkerConfig.from_toml(toml)


def test_missing_setpriv_or_prlimit_refuses_kernels(fresh_worker: Callable[..., kb.Worker],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """With bwrap on PATH but not the tool that drops the kernel's uid (or sets its limits),
    the worker starts no kernel and says which tool is missing."""
    from kernel_bridge.errors import SandboxUnavailable

    for missing in ("setpriv", "prlimit"):
        bin_dir = tmp_path / f"bin-no-{missing}"
        bin_dir.mkdir()
        for tool in {"bwrap", "setpriv", "prlimit"} - {missing}:
            exe = shutil.which(tool)
            assert exe is not None, f"{tool} is not installed here (make sandbox)"
            (bin_dir / tool).symlink_to(exe)
        monkeypatch.setenv("PATH", str(bin_dir))
        w = fresh_worker(f"no-{missing}")
        monkeypatch.undo()
        for mock in (True, False):
            with pytest.raises(SandboxUnavailable, match=missing):
                w.run("x = 1", mock=mock)
