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

import atexit
import dataclasses
import fcntl
import functools
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ex2.runtime import ROOT

FIRST_UID = 61000
"""Sandbox users as root: uid FIRST_UID + slot, one per submission graded at once (the process limit is per uid)."""
MAX_SLOTS = 512
"""Sandbox users available on one machine, for all the graders running on it together."""
_held: dict[int, object] = {}  # slot -> its open lock file, held until this process ends
_FIRST = [0]  # the lowest slot reserve_slots takes (first_slot)


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
                scratch: str | None = None, loopback: bool = False, home: str | None = None) -> list[str]:
        """The argv that runs `argv` sandboxed; `read_only` / `writable` map paths inside to folders outside
        (with `kind == "bwrap"`; otherwise the child sees the real paths: use `path`). `scratch`: a size-limited
        writable tmpfs at that path (bwrap). `loopback`: the private network has 127.0.0.1 (a Jupyter kernel).
        `home` (kinds other than bwrap, whose HOME is its private /tmp): the child's HOME and working folder, a
        fresh folder of its own."""
        env = {"PATH": "/usr/bin:/bin", "HOME": home or "/tmp", "LANG": "C.UTF-8", "MPLCONFIGDIR": home or "/tmp",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "GRADER_SANDBOX": self.kind, **(env or {})}
        chdir = ["-C", home] if home and self.kind != "bwrap" else []
        if self.kind == "none":
            return ["env", "-i", *chdir, *(f"{k}={v}" for k, v in env.items()), *argv]
        drop = _drop_privileges(slot) if os.geteuid() == 0 else []
        if self.kind == "user":
            return self._user_command(argv, env, chdir, drop, network, loopback)
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
        cmd += _bind_arguments(read_only, writable, scratch)
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return [*cmd, "--chdir", cwd, *drop, *argv]

    def _user_command(self, argv: list[str], env: dict, chdir: list[str], drop: list[str], network: bool,
                      loopback: bool) -> list[str]:
        """"user" mode: the network off (`unshare -n`) and the shared folders hidden (`unshare -m`, tmpfs) where
        this machine allows, then the drop to the slot's user."""
        off = _network_off(network)
        up = ["ip link set lo up"] if off and loopback else []
        hide = [f"mount -t tmpfs -o size={self.limits.tmp_bytes},mode={'1777' if p in _SHARED_TMP else '0755'} "
                f"tmpfs {p}" for p in _hidden()] if _mount_namespace() else []
        if hide:
            env = {**env, "GRADER_PRIVATE_TMP": "1"}
        setup = ["sh", "-c", " && ".join([*up, *hide, 'exec "$@"']), "sh"] if up or hide else []
        namespaces = ["unshare", *(["-n"] if off else []), *(["-m", "--propagation", "private"] if hide else [])]
        return [*(namespaces if off or hide else []), *setup, *drop, "env", "-i", *chdir,
                *(f"{k}={v}" for k, v in env.items()), *argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `self.command(argv, ...)` with the limits set; stdin/stdout/stderr/pass_fds as given."""
        keys = ("read_only", "writable", "cwd", "env", "slot", "network", "scratch", "loopback", "home")
        command = self.command(argv, **{k: kwargs.pop(k) for k in keys if k in kwargs})
        return subprocess.Popen(command, preexec_fn=self.limits.apply, start_new_session=True, **kwargs)


def first_slot(slot: int | None = None) -> int:
    """The lowest slot `reserve_slots` takes (`python -m grader --first-slot`); with an argument, set it first."""
    if slot is not None:
        if not 0 <= slot < MAX_SLOTS or _held:
            raise ValueError(f"it is 0 to {MAX_SLOTS - 1}, set before any slot is held")
        _FIRST[0] = slot
    return _FIRST[0]


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
    for slot in range(first_slot(), MAX_SLOTS):
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
        raise SandboxUnavailable(f"sandbox users {first_slot()} to {MAX_SLOTS - 1} are all in use by other graders on "
                                 f"this machine")
    return sorted(_held)[:n]


def another_slot() -> int:
    """A slot this process has not held before (for one whose user kept a process that would not die)."""
    before = set(_held)
    return (set(reserve_slots(len(_held) + 1)) - before).pop()


def _processes(uid: int) -> list[int]:
    """The processes of `uid` that can still run (a zombie, dead and waiting for its parent, is not one)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    with open(f"/proc/{entry.name}/stat", "rb") as fh:
                        if fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                            found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


def kill_user(slot: int, wait: float = 10.0) -> bool:
    """As root: SIGKILL every process of slot's sandbox user (what a child started and left behind, orphans that
    another process adopted included), again and again until none is left (a fork between two passes is caught by
    the next) or `wait` seconds have passed; True when none is left."""
    if os.geteuid() != 0:
        return True
    uid, until = FIRST_UID + slot, time.monotonic() + wait
    while True:
        alive = _processes(uid)
        if not alive:
            return True
        for pid in alive:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if time.monotonic() > until:
            return False
        time.sleep(0.01)


def cpu_seconds(slot: int) -> float | None:
    """As root: the CPU seconds (user and system, with those of the children they waited for) of the processes of
    slot's sandbox user now alive; None where the slot has no user of its own."""
    if os.geteuid() != 0:
        return None
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in _processes(FIRST_UID + slot):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


_SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")


@functools.lru_cache(maxsize=1)
def _hidden() -> tuple[str, ...]:
    """What "user" mode covers with an empty tmpfs in the child's own mount namespace: the shared temporary
    folders, the home folders and this grader's source tree, each unless the Python the child runs lies inside."""
    python = [Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.executable)]
    candidates = [*_SHARED_TMP, "/home", "/root", str(ROOT)]
    kept = [p for p in candidates if Path(p).is_dir() and not Path(p).is_symlink()
            and not any(q.is_relative_to(Path(p).resolve()) for q in python)]
    return tuple(p for p in kept if not any(p != q and Path(p).is_relative_to(q) for q in kept))


@functools.lru_cache(maxsize=1)
def _mount_namespace() -> bool:
    """As root: whether a mount namespace with a tmpfs can be made here (`unshare -m`; not in every container).
    GRADER_NO_MOUNT_NAMESPACE=1 says no, as in a container that forbids it (the tests use it)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or os.environ.get("GRADER_NO_MOUNT_NAMESPACE") == "1":
        return False
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return done.returncode == 0


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
        if entry is None or entry.is_relative_to(ROOT) or not entry.is_dir() or str(entry) == "/":
            continue
        if not any(entry.is_relative_to(p) for p in map(Path, mounts.values()) if p != Path("/")):
            mounts[str(entry)] = str(entry)
    return tuple(sorted(mounts.items(), key=lambda m: (m[0].count("/"), m[0])))


def _bind_arguments(read_only: dict[str, Path], writable: dict[str, Path], scratch: str | None) -> list[str]:
    """bwrap's mounts: the system's and `read_only` read-only, `writable` read-write, each inside path with the
    folders on the way to it made first, traversable by the sandbox user."""
    binds = [("--ro-bind", *m) for m in _system_mounts()] + [("--ro-bind", k, str(v)) for k, v in read_only.items()]
    binds += [("--bind", k, str(v)) for k, v in writable.items()]
    made, args = {"/", "/tmp", "/proc", "/dev", *([scratch] if scratch else [])}, []
    for how, inside, outside in sorted(binds, key=lambda b: b[1].count("/")):
        for parent in reversed(Path(inside).parents):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        made.add(inside)
        args += [how, outside, inside]
    return args


@functools.lru_cache(maxsize=1)
def _system_links() -> tuple[tuple[str, str], ...]:
    """/bin, /lib, ... where they are links into /usr (merged /usr): the same links inside."""
    return tuple((f"/{name}", os.readlink(f"/{name}")) for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                 if Path(f"/{name}").is_symlink())


def _grader_files(limit: int = 20_000) -> list[Path]:
    """What the sandbox user must not read: the grader's whole tree (its folders and files, the reference
    notebooks, the hidden tests, .git), up to `limit` paths."""
    found = [ROOT]
    for folder, dirs, files in os.walk(ROOT):
        found += [Path(folder) / n for n in [*dirs, *files]]
        if len(found) > limit:
            break
    return found[:limit]


def _works(sandbox: Sandbox, must_not_read: list[Path]) -> str | None:
    """None when a child started in `sandbox` runs Python and can neither read a file of `must_not_read` nor see
    what one of its folders holds (nor, as root, a folder of another slot's user); else the reason."""
    probe = ("import os, sys, numpy, torch\n"
             "for p in sys.stdin.read().splitlines():\n"
             "    try:\n        seen = os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(1) or [p]\n"
             "    except OSError:\n        continue\n"
             "    if not seen:\n        continue\n"
             "    print('READABLE', p); sys.exit(3)\n")
    other = None
    try:
        slot = reserve_slots(1)[0]
        paths = [str(p) for p in must_not_read]
        if os.geteuid() == 0 and sandbox.kind != "none":  # a folder as another slot's would be
            other = Path(tempfile.mkdtemp(prefix="probe-other-slot-"))
            (other / "helpers.py").write_text("secret")
            for path in (other, other / "helpers.py"):
                os.chown(path, FIRST_UID + MAX_SLOTS, FIRST_UID + MAX_SLOTS)
            paths += [str(other), str(other / "helpers.py")]
        done = subprocess.run(sandbox.command([sys.executable, "-I", "-c", probe], read_only={}, slot=slot),
                              input="\n".join(paths), capture_output=True, text=True, timeout=120,
                              preexec_fn=sandbox.limits.apply)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if other is not None:
            shutil.rmtree(other, ignore_errors=True)
    if done.returncode == 3:
        return (f"the sandbox user can read {done.stdout.split()[-1]} (make the grader's files private: chmod 700 "
                f"on its folder)")
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
    return None


@functools.lru_cache(maxsize=4)
def find(unsafe: bool = False, prefer: str | None = None, limits: Limits = Limits()) -> Sandbox:
    """The first sandbox that works here (bwrap, then user), checked by a probe that must not read the grader's
    own files; `prefer` tries one kind only. With none: SandboxUnavailable, or with `unsafe` the kind "none"."""
    secret = _grader_files()
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
        "(Gradescope: python -m grader.gradescope), or pass --no-sandbox to grade trusted code only.")


# --- the grader's private work folders ---

_WORK: dict[str, Path] = {}


def work_base() -> Path:
    """This grader's folder for the children's files: made by this process, only root (or this user) can list
    it, named with this process's id; removed when the grader ends (atexit, and SIGTERM / SIGHUP / SIGINT), and
    one left by a grader that was killed outright is removed by the next (`_remove_stale`)."""
    if "base" not in _WORK:  # made once; the per-submission processes forked from this one use it too
        container = Path("/run/idl-ex2-grader") if os.geteuid() == 0 and os.access("/run", os.W_OK) else \
            Path(tempfile.gettempdir()) / f"idl-ex2-grader-{os.geteuid()}"
        container.mkdir(mode=0o711, exist_ok=True)
        info = container.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o066:
            raise SandboxUnavailable(f"{container} must be a folder of this user that others cannot list "
                                             f"or write (remove it and rerun)")
        _remove_stale(container)
        base = Path(tempfile.mkdtemp(prefix=f"grade-{os.getpid()}-", dir=container))
        base.chmod(0o711)  # the sandbox users reach their own folders inside (each 0700), never list the others
        _WORK.update(pid=os.getpid(), base=base)
        atexit.register(_remove_work, base, os.getpid())
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _exit_on_signal)
    return _WORK["base"]


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def _remove_work(base: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(base, ignore_errors=True)


def _remove_stale(container: Path) -> None:
    """Remove the folders of graders that are no longer running."""
    for entry in container.glob("grade-*"):
        try:
            pid = int(entry.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def own(path: Path, slot: int, sb: Sandbox, mode: int = 0o700) -> None:
    """`path` (and all in it) given to the slot's sandbox user (as root), private to it: `mode` for folders, read
    and write for the owner only for files."""
    for p in [path, *path.rglob("*")]:
        if p.is_symlink():
            p.unlink()
            continue
        if os.geteuid() == 0 and sb.kind != "none":
            os.chown(p, FIRST_UID + slot, FIRST_UID + slot)
        p.chmod(mode if p.is_dir() else 0o600)


def fresh(folder: Path, slot: int, sb: Sandbox) -> Path:
    """An empty folder of the slot's user (a fresh HOME for each child)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    own(folder, slot, sb)
    return folder
