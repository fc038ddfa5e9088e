"""The seccomp profile of run containers: Docker's default denials, plus ptrace.

Docker's default profile still allows `ptrace` (and `process_vm_readv/writev`) on kernels >= 4.8, so a
decoder could attach to and rewrite another process of its container. A custom profile replaces the
default one entirely, so this one denies, besides those, every syscall the default denies to an
unprivileged container (kernel modules, keyrings, namespaces, mounts, clocks, bpf, perf, io_uring, ...)
and allows the rest. gVisor (runsc) implements the syscall surface itself and is the boundary there;
`runsc --oci-seccomp` enforces this profile inside the sandbox too.

One difference under runsc: the installed gVisor ignores `errnoRet` and answers every denied call with
EPERM. glibc only falls back from clone3 to clone on ENOSYS, so denying clone3 there would stop every
thread from starting (`RuntimeError: can't start new thread`). Under runsc clone3 is therefore allowed:
a namespace it could create is one of gVisor's own, inside the sandbox, and unshare/setns stay denied.
"""
from __future__ import annotations

import errno
import json
from functools import lru_cache

DENIED = (
    # inspecting or rewriting other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "name_to_handle_at",
    "open_by_handle_at",
    # the kernel itself: modules, kexec, reboot, swap, accounting, quotas, clocks, syslog
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "quotactl_fd", "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "sysfs", "_sysctl", "uselib", "ustat", "nfsservctl", "lookup_dcookie", "vhangup",
    # attack surface with a history of kernel bugs
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "iopl", "ioperm",
    "vm86", "vm86old", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fanotify_init", "open_tree_attr",
)
#: clone/clone3 with any of these flags would create namespaces (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|
#: NEWUSER|NEWPID|NEWNET|NEWTIME)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)


@lru_cache(maxsize=4)
def profile_json(runtime: str = "runc") -> str:
    """The profile for a container of `runtime` (runc or runsc; see the module's note on clone3)."""
    # clone3 passes its flags in memory where seccomp cannot look: make libc fall back to clone
    clone3 = [] if runtime == "runsc" else [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]
    rules = [{"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
             *clone3,
             # one rule per flag: arguments of one rule are ANDed, rules are ORed
             *({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
               for flag in NAMESPACE_FLAGS)]
    return json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                       "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                                         "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                       "syscalls": rules})
