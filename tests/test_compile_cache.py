"""kanjax's persistent compilation cache: default directory, user settings, off switch, failures.

JAX reads its cache settings once per process, so every check that imports kanjax runs in a
fresh subprocess with its own HOME / XDG_CACHE_HOME and environment; this process's JAX
configuration is never changed.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kanjax import compile_cache

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs in the subprocess: imports kanjax, compiles and runs one small program, reports.
CHILD = r"""
import json, os, sys, warnings
import jax
steps = sys.argv[1:]
if "user-config" in steps:
    jax.config.update("jax_compilation_cache_dir", os.environ["USER_CACHE"])
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import kanjax
out = {"warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
       "cache_dir": kanjax.compile_cache.cache_dir(),
       "min_compile_time": jax.config.jax_persistent_cache_min_compile_time_secs}
import jax.numpy as jnp
f = lambda x, n: jnp.sin(x) * n + jnp.cumsum(x)
out["value"] = jax.jit(f)(jnp.arange(5.0), 3.0).tolist()
if "runtime" in steps:
    try:
        kanjax.compile_cache.enable(os.environ["RUNTIME_CACHE"], min_compile_time_secs=-1.0)
    except ValueError as err:
        out["bad_threshold"] = str(err)
    out["unchanged_after_error"] = kanjax.compile_cache.cache_dir()
    out["enabled"] = kanjax.compile_cache.enable(os.environ["RUNTIME_CACHE"])
    out["value_enabled"] = jax.jit(lambda x: jnp.cos(x) * 2.0)(jnp.arange(4.0)).tolist()
    out["files_enabled"] = len(os.listdir(os.environ["RUNTIME_CACHE"]))
    kanjax.compile_cache.disable()
    out["after_disable"] = kanjax.compile_cache.cache_dir()
    out["value_disabled"] = jax.jit(lambda x: jnp.tanh(x) - 1.0)(jnp.arange(3.0)).tolist()
    out["files_disabled"] = len(os.listdir(os.environ["RUNTIME_CACHE"]))
out["hits"] = len(hits)
print(json.dumps(out))
"""

CACHE_VARS = ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE",
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", compile_cache.ENV_SWITCH,
              compile_cache.ENV_DIR, "XDG_CACHE_HOME")


def run_child(tmp_path, *steps, **env_vars):
    """Run CHILD with HOME = tmp_path/home, the cache variables cleared, then ``env_vars``."""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **env_vars)
    done = subprocess.run([sys.executable, "-c", CHILD, *steps], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def files(directory):
    directory = pathlib.Path(directory)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def check_value(out, key="value"):
    x = np.arange(5.0)
    np.testing.assert_allclose(out[key], np.sin(x) * 3.0 + np.cumsum(x), rtol=1e-6)


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="XDG layout is the Linux default")
def test_default_directory_gets_entries_and_a_second_process_hits_them(tmp_path):
    xdg = tmp_path / "xdg"
    first = run_child(tmp_path, XDG_CACHE_HOME=str(xdg))
    expected = xdg / "kanjax" / "xla"
    assert first["cache_dir"] == str(expected) and first["warnings"] == []
    assert first["min_compile_time"] == compile_cache.MIN_COMPILE_TIME_SECS
    check_value(first)
    written = files(expected)
    assert written and not any(name.startswith(".kanjax-probe") for name in written)
    assert first["hits"] == 0
    second = run_child(tmp_path, XDG_CACHE_HOME=str(xdg))
    check_value(second)
    assert second["hits"] >= 1  # the jit program was loaded, not compiled
    assert not (tmp_path / "home" / ".cache").exists()  # XDG_CACHE_HOME, not ~/.cache


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="XDG layout is the Linux default")
def test_without_xdg_the_cache_is_under_home(tmp_path):
    out = run_child(tmp_path)
    expected = tmp_path / "home" / ".cache" / "kanjax" / "xla"
    assert out["cache_dir"] == str(expected) and files(expected)
    assert expected.stat().st_mode & 0o777 == 0o700  # the cache is trusted: owner only


def test_directory_the_user_configured_is_kept(tmp_path):
    xdg, user = tmp_path / "xdg", tmp_path / "user"
    by_env = run_child(tmp_path, XDG_CACHE_HOME=str(xdg), JAX_COMPILATION_CACHE_DIR=str(user),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    assert by_env["cache_dir"] == str(user) and files(user)
    assert not xdg.exists()
    assert by_env["min_compile_time"] == 0.0
    check_value(by_env)
    by_config = run_child(tmp_path, "user-config", XDG_CACHE_HOME=str(xdg),
                          USER_CACHE=str(tmp_path / "user2"))
    assert by_config["cache_dir"] == str(tmp_path / "user2") and not xdg.exists()
    # JAX's own threshold (1 s) is left too: kanjax changed nothing
    assert by_config["min_compile_time"] == 1.0


def test_kanjax_cache_dir_chooses_the_directory_and_a_user_threshold_is_kept(tmp_path):
    chosen = tmp_path / "chosen" / "nested"
    out = run_child(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"),
                    KANJAX_CACHE_DIR=str(chosen), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="30")
    assert out["cache_dir"] == str(chosen) and out["min_compile_time"] == 30.0
    assert chosen.is_dir() and files(chosen) == []  # nothing compiled for 30 s
    assert not (tmp_path / "xdg").exists()
    check_value(out)


def test_off_switch_leaves_jax_alone(tmp_path):
    xdg = tmp_path / "xdg"
    out = run_child(tmp_path, XDG_CACHE_HOME=str(xdg), KANJAX_COMPILATION_CACHE="off")
    assert out["cache_dir"] is None and out["warnings"] == [] and out["hits"] == 0
    assert out["min_compile_time"] == 1.0  # JAX's default, untouched
    assert not xdg.exists()
    check_value(out)


@pytest.mark.parametrize("value", ["0", "OFF", " false ", "No"])
def test_off_values_return_before_touching_jax(monkeypatch, tmp_path, value):
    import jax

    monkeypatch.setenv(compile_cache.ENV_SWITCH, value)
    monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path / "never"))
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    assert compile_cache.enable_default() is None
    after = (jax.config.jax_compilation_cache_dir,
             jax.config.jax_persistent_cache_min_compile_time_secs)
    assert after == before and not (tmp_path / "never").exists()


def test_jax_cache_switched_off_by_the_user_stays_off(tmp_path):
    xdg = tmp_path / "xdg"
    out = run_child(tmp_path, XDG_CACHE_HOME=str(xdg), JAX_ENABLE_COMPILATION_CACHE="false")
    assert out["cache_dir"] is None and not xdg.exists()


def test_directory_that_cannot_be_created_warns_once_and_stays_off(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = run_child(tmp_path, KANJAX_CACHE_DIR=str(blocker / "xla"))
    assert out["cache_dir"] is None
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("RuntimeWarning")
    assert str(blocker / "xla") in out["warnings"][0] and "KANJAX_CACHE_DIR" in out["warnings"][0]
    check_value(out)
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_directory_warns_once_and_stays_off(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        out = run_child(tmp_path, KANJAX_CACHE_DIR=str(read_only))
    finally:
        read_only.chmod(0o700)
    assert out["cache_dir"] is None and len(out["warnings"]) == 1
    assert files(read_only) == []
    check_value(out)


def test_enable_and_disable_at_run_time_after_a_compile(tmp_path):
    runtime = tmp_path / "runtime"
    out = run_child(tmp_path, "runtime", KANJAX_COMPILATION_CACHE="0",
                    RUNTIME_CACHE=str(runtime))
    assert "min_compile_time_secs" in out["bad_threshold"] and "-1.0" in out["bad_threshold"]
    assert out["unchanged_after_error"] is None  # the bad call changed nothing
    assert out["enabled"] == str(runtime) and out["after_disable"] is None
    np.testing.assert_allclose(out["value_enabled"], np.cos(np.arange(4.0)) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(out["value_disabled"], np.tanh(np.arange(3.0)) - 1.0, rtol=1e-6)
    # programs compiled while enabled were written; those compiled after disable() were not
    assert out["files_enabled"] >= 1
    assert out["files_disabled"] == out["files_enabled"] == len(files(runtime))


@pytest.mark.parametrize("kwargs, error, words", [
    ({"min_compile_time_secs": -1.0}, ValueError, ["min_compile_time_secs", "-1.0"]),
    ({"min_compile_time_secs": float("nan")}, ValueError, ["min_compile_time_secs", "nan"]),
    ({"min_compile_time_secs": "1"}, ValueError, ["min_compile_time_secs", "'1'"]),
    ({"min_compile_time_secs": True}, ValueError, ["min_compile_time_secs", "True"]),
    ({"directory": 3}, TypeError, ["directory", "3"]),
])
def test_bad_arguments_raise_before_touching_jax(tmp_path, kwargs, error, words):
    import jax

    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    with pytest.raises(error) as info:
        compile_cache.enable(kwargs.pop("directory", tmp_path / "never"), **kwargs)
    assert all(w in str(info.value) for w in words)
    assert (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs) == before
    assert not (tmp_path / "never").exists()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    # pure path logic, no JAX configuration involved
    monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path / "x"))
    assert compile_cache.default_cache_dir() == tmp_path / "x"
    monkeypatch.setenv(compile_cache.ENV_DIR, "~/kx")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache.default_cache_dir() == tmp_path / "kx"
    monkeypatch.delenv(compile_cache.ENV_DIR)
    if sys.platform not in ("darwin", "win32"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert compile_cache.default_cache_dir() == tmp_path / "xdg" / "kanjax" / "xla"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
        assert compile_cache.default_cache_dir() == tmp_path / ".cache" / "kanjax" / "xla"


# Runs in the subprocess: ``import kanjax`` (JAX not loaded), then one way of reaching kanjax's
# JAX code, then reports JAX's cache directory as JAX itself sees it.
LAZY_CHILD = r"""
import json, sys
import kanjax
loaded_on_import = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "optax"))
how = sys.argv[1]
if how == "import-submodule":
    import kanjax.nn
elif how == "from-import":
    from kanjax import KAN
elif how == "attribute":
    kanjax.train
elif how == "from-submodule":
    from kanjax.training import train
import jax
print(json.dumps({"loaded_on_import": loaded_on_import,
                  "cache_dir": jax.config.jax_compilation_cache_dir}))
"""


@pytest.mark.parametrize("how", ["import-submodule", "from-import", "attribute", "from-submodule"])
def test_cache_is_set_before_kanjax_loads_jax_code_however_it_is_reached(tmp_path, how):
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    chosen = tmp_path / "chosen"
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               KANJAX_CACHE_DIR=str(chosen))
    done = subprocess.run([sys.executable, "-c", LAZY_CHILD, how], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded_on_import"] == []  # import kanjax alone loads no JAX
    assert out["cache_dir"] == str(chosen) and chosen.is_dir()


def test_user_choice_before_first_use_is_kept(tmp_path):
    # disable() before kanjax's first JAX module: the later default must not turn it on again.
    code = ("import kanjax, json\nkanjax.compile_cache.disable()\nfrom kanjax import KAN\n"
            "print(json.dumps(kanjax.compile_cache.cache_dir()))\n")
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) is None
