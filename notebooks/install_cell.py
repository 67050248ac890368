#@title Install kanjax (the same cell in every kanjax notebook) { display-mode: "form" }
# In order: 1. a kanjax that is already installed (pip install, or pip install -e of a checkout)
# is used as it is; 2. a kanjax checkout that this notebook sits in (../pyproject.toml) is
# installed with pip install -e; 3. KANJAX_SOURCE is installed: any pip requirement, set here or
# as an environment variable, e.g. "git+https://github.com/OWNER/kanjax.git" or a wheel's path.
KANJAX_SOURCE = ""  #@param {type:"string"}

import importlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import site
import subprocess
import sys
import sysconfig
from urllib.parse import unquote, urlparse


def kanjax_install_state():
    """(version, package folder) of the installed kanjax that `import kanjax` loads, or (None, why not)."""
    try:
        dist = importlib.metadata.distribution("kanjax")
    except importlib.metadata.PackageNotFoundError:
        return None, "no kanjax distribution is installed"
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("kanjax")
    found = {pathlib.Path(p).resolve() for p in (spec.submodule_search_locations or [])} if spec else set()
    homes = {pathlib.Path(dist.locate_file("kanjax")).resolve()}
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if url.startswith("file:"):  # installed (maybe editable) from a local folder
        homes.add(pathlib.Path(unquote(urlparse(url).path)).resolve() / "kanjax")
    shadow = pathlib.Path.cwd().resolve() / "kanjax"
    if shadow in found and shadow not in homes:
        raise RuntimeError(f"kanjax {dist.version} is installed, but the folder 'kanjax' in the working "
                           "directory hides it from `import kanjax`: os.chdir() to another folder, or "
                           "rename that one, and run this cell again.")
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None, "`import kanjax` does not find the installed package"
    return dist.version, pathlib.Path(spec.origin).resolve().parent


def kanjax_checkout():
    """The kanjax checkout this notebook sits in (the folder above the working directory), or None."""
    root = pathlib.Path.cwd().resolve().parent
    try:
        text = (root / "pyproject.toml").read_text()
        import tomllib  # Python >= 3.11
        name = tomllib.loads(text).get("project", {}).get("name")
    except ImportError:  # Python 3.10: the first `name = "..."` line
        name = next(iter(re.findall(r'(?m)^name\s*=\s*["\']([^"\']*)', text)), None)
    except (OSError, ValueError):
        return None
    return root if name == "kanjax" else None


def pip_install(*args):
    print("Running: pip install", *args)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)
    site.addsitedir(sysconfig.get_paths()["purelib"])  # let this running kernel see the install


def shown(path):
    relative = os.path.relpath(path)
    return str(path) if relative.startswith(os.path.join(os.pardir, os.pardir)) else relative


version, where = kanjax_install_state()
if version is not None:
    print(f"kanjax {version} is already installed ({shown(where)}): nothing to install.")
else:
    print(f"kanjax is not ready: {where}.")
    source, checkout = KANJAX_SOURCE or os.environ.get("KANJAX_SOURCE", ""), kanjax_checkout()
    if checkout is not None:
        print(f"This notebook is in a kanjax checkout ({shown(checkout)}): installing it (editable).")
        pip_install("-e", str(checkout))
    elif source:
        print(f"Installing kanjax from KANJAX_SOURCE = {source!r}.")
        pip_install(source)
    else:
        raise RuntimeError("kanjax is not installed and this notebook is not in a kanjax checkout: set "
                           "KANJAX_SOURCE at the top of this cell (or as an environment variable) to a "
                           "pip requirement for kanjax, e.g. 'git+https://github.com/OWNER/kanjax.git' "
                           "or the path of a kanjax wheel, and run this cell again.")
    version, where = kanjax_install_state()
    if version is None:
        raise RuntimeError(f"kanjax was installed, but {where}: restart the kernel (Colab: Runtime > "
                           "Restart) and run this cell again.")
    print(f"Installed kanjax {version} ({shown(where)}).")
