# TetherPython.cmake - the Python that runs the ABI checks and the ctypes
# client.  Debian's /usr/bin/python3 comes first: the tests must work on a
# plain Debian 12 with the standard library only, whatever else is on PATH.
find_program(TETHER_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
find_program(TETHER_PYTHON NAMES python3 REQUIRED)
# How the build runs it: -B keeps __pycache__ out of the source tree.
set(TETHER_PYTHON_RUN ${TETHER_PYTHON} -B)
