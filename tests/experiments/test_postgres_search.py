"""Searching on several machines, for real: a throwaway PostgreSQL server in a temporary folder, two worker
processes (search_fixtures.py, training on the toy corpus) on one study there through
OPTUNA_STORAGE=postgresql://..., then a restarted search that resumes the study. Needs the server binaries of
Debian's `postgresql` package (`.ci/run` installs it); without them the test is skipped and says so."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_fixtures import FINISHED, run_workers, training_objective

from experiments import search

PACKAGE = "postgresql"
USER, PASSWORD, DATABASE = "optuna", "optuna-test-pw", "optuna"


def server_binaries() -> Path | None:
    """The folder with initdb and pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH."""
    def version(folder: str) -> tuple:
        return tuple(int(part) for part in Path(folder).parent.name.split(".") if part.isdigit())

    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)  # the newest first
    for folder in [*folders, *{str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])}]:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """Start a PostgreSQL server in a temporary folder on 127.0.0.1 and a free port, yield the URL of an
    empty database on it (user and password as a remote worker would give them), stop it afterwards."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `{PACKAGE}` "
                    f"package (apt-get install {PACKAGE}); bash .ci/run does")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root: use the package's system user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser` to start PostgreSQL as the `postgres` user")
        try:
            import pwd
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and there is no `postgres` user (Debian's `{PACKAGE}` package creates it)")
        as_user = ["runuser", "-u", "postgres", "--"]

    home = Path(tempfile.mkdtemp(prefix="optuna-pg-"))  # not under pytest's tmp_path: root-only (0700)
    if as_user:
        os.chown(home, owner.pw_uid, owner.pw_gid)
    data, log = home / "data", home / "server.log"
    (home / "pw").write_text(PASSWORD + "\n")
    if as_user:
        os.chown(home / "pw", owner.pw_uid, owner.pw_gid)

    def run(*args: str) -> None:
        result = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}" + (
            log.read_text() if log.exists() else "")

    started = False
    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={home / 'pw'}", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions")
        for attempt in range(3):  # a port that was free a moment ago can be taken: try another
            port = free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off -c full_page_writes=off"
            result = subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                     "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                started = True
                break
        assert started, f"pg_ctl start failed:\n{result.stdout}{result.stderr}{log.read_text() if log.exists() else ''}"

        import psycopg  # the driver requirements.txt pins; SQLAlchemy 2.1 uses it for postgresql:// URLs

        with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study_and_it_resumes(postgres_url, toy_data, toy_archive, tmp_path,
                                                                monkeypatch, one_thread):
    # The README's form of the URL, postgresql://user:password@host:port/database, through OPTUNA_STORAGE.
    monkeypatch.setenv("OPTUNA_STORAGE", postgres_url)
    assert search.optuna_storage() == postgres_url
    search.make_study("shared", seed=0)  # create the tables and the study once, before the workers race

    n_trials = 4  # each worker trains its trials on the toy corpus, as a second machine would on IMDB
    pids = run_workers("shared", n_trials, tmp_path, dict(os.environ), toy_archive=toy_archive)

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = study.get_trials(states=FINISHED)
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    assert n_trials <= len(finished) <= n_trials + 1  # a trial running elsewhere at the stop still finishes
    assert {t.user_attrs["pid"] for t in finished} == pids  # both workers added trials
    assert all(t.value == max(t.user_attrs["history"]["val_acc"]) for t in finished)

    # A restarted search (a rerun notebook cell) reopens the study and runs only the missing trials ...
    n_before = len(study.trials)
    more = n_trials + 2
    objective = training_objective(toy_data)
    resumed = search.run_study(search.make_study("shared", seed=2), objective, more, verbose=False)
    assert len(resumed.get_trials(states=FINISHED)) == more
    assert len(resumed.trials) == n_before + more - len(finished)  # at least one: len(finished) < more
    assert {t.user_attrs["pid"] for t in resumed.trials[n_before:]} == {os.getpid()}
    # ... and a complete study is reused without training anything.
    again = search.run_study(search.make_study("shared", seed=3), objective, more, verbose=False)
    assert len(again.trials) == len(resumed.trials)
