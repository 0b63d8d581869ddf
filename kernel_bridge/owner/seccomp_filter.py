"""The seccomp filter every sandboxed kernel runs under.

The filter allows every system call except those that change the mount table,
namespaces, other processes' memory, the kernel (modules, keys, BPF, kexec,
reboot, swap, time) or give a way around file permissions, which fail with
``EPERM``. ``clone`` with a namespace flag fails the same way; ``clone3``
(whose flags sit behind a pointer the filter cannot read) fails with
``ENOSYS`` so that the C library falls back to ``clone``. System calls of a
foreign architecture (e.g. 32-bit ``int 0x80`` on x86-64) kill the process.

The program is compiled with libseccomp (through :mod:`pyseccomp`) and handed
to bubblewrap as a file descriptor (``bwrap --seccomp FD``).
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

from ..errors import SandboxUnavailable

#: System calls that fail with EPERM inside a kernel.
DENIED_SYSCALLS: tuple[str, ...] = (
    # the mount table and namespaces
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # around file permissions
    "open_by_handle_at", "name_to_handle_at",
    # the kernel itself
    "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "syslog", "acct",
    "keyctl", "add_key", "request_key", "userfaultfd", "quotactl", "lookup_dcookie",
    "iopl", "ioperm", "vhangup", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "stime",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)

#: ``clone`` flags that create namespaces (CLONE_NEWNS ... CLONE_NEWTIME).
NAMESPACE_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                   | 0x20000000 | 0x40000000 | 0x00000080)


@functools.cache
def program() -> bytes:
    """The compiled BPF program (cached per process).

    Raises
    ------
    SandboxUnavailable
        If libseccomp (``libseccomp.so.2``) or :mod:`pyseccomp` cannot be loaded.
    """
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:
        raise SandboxUnavailable(
            f"seccomp is unavailable ({type(exc).__name__}: {exc}); install libseccomp2 "
            "(apt-get install libseccomp2) and the pyseccomp package"
        ) from None
    try:
        flt = sc.SyscallFilter(defaction=sc.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                flt.add_rule(sc.ERRNO(errno.EPERM), name)
            except (ValueError, RuntimeError, OSError):
                continue  # not a system call of this architecture
        # One rule per flag: libseccomp ORs rules on the same call.
        bit = 1
        while bit <= NAMESPACE_FLAGS:
            if NAMESPACE_FLAGS & bit:
                flt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
            bit <<= 1
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as fh:
            flt.export_bpf(fh)
            fh.seek(0)
            data = fh.read()
    except Exception as exc:  # libseccomp reports failures as plain exceptions
        raise SandboxUnavailable(
            f"the seccomp filter could not be built ({type(exc).__name__}: {exc})"
        ) from None
    if not data:
        raise SandboxUnavailable("the seccomp filter compiled to an empty program")
    return data


def write_program(path: str) -> None:
    """Write :func:`program` to ``path`` (mode 0600, owned by the worker)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, program())
    finally:
        os.close(fd)
