"""The OS sandbox around scientist kernels (bubblewrap, an unprivileged user, seccomp, rlimits).

Every kernel is started as::

    sh -c 'exec 9<FILTER; exec "$@"'   # the seccomp program, opened by the worker
      prlimit --as --nproc --cpu --fsize --nofile --core   # resource limits
      setpriv --reuid=U --regid=U --clear-groups --inh-caps=-all --bounding-set=-all
              --no-new-privs          # only when the worker runs as root
      bwrap --unshare-user --disable-userns --cap-drop ALL --seccomp 9
            --unshare-net --unshare-pid --unshare-ipc --unshare-uts ...
      python -m ipykernel_launcher

What holds, even when the worker runs as root:

* **No privilege.** The kernel runs as a host user id of its own (``uid_base`` +
  a free index, leased with a lock file so concurrent workers never share one),
  in bubblewrap's own user namespace, with an empty capability set (effective,
  permitted, inheritable, ambient and bounding), ``no_new_privs``, and no way
  to create further user namespaces. Files of the worker (root, mode 0600/0700)
  are unreadable to it even if it could see them.
* **A seccomp filter** (:mod:`.seccomp_filter`) refuses ``mount``, ``umount2``,
  ``ptrace``, ``unshare``, ``setns``, ``pivot_root``, BPF, perf, keys, kexec,
  modules and the like, and ``clone`` with namespace flags.
* **A minimal file system.** The root is an empty, read-only tmpfs that shows
  only the system (``/usr``, ``/etc``, the ``/bin``/``/lib`` links), the Python
  installation (the venv, its base interpreter) and the ``kernel_bridge``
  package, read-only. The worker's state dir and the private asset files are
  not shown; where one of them lies inside a shown directory it is covered (an
  empty tmpfs over a directory, ``/dev/null`` over a file). ``/tmp``,
  ``/var/tmp`` and ``/dev/shm`` are private, size-limited tmpfs. The kernel's
  only door out is its own ZeroMQ ``ipc`` socket directory (owned by its uid).
* **No network** (an empty network namespace), its own pid, IPC and UTS
  namespaces, a clean environment, a new session (no ``TIOCSTI``), and it dies
  with the worker.
* **Limits** (:class:`~kernel_bridge.owner.config.SandboxLimits`, set with
  ``prlimit``): address space, processes and threads (per kernel, since the uid
  is the kernel's own), CPU seconds (then SIGKILL: the worker restarts the kernel
  and raises ``KernelDied``), file size and open files, and the size of its
  scratch tmpfs. The worker itself caps what it takes from a kernel (see
  :mod:`.kernels`). cgroups are not used (this machine class has cgroup v1).

Before the first kernel starts, :func:`ensure_available` runs the same command
line around a probe that reports from inside: ``CapEff`` must be 0, the uid not
0, ``NoNewPrivs`` 1 and ``Seccomp`` 2, and ``mount`` must fail. If any tool is
missing or any check fails, kernels are refused with
:class:`~kernel_bridge.errors.SandboxUnavailable` naming the reason, unless the
worker runs with ``--unsafe-no-sandbox``. A worker that does not run as root
keeps its own uid and relies on bubblewrap's user namespace and
``--cap-drop ALL``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxUnavailable
from . import seccomp_filter
from .config import SandboxLimits

#: The kernel's private, empty scratch directories (size-limited tmpfs).
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
#: System directories shown read-only (symlinks, as in merged-/usr systems, are recreated).
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Where uid leases are kept (lock files; one per uid in use).
LEASE_DIRS = ("/run/syftlab-uids", "/dev/shm/.syftlab-uids")
_MB = 2**20
_TOOLS = ("bwrap", "prlimit", "setpriv")


def is_root() -> bool:
    """Whether the worker runs as root (kernels then get uids of their own)."""
    return os.geteuid() == 0


@functools.cache
def tool_paths() -> dict[str, str]:
    """Paths of bwrap, prlimit and setpriv.

    Raises
    ------
    SandboxUnavailable
        Naming the missing tool and the package to install.
    """
    found: dict[str, str] = {}
    for name in _TOOLS:
        if name == "setpriv" and not is_root():
            continue
        exe = shutil.which(name)
        if exe is None:
            package = "bubblewrap" if name == "bwrap" else "util-linux"
            raise SandboxUnavailable(
                f"{name} is not installed, so kernels cannot be sandboxed; install it "
                f"(apt-get install {package}) or run the worker with --unsafe-no-sandbox"
            )
        found[name] = exe
    return found


def bwrap_path() -> str | None:
    """Path of ``bwrap``, or None where it is not installed."""
    try:
        return tool_paths()["bwrap"]
    except SandboxUnavailable:
        return None


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _python_dirs() -> list[Path]:
    """Directories the kernel's Python needs: the venv, its base interpreter, the package."""
    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
            Path(__file__).parent.parent,  # the kernel_bridge package
            # A venv's python is often a symlink into a pyenv/conda tree under $HOME.
            Path(os.path.realpath(sys.executable)).parent.parent}
    dirs |= {Path(os.path.realpath(d)) for d in list(dirs)}
    return sorted(d for d in dirs if d.is_dir())


def shown_dirs() -> list[Path]:
    """Every host directory a kernel sees (read-only), without covered paths inside."""
    system = [Path(d) for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    extra = [p for p in _python_dirs() if not _under(p, system)]
    # Drop directories inside other shown ones (one bind shows both).
    return system + [p for p in extra if not _under(p, [q for q in extra if q != p])]


#: glibc's malloc in plan kernels: blocks up to 32 MiB come from the heap and up to
#: 64 MiB of free heap is kept, so each run of a plan reuses the pages the last one
#: faulted in. With the defaults its multi-MB buffers went back to the kernel and
#: were faulted in again each run (7,000-10,000 faults, ~20 % of an FL round's
#: kernel CPU here). Plan kernels run one shape of work over and over; scientist
#: kernels keep the defaults.
PLAN_MALLOC = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:"
                                 "glibc.malloc.trim_threshold=67108864"}


def sandbox_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment a kernel starts with (nothing inherited from the worker),
    plus ``extra`` (the worker's own settings, such as :data:`PLAN_MALLOC`)."""
    n = str(max(1, int(threads)))
    return {**(extra or {}),
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TORCH_NUM_THREADS": n,
    }


# -- user ids ----------------------------------------------------------------------------------
@dataclass
class UidLease:
    """A host user id held by one kernel until :meth:`release`."""

    uid: int
    _fd: int | None = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


def _lease_dir() -> Path:
    for d in LEASE_DIRS:
        p = Path(d)
        with contextlib.suppress(OSError):
            p.mkdir(mode=0o700, parents=False, exist_ok=True)
            if p.is_dir() and os.access(p, os.W_OK):
                return p
    raise SandboxUnavailable(f"no writable directory for uid leases ({', '.join(LEASE_DIRS)})")


def lease_uid(limits: SandboxLimits) -> UidLease:
    """A uid for one kernel: its own when the worker runs as root, else the worker's.

    Leases are lock files held with ``flock``, so kernels of all workers on the
    machine get distinct uids and a crashed worker's uids come free at once.

    Raises
    ------
    SandboxUnavailable
        If every uid in ``[uid_base, uid_base + uid_count)`` is in use.
    """
    if not is_root():
        return UidLease(os.getuid())
    d = _lease_dir()
    for uid in range(limits.uid_base, limits.uid_base + limits.uid_count):
        fd = os.open(d / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UidLease(uid, fd)
    raise SandboxUnavailable(
        f"all {limits.uid_count} kernel uids from {limits.uid_base} on are in use"
    )


def give_to(path: Path, uid: int) -> None:
    """Make the kernel's uid the owner of ``path`` (no-op unless the worker is root)."""
    if is_root():
        os.chown(path, uid, uid)


# -- the command line ------------------------------------------------------------------------
def threads_of(uid: int) -> int:
    """Threads of all processes running as ``uid`` (what ``RLIMIT_NPROC`` counts)."""
    n = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        with contextlib.suppress(KeyError, ValueError, IndexError):
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
    return n


def limit_argv(limits: SandboxLimits) -> list[str]:
    """``prlimit`` options for one kernel (soft = hard, except CPU: SIGXCPU, then SIGKILL).

    ``RLIMIT_NPROC`` counts every process of a uid. A root worker gives each kernel a
    uid of its own, so the limit is the kernel's alone; a worker that is not root
    shares its uid with its kernels, so a kernel may add ``processes`` to what the
    uid runs when it starts.
    """
    nproc = limits.processes if is_root() else threads_of(os.getuid()) + limits.processes
    return [
        f"--as={limits.memory_mb * _MB}",
        f"--nproc={nproc}",
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
        f"--fsize={limits.file_size_mb * _MB}",
        f"--nofile={limits.open_files}",
        "--core=0",
    ]


@dataclass
class Launch:
    """A sandboxed command line and the descriptors it needs (``Popen(pass_fds=fds)``).

    The descriptor is a pipe holding the seccomp program (``bwrap --seccomp FD``).
    Close it with :meth:`close` once the process started.
    """

    argv: list[str]
    fds: tuple[int, ...]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def prepare(
    ipc_dir: Path,
    hide: Iterable[Path],
    threads: int = 1,
    *,
    limits: SandboxLimits | None = None,
    uid: int | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Launch:
    """The command line (and descriptors) that start one ipykernel inside the sandbox.

    Parameters
    ----------
    ipc_dir : Path
        The kernel's own socket directory (bind-mounted read-write; owned by ``uid``).
    hide : iterable of Path
        Files and directories the kernel must not see (state dir, private files).
    threads : int
        Threads for OpenMP/MKL/torch inside the kernel.
    limits : SandboxLimits, optional
        Resource limits; the defaults when omitted.
    uid : int, optional
        The kernel's host uid (from :func:`lease_uid`); the worker's own when omitted.
    command : list of str, optional
        What to run instead of the kernel (the probe).
    env : dict, optional
        Variables set inside on top of :func:`sandbox_env`'s.

    Returns
    -------
    Launch
        Pass ``launch.fds`` to ``Popen(pass_fds=...)``, then :meth:`Launch.close`.

    Raises
    ------
    SandboxUnavailable
        If a tool is missing or the seccomp filter cannot be built.
    """
    tools = tool_paths()
    limits = limits or SandboxLimits()
    uid = os.getuid() if uid is None else uid
    program = seccomp_filter.program()
    fds: list[int] = []
    try:
        rfd, wfd = os.pipe()  # the filter (< 64 KiB, fits in the pipe's buffer)
        fds.append(rfd)
        try:
            os.write(wfd, program)
        finally:
            os.close(wfd)
        argv = [tools["prlimit"], *limit_argv(limits), "--", tools["bwrap"]]
        if is_root():
            if uid == 0:
                raise SandboxUnavailable("a kernel must not run as uid 0")
            # bwrap sets up the mounts as root (it must reach e.g. a Python under /root);
            # setpriv, inside, then becomes the kernel's uid and drops the rest for good.
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                     "--cap-add", "CAP_SETPCAP"]
            inner = [tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        else:
            argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
            inner = []
        argv += [
            "--seccomp", str(rfd),
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv",
        ]
        shown = shown_dirs()
        scratch = [Path(d) for d in SCRATCH_DIRS]

        made: set[Path] = set()

        def bind(p: Path) -> list[str]:
            # Parents that bwrap would otherwise create private to root (mode 0700).
            out: list[str] = []
            for a in reversed(p.parents):
                if a == Path("/") or a in made or _under(a, shown) or a in scratch:
                    continue
                made.add(a)
                out += ["--perms", "0755", "--dir", str(a)]
            return out + ["--ro-bind", str(p), str(p)]

        for name in SYSTEM_DIRS:
            if os.path.islink(name):
                argv += ["--symlink", os.readlink(name), name]
        for p in shown:
            if not _under(p, scratch):
                argv += bind(p)
        argv += ["--dev", "/dev", "--proc", "/proc"]
        size = str(limits.scratch_mb * _MB)
        for d in SCRATCH_DIRS:
            argv += ["--perms", "1777", "--size", size, "--tmpfs", d]
        # Python directories below a scratch dir (a checkout under /tmp) are shown again.
        for p in shown:
            if _under(p, scratch):
                argv += bind(p)
        for raw in hide:
            p = Path(raw).resolve()
            if not p.exists() or not _under(p, shown):
                continue  # not shown at all
            if p.is_dir():
                argv += ["--tmpfs", str(p), "--remount-ro", str(p)]
            else:
                argv += ["--ro-bind", "/dev/null", str(p)]
        argv += ["--bind", str(ipc_dir), str(ipc_dir), "--remount-ro", "/", "--chdir", "/tmp"]
        for k, v in sandbox_env(threads, env).items():
            argv += ["--setenv", k, v]
        argv += ["--", *inner]
        argv += command or [sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"]
    except BaseException:
        Launch([], tuple(fds)).close()
        raise
    return Launch(argv, tuple(fds))


def unsandboxed_argv() -> list[str]:
    """The plain kernel command line used with ``--unsafe-no-sandbox``."""
    return [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


# -- the probe -------------------------------------------------------------------------------
PROBE = r"""
import ctypes, json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
              if ":" in line)
libc = ctypes.CDLL(None, use_errno=True)
mounted = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(),
                  "CapEff": status.get("CapEff", "").strip(),
                  "CapPrm": status.get("CapPrm", "").strip(),
                  "NoNewPrivs": status.get("NoNewPrivs", "").strip(),
                  "Seccomp": status.get("Seccomp", "").strip(),
                  "mount": mounted, "mount_errno": ctypes.get_errno()}))
"""


def probe(limits: SandboxLimits) -> dict[str, object]:
    """Start the sandbox around a probe and return what it saw of itself.

    Raises
    ------
    SandboxUnavailable
        If the sandbox cannot start or any isolation check fails (the reason says which).
    """
    import json

    lease = lease_uid(limits)
    tmp = Path(tempfile.mkdtemp(prefix="syk-probe-", dir="/dev/shm" if
                                os.path.isdir("/dev/shm") else None))
    try:
        give_to(tmp, lease.uid)
        launch = prepare(tmp, [], limits=limits, uid=lease.uid,
                         command=[sys.executable, "-I", "-c", PROBE])
        try:
            run = subprocess.run(launch.argv, capture_output=True, timeout=60,
                                 env=sandbox_env(1), stdin=subprocess.DEVNULL,
                                 pass_fds=launch.fds)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"the sandbox could not start: {exc}") from None
        finally:
            launch.close()
        if run.returncode != 0:
            err = run.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise SandboxUnavailable(
                "the sandbox could not start (bwrap/setpriv/prlimit exited "
                f"{run.returncode}: {' | '.join(err) or 'no message'}); user namespaces may be "
                "disabled on this machine"
            )
        try:
            seen: dict[str, object] = json.loads(run.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SandboxUnavailable("the sandbox probe printed nothing readable") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lease.release()
    problems = []
    if seen.get("uid") == 0 or seen.get("euid") == 0:
        problems.append("the kernel would run as uid 0")
    if seen.get("CapEff") != "0000000000000000" or seen.get("CapPrm") != "0000000000000000":
        problems.append(f"the kernel would keep capabilities (CapEff {seen.get('CapEff')})")
    if seen.get("NoNewPrivs") != "1":
        problems.append("no_new_privs is not set")
    if seen.get("Seccomp") != "2":
        problems.append("the seccomp filter is not active (kernel without CONFIG_SECCOMP?)")
    if seen.get("mount") == 0:
        problems.append("mount() succeeded inside the sandbox")
    if problems:
        raise SandboxUnavailable("the kernel sandbox is not safe here: " + "; ".join(problems))
    return seen


_checked: set[tuple[int, ...]] = set()


def ensure_available(limits: SandboxLimits) -> None:
    """Probe the sandbox until it holds once per worker (and set of limits); else raise.

    Raises
    ------
    SandboxUnavailable
        With the reason (a missing tool, user namespaces off, a failed check).
    """
    key = tuple(getattr(limits, f) for f in limits.__dataclass_fields__)
    if key in _checked:
        return
    try:
        probe(limits)
    except SandboxUnavailable as exc:
        raise SandboxUnavailable(
            f"{exc.message}. Kernels are not started without a sandbox; fix this or run the "
            "worker with --unsafe-no-sandbox (scientist code could then read the worker's files)"
        ) from None
    _checked.add(key)
