"""Running the notebooks: tools/execute_notebooks.py (how a maintainer re-executes and saves them) and the
collection of notebooks/ under nbval (never downloads IMDB)."""
import os
import subprocess
import sys
import textwrap

import pytest

from ex2 import runtime

ROOT = runtime.ROOT


@pytest.mark.slow  # starts a kernel
def test_execute_notebooks_saves_outputs_and_keeps_the_file_on_failure(tmp_path):
    import nbformat

    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    for path, code in ((good, "import os\nprint('smoke' if os.environ.get('SMOKE_TEST') else 'full run')"),
                       (bad, "raise RuntimeError('boom')")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nb.metadata["widgets"] = {"state": {}}
        nbformat.write(nb, path)
    before = bad.read_text()
    env = {**os.environ, "SMOKE_TEST": "1"}
    ok = subprocess.run([sys.executable, "-m", "tools.execute_notebooks", str(good)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    nb = nbformat.read(good, as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "full run\n"  # SMOKE_TEST is unset for a full run
    assert "widgets" not in nb.metadata
    failed = subprocess.run([sys.executable, "-m", "tools.execute_notebooks", str(bad)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode != 0 and "boom" in failed.stderr
    assert bad.read_text() == before  # never a half-written notebook
    assert not list(tmp_path.glob("*.part"))
    from tools import execute_notebooks as tool

    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "missing.ipynb")])  # a clear usage error, nothing executed


@pytest.mark.slow  # starts pytest in a child process
def test_collecting_the_notebooks_never_downloads(tmp_path):
    guard = tmp_path / "site"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import socket, urllib.request
        def refuse(*args, **kwargs):
            open({str(tmp_path / 'network-used')!r}, "w").write(repr(args))
            raise OSError("network access during collection")
        socket.socket.connect = refuse
        urllib.request.urlopen = refuse
    """))
    env = {k: v for k, v in os.environ.items() if k != "IMDB_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(runtime.ROOT)])
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "notebooks"], cwd=runtime.ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "network-used").exists()
    assert "04_token_scores_and_attention.ipynb" in out.stdout
