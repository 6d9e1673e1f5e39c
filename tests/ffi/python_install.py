#!/usr/bin/env python3
"""The Python package installs offline with Debian's tools, and works so.

  python_install.py SOURCE_DIR -- PYTEST_ARGS...

Copies SOURCE_DIR (bindings/python) to a temporary directory (pip builds
in the tree it is given; the source stays clean), makes a venv that sees
Debian's site packages (python3-setuptools, python3-pytest) and has no pip
of its own, runs `python -m pip install --no-build-isolation --no-index`
on the copy, checks that `import tether` then finds the installed package
with its tether-abi.json, and runs the package's tests (PYTEST_ARGS)
against that installed copy.  No network: --no-index.
"""

import os
import shutil
import subprocess
import sys
import tempfile


def run(cmd, **kw):
    print("$ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, **kw)
    if res.returncode != 0:
        raise SystemExit("FAILED: exit %d" % res.returncode)
    return res


def main(argv):
    split = argv.index("--")
    source, pytest_args = argv[1], argv[split + 1:]
    with tempfile.TemporaryDirectory(prefix="tether-pip-") as tmp:
        src = os.path.join(tmp, "src")
        shutil.copytree(source, src, ignore=shutil.ignore_patterns(
            "__pycache__", "build", "*.egg-info", "tests"))
        venv = os.path.join(tmp, "venv")
        run([sys.executable, "-m", "venv", "--system-site-packages",
             "--without-pip", venv])
        py = os.path.join(venv, "bin", "python")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_NO_CACHE_DIR="1", PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        run([py, "-m", "pip", "install", "--no-build-isolation",
             "--no-index", src], env=env)
        where = run([py, "-B", "-c", "import tether, os; "
                     "print(os.path.dirname(tether.__file__)); "
                     "print(tether.__version__)"], env=env, cwd=tmp,
                    stdout=subprocess.PIPE, text=True).stdout.split()
        print("\n".join(where))
        if not where[0].startswith(venv):
            raise SystemExit("FAILED: import tether found %s, not the "
                             "installed package" % where[0])
        if not os.path.exists(os.path.join(where[0], "tether-abi.json")):
            raise SystemExit("FAILED: the package was installed without "
                             "tether-abi.json")
        env["TETHER_EXPECT_PACKAGE"] = where[0]
        run([py, "-B", "-m", "pytest"] + pytest_args, env=env, cwd=tmp)
    print("ok: installed offline and tested from the install")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
