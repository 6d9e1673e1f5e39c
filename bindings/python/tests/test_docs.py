"""The Python examples of docs/languages.md run (each block marked
<!-- docs-check: covered ffi.python -->, in a fresh interpreter)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import DEADLINE, plugin_path

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "..", "docs", "languages.md")


def blocks():
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    found = re.findall(r"<!-- docs-check: covered ffi\.python -->\n"
                       r"```python\n(.*?)```", text, re.S)
    assert len(found) >= 2, "docs/languages.md lost its Python examples"
    return found


@pytest.mark.parametrize("index", range(len(blocks())))
def test_example_runs(index):
    code = blocks()[index]
    env = dict(os.environ, TETHER_TICKER=plugin_path("ticker"))
    res = subprocess.run([sys.executable, "-B", "-c", code], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=DEADLINE)
    assert res.returncode == 0, res.stdout
