"""JAX's persistent compilation cache, switched on for kanjax users.

kanjax points JAX's on-disk compilation cache at a per-user directory, so a new Python
process (a script run again, a restarted notebook kernel, a test worker) loads the programs
an earlier process compiled instead of compiling them again. JAX reads these settings once,
at the first compilation of the process, so kanjax sets them (:func:`enable_default_once`)
before any of its modules that use JAX is loaded: at the first access of a name of the
package (``kanjax.train``, ``from kanjax import KAN``) or the first import of such a module
(``import kanjax.nn``), and already at ``import kanjax`` when JAX is loaded by then. From
then on they also cover the user's own ``jax.jit`` programs. ``import kanjax`` alone loads no
JAX and changes nothing.

What enabling by default does, in order:

* ``KANJAX_COMPILATION_CACHE`` set to ``0``, ``off``, ``false`` or ``no``: nothing.
* A cache directory the user already gave JAX (``jax.config.update("jax_compilation_cache_dir",
  ...)`` or the ``JAX_COMPILATION_CACHE_DIR`` environment variable), or the cache turned off in
  JAX (``jax_enable_compilation_cache=False``): nothing; JAX's settings stay as they are.
* Otherwise the directory is ``KANJAX_CACHE_DIR`` if set, else :func:`default_cache_dir`
  (``$XDG_CACHE_HOME/kanjax/xla`` or ``~/.cache/kanjax/xla`` on Linux,
  ``~/Library/Caches/kanjax/xla`` on macOS, ``%LOCALAPPDATA%\\kanjax\\xla`` on Windows). It is
  created (mode 0700) and a probe file written and removed; if that fails (read-only, no
  home directory) the cache stays off and one ``RuntimeWarning`` says why.

Every compiled program is written (:data:`MIN_COMPILE_TIME_SECS` = 0; JAX's own default of
1 s leaves out most of a small model's programs, and whether one takes more or less than that
depends on the machine's load); a threshold the user set in JAX is kept. JAX keys each entry
on the program, the compile options, the device kind and the jax/jaxlib versions, so an entry
is never used for a different setup. Entries are not evicted: the directory grows by a few
kB to a few MB per distinct program (``jax_compilation_cache_max_size``, which needs the
``filelock`` package, bounds it; deleting the directory is always safe). Several processes
may share the directory; JAX writes an entry in place, so a process that reads one while
another writes it may meet a truncated entry, which JAX reports with a warning and compiles
again. As JAX's documentation warns, the cache is trusted: anyone who can write to it can run
code in the processes that read it.

The same at run time: :func:`enable`, :func:`disable`, :func:`cache_dir`.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import threading
import warnings

__all__ = [
    "ENV_DIR",
    "ENV_SWITCH",
    "MIN_COMPILE_TIME_SECS",
    "cache_dir",
    "default_cache_dir",
    "disable",
    "enable",
    "enable_default",
    "enable_default_once",
]

ENV_SWITCH = "KANJAX_COMPILATION_CACHE"
ENV_DIR = "KANJAX_CACHE_DIR"
OFF_VALUES = frozenset({"0", "off", "false", "no"})

# Programs compiling faster than this are not written. Zero: on a 2-core CPU even the
# smallest programs (one eager op) take 10-100 ms to lower and compile and 5-20 ms to load,
# and a fixed threshold would make what is cached depend on the machine's load.
MIN_COMPILE_TIME_SECS = 0.0

# JAX's own default for jax_persistent_cache_min_compile_time_secs; any other value was set
# by the user and is kept.
_JAX_DEFAULT_MIN_COMPILE_TIME_SECS = 1.0

# Whether the cache was set up in this process (by default, or by enable/disable): the
# default is applied at most once, and never over the user's own choice.
_settled = False
_settle_lock = threading.RLock()


def _jax():
    """JAX and its compilation-cache module, imported on first use (not when this module is)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    return jax, compilation_cache


def default_cache_dir() -> pathlib.Path:
    """The per-user directory kanjax's compilation cache uses unless told otherwise.

    ``$KANJAX_CACHE_DIR`` if set; else ``<user cache directory>/kanjax/xla``, the user cache
    directory being ``$XDG_CACHE_HOME`` or ``~/.cache`` (Linux and other POSIX systems),
    ``~/Library/Caches`` (macOS) or ``%LOCALAPPDATA%`` (Windows). Raises ``RuntimeError`` when
    there is no home directory to put it in.
    """
    chosen = os.environ.get(ENV_DIR)
    if chosen:
        return pathlib.Path(chosen).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = pathlib.Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = pathlib.Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec ignores a relative XDG_CACHE_HOME.
        base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return base / "kanjax" / "xla"


def cache_dir() -> str | None:
    """The directory JAX's persistent compilation cache uses in this process, or ``None`` (off).

    Reports JAX's configuration, whoever set it (kanjax or the user).
    """
    jax, _ = _jax()
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


def _usable(directory: pathlib.Path) -> str | None:
    """Why ``directory`` cannot hold the cache (``None`` if it can): created, then probed."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kanjax-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


def enable(directory: str | os.PathLike | None = None, *,
           min_compile_time_secs: float | None = None) -> str | None:
    """Turn JAX's persistent compilation cache on in ``directory``; returns it, or ``None``.

    ``directory``: default :func:`default_cache_dir`. ``min_compile_time_secs``: programs that
    compile faster are not written; default :data:`MIN_COMPILE_TIME_SECS`, or the value already
    set in JAX if the user changed JAX's default. Replaces any directory configured before
    and takes effect for the next compilation, also after earlier ones in this process. If
    the directory cannot be created or written, the cache is left as it was, a
    ``RuntimeWarning`` names the directory and the error, and ``None`` is returned.
    """
    _check_arguments(directory, min_compile_time_secs)
    try:
        path = default_cache_dir() if directory is None else pathlib.Path(directory).expanduser()
        path = pathlib.Path(os.path.abspath(path))  # JAX opens it relative to later cwds
    except RuntimeError as err:  # no home directory
        _warn(f"kanjax: no per-user cache directory ({err}); the compilation cache stays off. "
              f"Set {ENV_DIR} to a writable directory to use it.")
        return None
    problem = _usable(path)
    if problem is not None:
        _warn(f"kanjax: cannot use {str(path)!r} for the compilation cache ({problem}); it stays "
              f"as it was. Use a writable directory ({ENV_DIR} on import), or set "
              f"{ENV_SWITCH}=0 to silence this.")
        return None
    jax, jax_compilation_cache = _jax()
    if min_compile_time_secs is None:
        current = jax.config.jax_persistent_cache_min_compile_time_secs
        min_compile_time_secs = (MIN_COMPILE_TIME_SECS
                                 if current == _JAX_DEFAULT_MIN_COMPILE_TIME_SECS else current)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax_compilation_cache.reset_cache()  # JAX reads the settings again at the next compile
    _settle()
    return str(path)


def _check_arguments(directory, min_compile_time_secs) -> None:
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path (str or os.PathLike) or None, got "
                        f"{directory!r}; pass e.g. '~/.cache/kanjax/xla'")
    if directory is not None and not os.fspath(directory):
        raise ValueError("directory is empty (''); pass a directory, e.g. '~/.cache/kanjax/xla', "
                         "or None for the default")
    if min_compile_time_secs is None:
        return
    if (isinstance(min_compile_time_secs, bool)
            or not isinstance(min_compile_time_secs, (int, float))
            or not min_compile_time_secs >= 0):
        raise ValueError(f"min_compile_time_secs must be a number of seconds >= 0 or None, got "
                         f"{min_compile_time_secs!r}; pass e.g. {MIN_COMPILE_TIME_SECS}")


def disable() -> None:
    """Turn JAX's persistent compilation cache off in this process (from the next compilation).

    Programs already compiled stay usable; entries on disk stay for later processes.
    """
    jax, jax_compilation_cache = _jax()
    jax.config.update("jax_compilation_cache_dir", None)
    jax_compilation_cache.reset_cache()
    _settle()


def enable_default() -> str | None:
    """The default set-up (see the module docstring); returns the directory or ``None``.

    Leaves JAX's settings alone when ``KANJAX_COMPILATION_CACHE`` is off or the user already
    configured JAX's cache (a directory, or the cache switched off).
    """
    if os.environ.get(ENV_SWITCH, "").strip().lower() in OFF_VALUES:
        return None
    jax, _ = _jax()
    if jax.config.jax_compilation_cache_dir or not jax.config.jax_enable_compilation_cache:
        return cache_dir()
    return enable()


def enable_default_once() -> None:
    """:func:`enable_default`, the first time it is called in the process; later calls do nothing.

    kanjax calls it before loading any of its modules that use JAX (see the module
    docstring). After :func:`enable` or :func:`disable` it does nothing: the user's choice
    stays.
    """
    global _settled
    with _settle_lock:
        if _settled:
            return
        _settled = True
        enable_default()


def _settle() -> None:
    global _settled
    _settled = True


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
