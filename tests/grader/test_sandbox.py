"""The sandbox (grader/sandbox.py): the child sees neither the reference nor the network, gets only its own
program, never runs as root, and without a sandbox the grader refuses; two graders never share a sandbox user."""
import os
import shutil
import subprocess
import sys

import pytest

from ex2 import runtime
from grader import grade, sandbox

ROOT = runtime.ROOT


@pytest.fixture(scope="module")
def box():
    try:
        return sandbox.find()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox on this machine: {exc}")


def test_the_child_sees_neither_the_reference_nor_the_network(box, tmp_path):
    probe = ("import os, socket, sys\n"
             "print('uid', os.getuid())\n"
             "for p in sys.argv[1:]:\n"
             "    print(p, os.path.exists(p))\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('network yes')\n"
             "except OSError:\n    print('network no')\n")
    secrets = [ROOT / "grader" / "cases" / "__init__.py", ROOT / "ex2" / "layers.py", tmp_path]
    done = subprocess.run(box.command([sys.executable, "-I", "-c", probe, *map(str, secrets)], read_only={}),
                          capture_output=True, text=True, timeout=60, preexec_fn=box.limits.apply)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["False"] * 3 + ["no"], lines
    assert int(lines[0].split()[1]) != 0, "the child must not run as root"


def test_the_child_gets_its_program_and_nothing_else_of_the_grader(tmp_path):
    """The sandbox's copy of the grader is the child program and the modules it imports (followed from child.py),
    never a hidden test, the marking, the reports or the reference; and that copy runs on its own, as a script."""
    assert set(grade.child_files()) == {"child.py", "wire.py", "untrusted.py", "notebooks.py"}
    folder = tmp_path / "child"
    folder.mkdir()
    for name in grade.child_files():
        shutil.copyfile(ROOT / "grader" / name, folder / name)
    probe = (f"import runpy, sys; runpy.run_path({str(folder / 'child.py')!r}, run_name='probe'); "
             "print(sorted(sys.modules))")
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert not {"grader", "helpers", "ex2", "assignment"} & set(eval(done.stdout.splitlines()[-1])), done.stdout


def test_without_a_sandbox_the_grader_refuses_and_names_the_fix(tmp_path):
    """`--sandbox user` cannot work here (this machine's Python is not readable by another user, or the grader is
    not root): the grader refuses rather than run the submission unprotected."""
    done = subprocess.run([sys.executable, "-m", "grader", str(tmp_path), "--out", str(tmp_path / "g"),
                           "--sandbox", "user"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        pytest.skip("this machine can run the 'user' sandbox")
    assert done.returncode == 2 and "bubblewrap" in done.stderr and "--no-sandbox" in done.stderr, done.stderr
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # starts graders' processes that hold sandbox users
@pytest.mark.skipif(os.geteuid() != 0,
                    reason="sandbox users are reserved as root only (otherwise the child is the caller)")
def test_two_graders_at_once_never_share_a_sandbox_user():
    """Each grader holds its sandbox users by a lock until it ends, so one grader's clean-up (kill every process of
    its user) cannot kill another's children; a grader that ends gives its users back."""
    hold = ("import sys, time; sys.path.insert(0, sys.argv[1]); from grader import sandbox\n"
            "print(*sandbox.reserve_slots(int(sys.argv[2])), flush=True); time.sleep(30)\n")
    first = subprocess.Popen([sys.executable, "-c", hold, str(ROOT), "2"], stdout=subprocess.PIPE, text=True)
    try:
        taken = set(map(int, first.stdout.readline().split()))
        second = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(30)", "pass"), str(ROOT), "3"],
                                capture_output=True, text=True, timeout=60)
        assert len(taken) == 2 and not taken & set(map(int, second.stdout.split())), (taken, second.stdout)
    finally:
        first.kill()
        first.wait()
    again = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(30)", "pass"), str(ROOT), "2"],
                           capture_output=True, text=True, timeout=60)
    assert taken & set(map(int, again.stdout.split())), "the users of a grader that ended are free again"


@pytest.mark.slow  # starts a grader
def test_a_grader_takes_its_users_from_its_first_slot_and_refuses_one_out_of_range(tmp_path):
    """`--first-slot N`: the slots (sandbox users) start at N, so two graders on one machine can keep their users
    apart by range; a slot outside 0..MAX_SLOTS-1 is a one-line usage error."""
    if os.geteuid() != 0:
        pytest.skip("without root the slots only number the submissions")
    hold = ("import sys; sys.path.insert(0, sys.argv[1]); from grader import sandbox\n"
            "sandbox.first_slot(int(sys.argv[2])); print(*sandbox.reserve_slots(2), flush=True)\n")
    got = subprocess.run([sys.executable, "-c", hold, str(ROOT), "300"], capture_output=True, text=True, timeout=60)
    assert all(300 <= int(slot) < sandbox.MAX_SLOTS for slot in got.stdout.split()) and len(got.stdout.split()) == 2
    refused = subprocess.run([sys.executable, "-m", "grader", str(tmp_path), "--out", str(tmp_path / "out"),
                              "--first-slot", str(sandbox.MAX_SLOTS)], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    expected = f"--first-slot {sandbox.MAX_SLOTS}: it is 0 to {sandbox.MAX_SLOTS - 1}"
    assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
