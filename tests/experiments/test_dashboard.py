"""The Optuna dashboard command in README.md opens notebook 03's SQLite studies: its app is started
in-process on a temporary study and the study list is fetched through its HTTP API."""
import json
import re
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import optuna_dashboard
import pytest
from search_fixtures import toy_objective, toy_value

import experiments
from ex2 import runtime

README = runtime.ROOT / "README.md"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # no access log in the test output
        pass


@pytest.fixture
def dashboard():
    """Serve optuna-dashboard's WSGI app for a storage URL on 127.0.0.1 (a free port); yield its base URL."""
    servers = []

    def start(storage_url: str) -> str:
        server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage_url), handler_class=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode()
        return response.status, response.headers.get("Content-Type", ""), body


def documented_command() -> str:
    commands = re.findall(r"^(optuna-dashboard \S+)", README.read_text(), re.M)
    assert len(commands) == 1, "README.md should document one optuna-dashboard command"
    return commands[0]


def test_readme_opens_the_database_notebook_03_writes():
    assert documented_command() == "optuna-dashboard sqlite:///data/optuna/ex2.db"
    # run from the repository root, the relative URL names the database experiments.optuna_storage() picks
    # by default (checked against a temporary data/ in the next test)
    relative = documented_command().split()[1].removeprefix("sqlite:///")
    assert runtime.ROOT / relative == runtime.DATA_DIR / "optuna" / "ex2.db"


def test_the_dashboard_lists_a_study_and_its_trials(isolated_data_dir, dashboard, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    study = experiments.make_study("rnn-hidden4-64-demo", seed=0)  # data/optuna/ex2.db in a temp folder
    experiments.run_study(study, toy_objective, 3, verbose=False)
    optuna.create_study(study_name="gru-hidden4-64-demo", storage=experiments.optuna_storage())  # no trials yet
    url = experiments.optuna_storage()
    assert url == f"sqlite:///{isolated_data_dir / 'optuna' / 'ex2.db'}"

    base = dashboard(url)  # what `optuna-dashboard <url>` serves
    status, content_type, body = get(f"{base}/api/studies")
    assert status == 200 and content_type.startswith("application/json")
    studies = {s["study_name"]: s for s in json.loads(body)["study_summaries"]}
    assert set(studies) == {"rnn-hidden4-64-demo", "gru-hidden4-64-demo"}
    assert studies["rnn-hidden4-64-demo"]["directions"] == ["maximize"]

    _, _, body = get(f"{base}/api/studies/{studies['rnn-hidden4-64-demo']['study_id']}")
    detail = json.loads(body)
    assert detail["name"] == "rnn-hidden4-64-demo"
    assert [t["params"][0]["name"] for t in detail["trials"]] == ["hidden"] * 3
    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 3
    hidden = [t.params["hidden"] for t in study.trials]
    assert [t["values"] for t in detail["trials"]] == [[toy_value(h, 3)] for h in hidden]  # the stored values

    status, content_type, page = get(f"{base}/")  # the page a browser opens (redirects to /dashboard)
    assert status == 200 and content_type.startswith("text/html") and "<script" in page
