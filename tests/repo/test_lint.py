"""The code style the repository holds itself to: ruff, configured in pyproject.toml (120 columns, pycodestyle,
pyflakes and import order), over every Python file and notebook that is tracked."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    assert importlib.util.find_spec("ruff"), "ruff is not installed: `pip install -r requirements.txt` pins it"
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff check . found problems:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
