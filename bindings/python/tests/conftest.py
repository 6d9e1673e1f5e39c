"""Fixtures of the tether package's tests.

CTest (tests/ffi, test ffi.python) runs them with Debian's python3 and
python3-pytest, with PYTHONPATH at bindings/python (or at a copy installed
by pip) and the environment naming what was built:

  TETHER_LIB        libtether.so.1
  TETHER_MAP        abi/tether.map
  TETHER_TICKER     the ticker sample plugin (native threads calling back)
  TETHER_BLOCKIO    the blockio sample plugin (interruptible blocking reads)
"""

import os

import pytest

import tether

SEC = 1.0
# A bound for waits that should end at once; never a timing assertion.
DEADLINE = 60.0 * int(os.environ.get("TETHER_TEST_TIMEOUT_SCALE", "1"))


def plugin_path(name):
    var = "TETHER_" + name.upper()
    if var not in os.environ:
        pytest.fail("%s is not set: run these tests through ctest "
                    "(ctest -R ffi.python)" % var)
    return os.environ[var]


@pytest.fixture
def rt():
    """A runtime for one test; the test's thread holds its main GIL."""
    runtime = tether.Runtime()
    yield runtime
    if runtime is not None:
        assert runtime.finalize(DEADLINE), tether.last_error()
