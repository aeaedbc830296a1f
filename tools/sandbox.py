"""The sandbox that untrusted submission code runs in while it is graded (Linux).

Two ways, the first that works on this machine is used (`find`):
- **bwrap** (Debian's `bubblewrap`): a private view of the file system (the Python installation, read-only; the
  folders the grader names, read-only; a size-limited /tmp; nothing else: not the reference, the hidden tests, the
  grades or other submissions), no network (a namespace with loopback only), its own process, IPC and host-name
  namespaces, a new session (no terminal), and an unprivileged user: as root, the process drops to a uid of its own
  inside the sandbox (`setpriv`); otherwise the user namespace maps it to the caller's own unprivileged uid.
- **user** (where namespaces cannot be made, e.g. inside Gradescope's container): the grader runs as root and the
  child runs as a separate unprivileged user (`setpriv`, no capabilities, no new privileges), with the network off
  where `unshare -n` works. It sees the file system as that user; `find` refuses this way unless a probe run as
  that user cannot read the grader's own files (make them private: `chmod 700`), and it needs a Python that user
  can run.

Both set resource limits (`Limits`: CPU time, address space, processes, file size, open files) on the child; the
grader adds the wall time and reads the child's output through files those limits cap. Where neither way works,
`find` raises SandboxUnavailable with the fix, unless the caller passes `unsafe=True` (the grader's
`--no-sandbox`), which every report then states.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

FIRST_UID = 61000
"""Sandbox users as root: uid FIRST_UID + slot, one per submission graded at once (the process limit is per uid)."""
MAX_SLOTS = 512
"""Sandbox users available on one machine, for all the graders running on it together."""
_held: dict[int, object] = {}  # slot -> its open lock file, held until this process ends


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed child (and all it starts)."""

    cpu_seconds: int = 600
    memory_bytes: int = 6 * 2**30  # address space: importing torch reserves about 0.7 GB
    processes: int = 64  # tasks (processes and threads) of the sandbox's user
    file_bytes: int = 64 * 2**20  # any one file it writes, its output and the values it sends back included
    open_files: int = 256
    tmp_bytes: int = 256 * 2**20  # its /tmp (bwrap)
    scratch_bytes: int = 1024 * 2**20  # a writable copy of the submission, when its notebooks run (bwrap)

    def apply(self) -> None:
        """Set the limits on this process (called in the child between fork and exec)."""
        for which, value in ((resource.RLIMIT_CPU, self.cpu_seconds), (resource.RLIMIT_AS, self.memory_bytes),
                             (resource.RLIMIT_NPROC, self.processes), (resource.RLIMIT_FSIZE, self.file_bytes),
                             (resource.RLIMIT_NOFILE, self.open_files), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(which, (value, value))


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made here; the message says what to install or where to grade instead."""


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How to start a command sandboxed: `command(...)` gives the argv, `popen(...)` starts it under the limits."""

    kind: str  # "bwrap", "user" or "none"
    limits: Limits = Limits()

    def describe(self) -> str:
        return {"bwrap": "bubblewrap: private file system, no network, unprivileged user, resource limits",
                "user": "a separate unprivileged user with resource limits (no private file system view)",
                "none": "NO SANDBOX (--no-sandbox): submission code ran as the grader's own user"}[self.kind]

    def path(self, inside: str, outside: Path) -> str:
        """What the child calls a folder bound at `inside` (bwrap), or its real path (the other kinds)."""
        return inside if self.kind == "bwrap" else str(outside)

    def command(self, argv: list[str], read_only: dict[str, Path], writable: dict[str, Path] = {},
                cwd: str = "/tmp", env: dict[str, str] | None = None, slot: int = 0, network: bool = False,
                scratch: str | None = None, loopback: bool = False) -> list[str]:
        """The argv that runs `argv` sandboxed; `read_only` / `writable` map paths inside to folders outside
        (with `kind == "bwrap"`; otherwise the child sees the real paths: use `path`). `scratch`: a size-limited
        writable tmpfs at that path (bwrap). `loopback`: the private network has 127.0.0.1 (a Jupyter kernel)."""
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "MPLCONFIGDIR": "/tmp",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "GRADER_SANDBOX": self.kind, **(env or {})}
        if self.kind == "none":
            return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        drop = _drop_privileges(slot) if os.geteuid() == 0 else []
        if self.kind == "user":
            off = _network_off(network)
            up = ["sh", "-c", 'ip link set lo up && exec "$@"', "sh"] if off and loopback else []
            return [*off, *up, *drop, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        # as root no user namespace (setpriv then drops to a real unprivileged uid); otherwise one is needed
        unshare = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
                   if os.geteuid() == 0 else ["--unshare-all"])
        cmd = [shutil.which("bwrap"), "--die-with-parent", "--new-session", *unshare, "--clearenv",
               "--proc", "/proc", "--dev", "/dev", "--size", str(self.limits.tmp_bytes), "--perms", "1777",
               "--tmpfs", "/tmp"]
        if scratch:
            cmd += ["--size", str(self.limits.scratch_bytes), "--perms", "1777", "--tmpfs", scratch]
        if network:
            cmd.remove("--unshare-net") if "--unshare-net" in cmd else cmd.append("--share-net")
        if os.geteuid() != 0:
            cmd += ["--uid", str(os.getuid()), "--gid", str(os.getgid())]
        for link, target in _system_links():
            cmd += ["--symlink", target, link]
        binds = [("--ro-bind", *m) for m in _system_mounts()] + [("--ro-bind", k, str(v)) for k, v in read_only.items()]
        binds += [("--bind", k, str(v)) for k, v in writable.items()]
        made = {"/", "/tmp", "/proc", "/dev", *([scratch] if scratch else [])}
        for how, inside, outside in sorted(binds, key=lambda b: b[1].count("/")):
            for parent in reversed(Path(inside).parents):  # folders on the way, traversable by the sandbox user
                if str(parent) not in made:
                    made.add(str(parent))
                    cmd += ["--perms", "0755", "--dir", str(parent)]
            made.add(inside)
            cmd += [how, outside, inside]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return [*cmd, "--chdir", cwd, *drop, *argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `self.command(argv, ...)` with the limits set; stdin/stdout/stderr/pass_fds as given."""
        keys = ("read_only", "writable", "cwd", "env", "slot", "network", "scratch", "loopback")
        command = self.command(argv, **{k: kwargs.pop(k) for k in keys if k in kwargs})
        return subprocess.Popen(command, preexec_fn=self.limits.apply, start_new_session=True, **kwargs)


def reserve_slots(n: int) -> list[int]:
    """`n` slots (sandbox users) that this process alone uses on this machine: two graders running at once (two
    terminals, a batch beside a test) never share a user, so one's clean-up (`kill_user`) never kills the other's
    children. As root each slot is held by a lock file in a folder only root can open, released when this process
    ends; repeated calls return the slots already held first. Without root the child runs as the caller's own uid
    (bwrap's user namespace) and slots only number the submissions."""
    if os.geteuid() != 0:
        return list(range(n))
    folder = Path("/run/lock" if os.path.isdir("/run/lock") else "/tmp") / "idl-ex2-grader-slots"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if info.st_uid != 0 or info.st_mode & 0o077 or folder.is_symlink():
        raise SandboxUnavailable(f"{folder} must be a folder only root can open (remove it and rerun)")
    for slot in range(MAX_SLOTS):
        if len(_held) >= n:
            break
        if slot in _held:
            continue
        lock = open(folder / f"slot-{slot}", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()  # another grader holds it
            continue
        _held[slot] = lock
    if len(_held) < n:
        raise SandboxUnavailable(f"all {MAX_SLOTS} sandbox users are in use by other graders on this machine")
    return sorted(_held)[:n]


def kill_user(slot: int) -> None:
    """As root: SIGKILL every process of slot's sandbox user (what a child started and left behind)."""
    if os.geteuid() != 0:
        return
    uid = FIRST_UID + slot
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), 9)
            except (OSError, ProcessLookupError):
                pass


def _drop_privileges(slot: int) -> list[str]:
    uid = str(FIRST_UID + slot)
    return [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


@functools.lru_cache(maxsize=2)
def _network_off(network: bool) -> tuple[str, ...]:
    """`unshare -n` (as root: a network namespace with nothing in it) where it works, else nothing."""
    if network or os.geteuid() != 0 or not shutil.which("unshare"):
        return ()
    ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    return ("unshare", "-n") if ok else ()


@functools.lru_cache(maxsize=1)
def _system_mounts() -> tuple[tuple[str, str], ...]:
    """What a Python program needs to run: /usr (and the /bin, /lib links into it), the dynamic linker's cache,
    the Python installation and every folder on its path, each read-only. Nothing of the grader's own tree."""
    grader_root = Path(__file__).resolve().parent.parent
    mounts = {"/usr": "/usr"}
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_dir() and not path.is_symlink():
            mounts[str(path)] = str(path)
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group"):
        if (Path("/etc") / name).exists():
            mounts[f"/etc/{name}"] = f"/etc/{name}"
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    for entry in [*prefixes, *map(Path, sys.path)]:
        entry = entry.resolve() if entry.exists() else None
        if entry is None or entry.is_relative_to(grader_root) or not entry.is_dir() or str(entry) == "/":
            continue
        if not any(entry.is_relative_to(p) for p in map(Path, mounts.values()) if p != Path("/")):
            mounts[str(entry)] = str(entry)
    return tuple(sorted(mounts.items(), key=lambda m: (m[0].count("/"), m[0])))


@functools.lru_cache(maxsize=1)
def _system_links() -> tuple[tuple[str, str], ...]:
    """/bin, /lib, ... where they are links into /usr (merged /usr): the same links inside."""
    return tuple((f"/{name}", os.readlink(f"/{name}")) for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                 if Path(f"/{name}").is_symlink())


def _works(sandbox: Sandbox, must_not_read: list[Path]) -> str | None:
    """None when a child started in `sandbox` runs Python and cannot read `must_not_read`; else the reason."""
    probe = ("import sys, numpy, torch\n"
             "for p in sys.argv[1:]:\n"
             "    try:\n        open(p, 'rb').read(1)\n    except OSError:\n        continue\n"
             "    print('READABLE', p); sys.exit(3)\n")
    try:
        slot = reserve_slots(1)[0]
        done = subprocess.run(sandbox.command([sys.executable, "-I", "-c", probe, *map(str, must_not_read)],
                                              read_only={}, slot=slot), capture_output=True, text=True, timeout=60,
                              preexec_fn=sandbox.limits.apply)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode == 3:
        return f"the sandbox user can read {done.stdout.split()[-1]} (make the grader's files private: chmod 700)"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
    return None


@functools.lru_cache(maxsize=4)
def find(unsafe: bool = False, prefer: str | None = None, limits: Limits = Limits()) -> Sandbox:
    """The first sandbox that works here (bwrap, then user), checked by a probe that must not read the grader's
    own files; `prefer` tries one kind only. With none: SandboxUnavailable, or with `unsafe` the kind "none"."""
    secret = [Path(__file__).resolve().parent / "hidden_tests.py", Path(__file__).resolve()]
    reasons = []
    for kind in ([prefer] if prefer else ["bwrap", "user"]):
        if kind == "bwrap" and not shutil.which("bwrap"):
            reasons.append("bwrap: not installed (Debian/Ubuntu: apt-get install bubblewrap)")
            continue
        if kind == "user" and os.geteuid() != 0:
            reasons.append("user: the grader must run as root to start the child as another user")
            continue
        reason = _works(Sandbox(kind, limits), secret)
        if reason is None:
            return Sandbox(kind, limits)
        reasons.append(f"{kind}: {reason}")
    if unsafe:
        return Sandbox("none", limits)
    raise SandboxUnavailable(
        "no sandbox for untrusted code can be made here: " + "; ".join(reasons) + ". Grade on Linux with "
        "bubblewrap installed (apt-get install bubblewrap; user namespaces enabled), or as root in a container "
        "(Gradescope: tools/make_autograder.py), or pass --no-sandbox to grade trusted code only.")
