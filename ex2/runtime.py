"""Where things live and how a run behaves: the repository's folders, the run mode read from the environment, seeds,
the device, and the one way files are written (atomically) and shared between processes (a lock).

Other modules read the folders through this module (`runtime.DATA_DIR`, not a copy), so a test can point them all
elsewhere in one place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
"""Repository root: data, caches and checkpoints are resolved from here, not from the cwd."""
DATA_DIR = ROOT / "data"
CACHE_DIR = DATA_DIR / "cache"
CHECKPOINT_DIR = ROOT / "checkpoints"

RUN_MODES = {
    "student": "the student run, the release's default: your code trains the models a section needs (seed 0, the "
               "full training split, a few epochs: STUDENT_EPOCHS), each kept in data/student-run/",
    "full": "every run behind a notebook's tables, with the seeds each prints (three or five) and the full recipes "
            "(hours on a CPU), into data/retrain/",
    "smoke": "for maintainers: the test command's quick check, 250 reviews per split, one epoch, nothing kept",
    "course": "for maintainers: the answer key loads its committed run records and checkpoints (checkpoints/)",
}
"""The values of $RUN_MODE, the one knob of notebooks 03 and 04 (`RunMode`). A student chooses between "student"
(the default) and "full"; "smoke" and "course" are the maintainers' (the test command, the answer key)."""


@dataclasses.dataclass(frozen=True)
class RunMode:
    """How notebooks 03 and 04 get their models, read once from $RUN_MODE (`RunMode.from_environment()`): in the
    student release, "student" (the default) or "full" (see RUN_MODES).

    `name` is one of RUN_MODES; `quick` is the test command's check ("smoke": 250 reviews per split, one epoch);
    `recompute` says a notebook reruns its whole plan instead of loading records ("full", and "smoke" with its thinned
    plan); `results` is the folder its runs are read from and written to."""

    name: str
    results: Path

    @property
    def quick(self) -> bool:
        return self.name == "smoke"

    @property
    def recompute(self) -> bool:
        return self.name in ("full", "smoke")

    @classmethod
    def from_environment(cls) -> "RunMode":
        """The run mode $RUN_MODE names; unset, "student" in the student release (no committed results).

        For maintainers only: unset, it is "course" where the committed results exist (checkpoints/runs/, the answer
        key), "smoke" with SMOKE_TEST=1 (the test command) and "full" with RETRAIN=1 or FULL=1; $RESULTS overrides
        the results folder (`RUN_MODE=full RESULTS=checkpoints` refreshes the committed results). "course" needs
        the committed results; an unknown value is an error naming the choices."""
        name = os.environ.get("RUN_MODE", "").strip().lower()
        committed = (CHECKPOINT_DIR / "runs").is_dir()
        if not name:
            if os.environ.get("SMOKE_TEST") == "1":
                name = "smoke"
            elif "1" in (os.environ.get("RETRAIN"), os.environ.get("FULL")):
                name = "full"
            else:
                name = "course" if committed else "student"
        if name not in RUN_MODES:
            raise ValueError(f"RUN_MODE={name!r}: choose one of {', '.join(RUN_MODES)}")
        if name == "course" and not committed:
            raise ValueError("RUN_MODE=course loads the committed results (checkpoints/runs/), which are not here; "
                             "use RUN_MODE=student (the default) or RUN_MODE=full")
        folders = {"course": CHECKPOINT_DIR, "full": DATA_DIR / "retrain", "student": DATA_DIR / "student-run",
                   "smoke": DATA_DIR / "retrain-smoke"}
        return cls(name, Path(os.environ.get("RESULTS") or folders[name]))


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (used at the top of every notebook and by `train`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """The device models train and run on: `name`, else $DEVICE (cpu | cuda | mps), else CUDA or
    Apple's MPS when available, else the CPU. Asking for a device that is not there is an error."""
    mps = getattr(torch.backends, "mps", None)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available())}
    name = (name or os.environ.get("DEVICE", "")).strip().lower()
    if not name:
        return torch.device("cuda" if available["cuda"] else "mps" if available["mps"] else "cpu")
    kind = name.split(":")[0]
    if kind not in available:
        raise ValueError(f"DEVICE={name!r}: choose cpu, cuda (or cuda:N) or mps")
    if not available[kind]:
        raise RuntimeError(f"DEVICE={name!r} but this torch ({torch.__version__}) sees no {kind.upper()} "
                           "device here; unset DEVICE or use DEVICE=cpu")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644):
    """Yield a temporary path beside `path`; on success it replaces `path` (with `mode`: readable by all unless
    told otherwise), on an exception it is deleted: a file is never half-written. The one way this repository writes
    a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_json(obj, path: str | Path) -> Path:
    """Write `obj` as compact JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")
    return Path(path)


def load_json(path: str | Path, what: str, remedy: str):
    """Read a JSON file; a missing or damaged one raises an error naming the file and the way back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing ({what}). {remedy}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({what}: {exc}). {remedy}") from exc


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive lock on `path` against other processes (POSIX `flock`; without it, e.g. on Windows, none)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar: a widget in JupyterLab, text on a terminal, silent in non-interactive logs."""
    from tqdm.auto import tqdm

    if os.environ.get("HELPERS_PROGRESS") == "0":
        kwargs["disable"] = True
    else:
        kwargs.setdefault("disable", None)  # None: off when the output is not a terminal/notebook
    return tqdm(iterable, **kwargs)


def relative(path: str | Path) -> str:
    """`path` as the notebooks print it: relative to the repository root when it lies inside it (`checkpoints`,
    `data/retrain-smoke/rnn.pt`), else as given."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
