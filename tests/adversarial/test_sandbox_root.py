"""The kernel sandbox against a hostile scientist, with the worker running as root.

Each test plays the scientist: cells run in the session's mock kernel (whose
outputs come back in full, so a successful read would show) or private kernel
(whose own asserts decide the receipt's status). The workers are real
processes started by the tests, as root like in CI. Before the sandbox was
rebuilt, bubblewrap left root's capabilities to kernels: a cell could unmount
its private ``/tmp`` or remount ``/`` read-write, and nothing limited memory,
processes, CPU time or output.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PLANTED_NUMBER, PLANTED_TEXT, ROOT

import kernel_bridge as kb
from kernel_bridge.owner.store import hash_token

MARK = "@@SYFTLAB-ROOT-PROBE@@"
LEAK_FORMS = (str(PLANTED_NUMBER), PLANTED_TEXT, PLANTED_TEXT.lower())
#: Limits of the worker the limit tests run against (small, so tests are quick).
LIMITS = {"memory_mb": 1536, "processes": 64, "cpu_seconds": 10, "output_mb": 8,
          "message_mb": 16}

# -- helpers -------------------------------------------------------------------------------------
def mock_text(receipt: kb.Receipt) -> str:
    parts: list[str] = []
    for out in receipt.outputs:
        content = out["content"]
        parts.append(str(content.get("text", "")))
        parts.extend(str(v) for v in (content.get("data") or {}).values())
        parts += [str(content.get("ename", "")), str(content.get("evalue", ""))]
        parts.extend(str(t) for t in content.get("traceback") or [])
    return "\n".join(parts)


def probe(w: kb.Worker, body: str, timeout: float | None = None) -> Any:
    """Run ``body`` (which sets ``result``) in the mock kernel; return ``result``."""
    code = textwrap.dedent(body) + (
        f"\nimport json as _json\nprint({MARK!r} + _json.dumps(result, default=repr))\n")
    r = w.run(code, mock=True, timeout=timeout)
    text = mock_text(r)
    assert r.status == "ok", f"probe cell failed: {r!r}\n{text[-2000:]}"
    found = [f for f in LEAK_FORMS if f in text]
    assert not found, f"planted value(s) {found} in mock outputs"
    lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    assert len(lines) == 1, text[-2000:]
    return json.loads(lines[0][len(MARK):])


def private_ok(w: kb.Worker, body: str) -> None:
    """Run ``body`` in the private kernel; its asserts decide the receipt's status."""
    r = w.run(textwrap.dedent(body))
    assert r.status == "ok", f"private probe failed: {r!r}"


#: Cell code: libc's mount calls, each reported as "ok" or the errno name.
SYSCALLS = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MNT_DETACH = 1, 32, 4096, 2
def call(fn, *args):
    ctypes.set_errno(0)
    rc = fn(*args)
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
def umount(path):
    return call(libc.umount2, path.encode(), MNT_DETACH)
def remount_rw(path):
    return call(libc.mount, b"none", path.encode(), None, MS_REMOUNT | MS_BIND, None)
def mount_tmpfs(path):
    return call(libc.mount, b"none", path.encode(), b"tmpfs", 0, None)
def read(p):
    try:
        return open(p, "rb").read().decode("utf-8", "replace")
    except BaseException as exc:
        return "!" + type(exc).__name__
"""


def _start(d: Path, secret_files: tuple[Path, Path], limits: dict[str, int]) -> kb.Worker:
    """A worker whose limits come from its TOML ``[sandbox]`` table."""
    toml = d / "worker.toml"
    toml.write_text('[worker]\nname = "lim"\nstate = "state"\nexec_timeout = 120\n\n[sandbox]\n'
                    + "".join(f"{k} = {v}\n" for k, v in limits.items()))
    private, mock = secret_files
    return kb.launch("lim", config=toml, assets={"secret": str(private)},
                     mocks={"secret": str(mock)}, state=d / "state", scientist="lina")


def _stop(w: kb.Worker) -> None:
    try:
        w.close()
    finally:
        if w.process is not None:
            w.process.kill()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory,
            secret_files: tuple[Path, Path]) -> Iterator[kb.Worker]:
    """A worker with small resource limits."""
    w = _start(tmp_path_factory.mktemp("limited"), secret_files, LIMITS)
    yield w
    _stop(w)


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory,
            secret_files: tuple[Path, Path]) -> Iterator[kb.Worker]:
    """A worker with small output limits (and the default memory limit, so that the kernel
    itself can build the huge messages it tries to send)."""
    w = _start(tmp_path_factory.mktemp("flooded"), secret_files,
               {"output_mb": 8, "message_mb": 16})
    yield w
    _stop(w)


def scientist(worker: kb.Worker, name: str) -> kb.Worker:
    o = kb.Owner(worker.process.state)
    token = o.add_token(name)
    o.close()
    w = kb.connect(worker.process.url, token, name=worker.name)
    w.token = token  # type: ignore[attr-defined]
    return w


# -- class 1: the sandbox under root -----------------------------------------------------------
def test_cells_cannot_unmount_tmp_to_read_private_file(session: kb.Worker,
                                                       secret_files: tuple[Path, Path]) -> None:
    """A mock and a private cell unmount /tmp (and /tmp's parents), remount / read-write and
    mount over /tmp to reach the private asset file under /tmp: every step fails."""
    private, _ = secret_files
    assert str(private).startswith("/tmp/") and PLANTED_TEXT in private.read_text()
    attack = SYSCALLS + f"""
PATH = {str(private)!r}
result = {{"umount_tmp": umount("/tmp"), "umount_tmp_again": umount("/tmp"),
          "remount_root": remount_rw("/"), "mount_tmp": mount_tmpfs("/tmp"),
          "umount_shm": umount("/dev/shm"), "content": read(PATH),
          "via_proc": read("/proc/1/root" + PATH)}}
"""
    got = probe(session, attack)
    for key in ("umount_tmp", "umount_tmp_again", "remount_root", "mount_tmp", "umount_shm"):
        assert got[key] != "ok", f"{key} succeeded in the mock kernel: {got}"
    assert got["content"].startswith("!") and got["via_proc"].startswith("!"), got
    private_ok(session, attack + f"""
assert all(result[k] != "ok" for k in ("umount_tmp", "remount_root", "mount_tmp")), result
assert {PLANTED_TEXT!r} not in result["content"] + result["via_proc"]
""")


def _self_approval(w: kb.Worker, state: Path, token: str) -> None:
    owner = kb.Owner(state)
    try:
        req = w.asset("secret")["value"].max().request("root sandbox test: self-approval")
        assert owner.request(req.id).status == "pending"
        db = state / "worker.sqlite"
        assert db.is_file()
        attack = SYSCALLS + f"""
import sqlite3
DB = {str(db)!r}
steps = {{}}
for mnt in ("/tmp", {str(state.parent)!r}, {str(state)!r}, "/"):
    steps["umount " + mnt] = umount(mnt)
steps["remount /"] = remount_rw("/")
steps["remount state"] = remount_rw({str(state)!r})
def approve():
    con = sqlite3.connect("file:" + DB + "?mode=rw", uri=True)
    con.execute("UPDATE requests SET status='approved', decided=1")
    con.commit()
    return "ok"
def tokens():
    con = sqlite3.connect("file:" + DB + "?mode=ro", uri=True)
    return repr(con.execute("SELECT * FROM tokens").fetchall())
def attempt(fn):
    try:
        return fn()
    except BaseException as exc:
        return "!" + type(exc).__name__
result = {{"steps": steps, "approve": attempt(approve), "tokens": attempt(tokens),
          "raw": read(DB)[:20000]}}
"""
        got = probe(w, attack)
        assert all(v != "ok" for v in got["steps"].values()), got["steps"]
        assert got["approve"] != "ok", got
        assert got["tokens"].startswith("!"), got["tokens"][:200]
        assert hash_token(token) not in json.dumps(got)
        assert "SQLite format" not in got["raw"], got["raw"][:100]
        r = w.run(attack + "\nassert result['approve'] != 'ok'\n")
        assert r.status == "ok", r
        assert owner.request(req.id).status == "pending"
        assert req.refresh().status == "pending"
    finally:
        owner.close()


def test_cell_cannot_reach_state_sqlite_under_tmp(alice: kb.Worker) -> None:
    """The state dir under /tmp (alice): unmounting and remounting do not expose it; the
    cell can neither approve its own request nor read the token table."""
    w = scientist(alice, f"root-sqlite-{uuid.uuid4().hex[:6]}")
    try:
        _self_approval(w, Path(alice.process.state), w.token)  # type: ignore[attr-defined]
    finally:
        w.close()


def test_cell_cannot_reach_state_sqlite_outside_tmp(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    """The same with the state dir outside every scratch dir (in the repository)."""
    base = ROOT / "test-artifacts"
    base.mkdir(exist_ok=True)
    state = base / f"root-state-{uuid.uuid4().hex[:8]}"
    w = fresh_worker("rooty", state=state)
    try:
        _self_approval(w, state, w.token)  # type: ignore[attr-defined]
    finally:
        w.close()
        if w.process is not None:
            w.process.kill()
        import shutil
        shutil.rmtree(state, ignore_errors=True)


ISOLATION = SYSCALLS + r"""
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
CLONE_NEWUSER, CLONE_NEWNS, PTRACE_TRACEME = 0x10000000, 0x00020000, 0
result = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "CapEff": status["CapEff"].strip(), "CapPrm": status["CapPrm"].strip(),
    "CapBnd": status["CapBnd"].strip(), "CapAmb": status["CapAmb"].strip(),
    "NoNewPrivs": status["NoNewPrivs"].strip(), "Seccomp": status["Seccomp"].strip(),
    "ptrace": call(libc.ptrace, PTRACE_TRACEME, 0, None, None),
    "unshare_user": call(libc.unshare, CLONE_NEWUSER),
    "unshare_mnt": call(libc.unshare, CLONE_NEWNS),
    "mount": mount_tmpfs("/tmp"),
    "setuid0": call(libc.setuid, 0),
}
"""


def test_kernels_run_unprivileged_under_seccomp(connect_as: Callable[..., kb.Worker]) -> None:
    """Inside: no capability at all, a uid that is not 0 (one per kernel), no_new_privs,
    seccomp in filter mode; ptrace, unshare and mount fail with EPERM (the filter: without it
    an unprivileged process may PTRACE_TRACEME and create a user namespace)."""
    a, b = connect_as("root-caps-a"), connect_as("root-caps-b")
    seen = [probe(a, ISOLATION), probe(b, ISOLATION)]
    for got in seen:
        assert got["uid"] != 0 and got["gid"] != 0 and 0 not in got["groups"], got
        for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(got[cap], 16) == 0, (cap, got)
        assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2", got
        for call in ("ptrace", "unshare_user", "unshare_mnt", "mount", "setuid0"):
            assert got[call] == "EPERM", (call, got)
    if os.geteuid() == 0:  # a root worker gives each kernel a uid of its own
        assert seen[0]["uid"] != seen[1]["uid"], "two sessions' kernels share a uid"
    private_ok(a, ISOLATION + """
assert result["uid"] != 0 and int(result["CapEff"], 16) == 0 and result["Seccomp"] == "2"
assert result["ptrace"] == result["unshare_user"] == result["mount"] == "EPERM", result
""")


NETWORK = r"""
import socket
def attempt(fn):
    try:
        fn()
    except BaseException as exc:
        return type(exc).__name__
    return "ok"
def raw():
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
def icmp():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
def tcp(host, port):
    return lambda: socket.create_connection((host, port), timeout=3).close()
result = {"packet": attempt(raw), "icmp_raw": attempt(icmp),
          "worker": attempt(tcp("127.0.0.1", WS_PORT)), "external": attempt(tcp("1.1.1.1", 443)),
          "dns": attempt(lambda: socket.getaddrinfo("example.com", 80)),
          "interfaces": [n for _, n in socket.if_nameindex()]}
"""


def test_network_stays_refused(session: kb.Worker, alice: kb.Worker) -> None:
    """No route out (worker port, external IPs, DNS), and no raw or packet sockets to craft
    or sniff traffic with (root's CAP_NET_RAW is gone)."""
    got = probe(session, f"WS_PORT = {alice.process.port}\n" + NETWORK)
    for key in ("packet", "icmp_raw", "worker", "external", "dns"):
        assert got[key] != "ok", (key, got)
    assert got["interfaces"] == ["lo"], got


# -- limits --------------------------------------------------------------------------------------
def _others_work(*workers: kb.Worker) -> None:
    for w in workers:
        r = w.run("x = 41 + 1\nprint(x)", mock=True, timeout=60)
        assert r.status == "ok" and "42" in mock_text(r), r


def test_memory_hog_is_stopped(limited: kb.Worker) -> None:
    """A cell allocating twice the kernel's memory limit gets MemoryError; the kernel and
    other sessions keep working."""
    w, other = scientist(limited, "hog"), scientist(limited, "hog-neighbour")
    try:
        hog = f"x = bytearray({2 * LIMITS['memory_mb']} * 2**20)\nx[::4096] = b'1' * len(x[::4096])"
        for mock in (True, False):
            r = w.run(hog, mock=mock, timeout=60)
            assert (r.status, r.error_type) == ("error", "MemoryError"), r
        _others_work(w, other)
    finally:
        w.close()
        other.close()


def _processes_of(uid: int) -> int:
    """Threads of all processes running as ``uid`` on the host (what RLIMIT_NPROC counts)."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in
                          (d / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid:
            n += int(fields["Threads"])
    return n


def test_fork_bomb_is_stopped(limited: kb.Worker) -> None:
    """A cell forking without end hits the kernel's process limit (BlockingIOError), the
    sandbox holds at most the limit, other sessions keep working, and a restart clears it."""
    w, other = scientist(limited, "bomb"), scientist(limited, "bomb-neighbour")
    try:
        bomb = ("import os, time\n"
                "for i in range(300):\n"
                "    if os.fork() == 0:\n"
                "        time.sleep(30)\n"
                "        os._exit(0)\n")
        uid = probe(w, "import os\nresult = os.getuid()")
        t0 = time.monotonic()
        r = w.run(bomb, mock=True, timeout=60)
        assert r.status == "error" and r.error_type == "BlockingIOError", r
        assert time.monotonic() - t0 < 30
        # Counted from the host: the kernel's uid holds no more than its limit.
        assert 0 < _processes_of(uid) <= LIMITS["processes"], _processes_of(uid)
        _others_work(other)
        w.restart(mock=True)
        assert probe(w, "import os\nresult = len([p for p in os.listdir('/proc') "
                        "if p.isdigit()])") <= 3
        _others_work(w, other)
    finally:
        w.close()
        other.close()


def test_cpu_spinner_is_stopped(limited: kb.Worker) -> None:
    """A cell spinning forever is killed at the CPU-time limit, long before the cell's
    timeout; the scientist gets KernelDied, the kernel comes back, others keep working."""
    w, other = scientist(limited, "spin"), scientist(limited, "spin-neighbour")
    try:
        t0 = time.monotonic()
        with pytest.raises(kb.KernelDied):
            w.run("while True:\n    pass", mock=True, timeout=100)
        assert time.monotonic() - t0 < 90
        _others_work(w, other)
    finally:
        w.close()
        other.close()


# -- output --------------------------------------------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_huge_output_is_cut_and_worker_memory_bounded(flooded: kb.Worker) -> None:
    """Cells printing ~600 MB (in 1 MB lines, and as one 200 MB write) get OutputTooLarge;
    the worker's peak RSS grows by far less than the output, and it keeps serving."""
    w, other = scientist(flooded, "flood"), scientist(flooded, "flood-neighbour")
    pid = flooded.process.proc.pid
    try:
        _others_work(w, other)
        before = _peak_rss_mb(pid)
        lines = "line = 'x' * 2**20\nfor i in range(600):\n    print(line, flush=True)\n"
        one = "import sys\nsys.stdout.write('y' * 200_000_000)\nsys.stdout.flush()\n"
        for code in (lines, one):
            for mock in (True, False):
                with pytest.raises(kb.OutputTooLarge):
                    w.run(code, mock=mock, timeout=100)
        grown = _peak_rss_mb(pid) - before
        assert grown < 150, f"the worker's peak RSS grew by {grown:.0f} MB"
        _others_work(w, other)
    finally:
        w.close()
        other.close()


def test_huge_agent_reply_is_refused(flooded: kb.Worker) -> None:
    """A cell replaces the kernel's agent with one answering 100 MB: the worker refuses the
    reply unread (OutputTooLarge), its peak RSS stays put, and the kernel keeps serving."""
    w = scientist(flooded, "bigreply")
    pid = flooded.process.proc.pid
    try:
        r = w.run("k = get_ipython().kernel\n"
                  "def evil(stream, ident, parent):\n"
                  "    k.session.send(stream, 'syft_reply', {'status': 'ok', "
                  "'junk': 'z' * 100_000_000}, parent, ident)\n"
                  "k.shell_handlers['syft_request'] = evil\n", mock=True)
        assert r.status == "ok", r
        before = _peak_rss_mb(pid)
        with pytest.raises(kb.OutputTooLarge):
            w.send(1, mock=True)
        assert _peak_rss_mb(pid) - before < 50
        r = w.run("print('still here')", mock=True, timeout=60)
        assert r.status == "ok" and "still here" in mock_text(r), r
    finally:
        w.close()


def test_private_files_inside_shown_dirs_stay_hidden(fresh_worker: Callable[..., kb.Worker],
                                                     tmp_path: Path) -> None:
    """An asset file and a state dir inside a directory kernels do see (/etc): both are
    covered, and unmounting the cover fails; the worker still hands the asset over."""
    import shutil

    from conftest import write_secret_asset

    base = Path("/etc") / f"syftlab-test-{uuid.uuid4().hex[:8]}"
    try:
        private, mock = write_secret_asset(base / "data")
        state = base / "state"
        w = fresh_worker("etcy", assets={"secret": str(private)}, mocks={"secret": str(mock)},
                         state=state)
        attack = SYSCALLS + f"""
import os
steps = {{p: umount(p) for p in ({str(private)!r}, {str(state)!r}, "/etc")}}
result = {{"steps": steps, "asset": read({str(private)!r}),
          "db": read({str(state / "worker.sqlite")!r})[:100],
          "listing": sorted(os.listdir({str(state)!r})) if os.path.isdir({str(state)!r}) else None,
          "mock": read({str(mock)!r})}}
"""
        got = probe(w, attack)
        assert all(v != "ok" for v in got["steps"].values()), got
        assert got["asset"] in ("", "!PermissionError", "!FileNotFoundError"), got["asset"][:80]
        assert "SQLite" not in got["db"] and got["listing"] in (None, []), got
        assert got["mock"] == mock.read_text()  # the same read works for a public file
        ptr = w.asset("secret")
        assert ptr.taint == frozenset({"secret"})
        with pytest.raises(kb.ApprovalRequired):
            ptr.get()
        r = w.run(attack + f"\nassert {PLANTED_TEXT!r} not in result['asset']\n"
                  "assert not any(v == 'ok' for v in steps.values())\n"
                  "assert int(secret['value'].max()) > 0\n")
        assert r.status == "ok", r
    finally:
        shutil.rmtree(base, ignore_errors=True)
