"""The ``kanjax`` command line: help, version, light imports, ``demo --out`` checks."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from kanjax import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "chex", "numpy", "matplotlib", "sympy", "rich")

# Runs kanjax.cli under a bare ``kanjax`` package (its __init__ not executed), so what the
# command line itself imports is measured apart from the package's own imports.
BARE_PACKAGE = textwrap.dedent("""
    import importlib.util, sys, types
    spec = importlib.util.find_spec("kanjax")
    package = types.ModuleType("kanjax")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["kanjax"] = package
""")

REPORT_IMPORTS = textwrap.dedent(f"""
    import json, sys
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}
                   or (m.startswith("kanjax.") and m != "kanjax.cli"))
    print("IMPORTED=" + json.dumps(heavy))
""")


def _python(code, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def _imported(done):
    line = [x for x in done.stdout.splitlines() if x.startswith("IMPORTED=")]
    assert line, done.stdout + done.stderr
    return json.loads(line[0][len("IMPORTED="):])


CALL_MAIN = textwrap.dedent("""
    from kanjax import cli
    try:
        cli.main(sys.argv[1:])
    except SystemExit as e:
        print("EXIT=" + str(e.code))
""")


def test_python_dash_m_help_and_version():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "kanjax", "--help"], check=False,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "--version" in done.stdout and "usage: kanjax" in done.stdout
    done = subprocess.run([sys.executable, "-m", "kanjax", "--version"], check=False,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kanjax {metadata.version('kanjax')}"


def test_version_comes_from_the_distribution(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"kanjax {metadata.version('kanjax')}\n"
    assert cli.package_version() == metadata.version("kanjax")


def _all_actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                for sub_action in _all_actions(subparser):
                    yield f"{name} {sub_action[0]}", sub_action[1]
        else:
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_of_every_subcommand_has_help():
    actions = list(_all_actions(cli.build_parser()))
    names = {name for name, _ in actions}
    assert {"--version", "demo --out", "demo --lr", "demo --basis", "demo --epochs",
            "demo --batch-size", "demo --seed", "demo --no-progress"} <= names
    missing = [name for name, action in actions
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["demo", "--help"],
                                  ["demo", "--epochs", "0"]])
def test_cli_module_imports_nothing_heavy(argv):
    done = _python(BARE_PACKAGE + CALL_MAIN + REPORT_IMPORTS, *argv)
    assert "EXIT=" in done.stdout, done.stdout + done.stderr
    assert _imported(done) == []


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_kanjax_command_imports_nothing_heavy(flag):
    # The whole path of `python -m kanjax FLAG` (and the `kanjax` script): package + CLI.
    code = ("import runpy, sys\nsys.argv = ['kanjax', sys.argv[1]]\ntry:\n"
            "    runpy.run_module('kanjax', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    print('EXIT=' + str(e.code))\n")
    done = _python(code + REPORT_IMPORTS, flag)
    assert "EXIT=0" in done.stdout, done.stdout + done.stderr
    assert _imported(done) == []


def test_total_time_counts_the_command_and_not_what_ran_before_it_in_the_process():
    # A shell that execs the command as its last step hands over its own process: the time
    # the shell spent before (here a sleep, in the README's quick start a pip install) must
    # not count; time after kanjax.cli's import (here a sleep standing in for the imports
    # of JAX) must.
    shell = shutil.which("sh")
    if shell is None:
        pytest.skip("needs a POSIX shell")
    code = BARE_PACKAGE + textwrap.dedent("""
        import time
        from kanjax import cli
        time.sleep(0.5)
        print(cli.seconds_since_start())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([shell, "-c", 'sleep 1.5; exec "$0" -c "$1"', sys.executable, code],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 0.5 <= float(done.stdout.strip()) < 1.5


def _out_cases(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    holder = tmp_path / "holder"
    (holder / "loss.png").mkdir(parents=True)
    return [
        (str(a_file), "is an existing file"),
        (str(a_file / "sub"), "is a file, not a folder"),
        ("", "is empty"),
        (str(holder), "holds a folder 'loss.png'"),
    ]


def test_demo_rejects_unusable_out_before_training(tmp_path, capsys, monkeypatch):
    from kanjax import demo

    def must_not_train(**kwargs):
        raise AssertionError("trained although --out is unusable")

    monkeypatch.setattr(demo, "run_seed_experiment", must_not_train)
    for value, fragment in _out_cases(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", "--out", value, "--epochs", "1", "--no-progress"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out" in err and repr(value) in err and fragment in err, err
        assert "give" in err  # the fix
    assert (tmp_path / "results.txt").read_text() == "keep me"


def test_out_dir_problem_accepts_usable_folders(tmp_path):
    assert cli.out_dir_problem(str(tmp_path)) is None
    assert cli.out_dir_problem(str(tmp_path / "new" / "nested")) is None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text("{}")  # earlier results are overwritten
    assert cli.out_dir_problem(str(tmp_path / "old")) is None
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_dir_problem_reports_a_read_only_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        problem = cli.out_dir_problem(str(locked / "run"))
    finally:
        locked.chmod(0o700)
    assert problem is not None and "no permission to write" in problem


def test_cli_file_list_matches_the_demo():
    from kanjax import demo

    assert cli.DEMO_FILES == demo.OUTPUT_FILES


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc", "0"])
def test_lr_must_be_a_positive_finite_number(value, capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--lr", value])
    err = capsys.readouterr().err
    assert "argument --lr" in err and repr(value) in err and "> 0" in err


def test_every_public_name_resolves_lazily_and_is_listed():
    import kanjax

    for name in kanjax.__all__:
        assert getattr(kanjax, name) is not None, name
    assert set(kanjax.__all__) <= set(dir(kanjax))
    assert kanjax.KAN is kanjax.nn.KAN and kanjax.plot is kanjax.plotting.plot_network
    assert kanjax.History is kanjax.training.History
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        kanjax.not_a_name  # noqa: B018
