#!/usr/bin/env python3
"""Installs libtether into a temporary prefix and builds a consumer with it.

  install_consume.py cmake|pkg-config|plugin-template BUILD_DIR CC [SANITIZE]

Runs `cmake --install BUILD_DIR --prefix <tmp> --component tether` (the
library's own component, so that the test does not depend on the other
parts of the build), checks that the headers, the library (libtether.so ->
.so.1 -> .so.X.Y.Z), the CMake package and tether.pc are there, then
builds tests/abi/consumer out of tree:

  cmake       find_package(tether 1 REQUIRED) + tether::tether; also checks
              that find_package(tether 2) is refused (SameMajorVersion);
  pkg-config  CC consumer.c $(pkg-config --cflags --libs tether).

The consumer runs and must report that it loaded the installed library.

  plugin-template  examples/plugin-template built out of tree with the
              installed tether_add_plugin, then the installed
              tether-plugin-check run on it (it must PASS).
SANITIZE (e.g. "address,undefined") is passed to the consumer's compiler
when the library was built with sanitizers.
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CONSUMER = os.path.join(HERE, "consumer")


def run(cmd, env=None, expect_ok=True):
    print("$ " + " ".join(cmd))
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.stdout.strip():
        print(res.stdout.rstrip())
    if expect_ok and res.returncode != 0:
        raise SystemExit("FAILED: exit %d" % res.returncode)
    return res


def find_one(prefix, relpath_choices):
    for rel in relpath_choices:
        if os.path.exists(os.path.join(prefix, rel)):
            return os.path.join(prefix, rel)
    raise SystemExit("FAILED: nothing installed at any of %s" %
                     ", ".join(relpath_choices))


def check_layout(prefix):
    """Returns the installed library directory."""
    for h in ("tether.h", "tether_plugin.h", "version.h"):
        find_one(prefix, ["include/tether/" + h])
    find_one(prefix, ["share/tether/tether-abi.json"])
    pc = find_one(prefix, ["lib/pkgconfig/tether.pc",
                           "lib64/pkgconfig/tether.pc"])
    libdir = os.path.dirname(os.path.dirname(pc))
    for f in ("tetherConfig.cmake", "tetherConfigVersion.cmake",
              "tetherTargets.cmake"):
        find_one(libdir, ["cmake/tether/" + f])
    so = os.path.join(libdir, "libtether.so")
    if os.readlink(so) != "libtether.so.1" or \
            not os.readlink(so + ".1").startswith("libtether.so.1."):
        raise SystemExit("FAILED: expected libtether.so -> libtether.so.1 "
                         "-> libtether.so.1.x.y in %s" % libdir)
    print("installed layout ok (library in %s)" % libdir)
    return libdir


def sanitize_flags(sanitize):
    return ["-fsanitize=" + sanitize] if sanitize else []


def consume_cmake(prefix, work, cc, sanitize):
    flags = " ".join(sanitize_flags(sanitize))
    build = os.path.join(work, "consumer-cmake")
    common = ["cmake", "-S", CONSUMER, "-DCMAKE_PREFIX_PATH=" + prefix,
              "-DCMAKE_C_COMPILER=" + cc, "-DCMAKE_C_FLAGS=" + flags,
              "-DCMAKE_EXE_LINKER_FLAGS=" + flags]
    refused = run(common + ["-B", build + "-v2", "-DTETHER_WANT_VERSION=2"],
                  expect_ok=False)
    if refused.returncode == 0:
        raise SystemExit("FAILED: find_package(tether 2) accepted a 1.x "
                         "install; the version file must be SameMajorVersion")
    print("find_package(tether 2) was refused, as it should be")
    run(common + ["-B", build])
    run(["cmake", "--build", build])
    return os.path.join(build, "consumer"), None


def consume_pkgconfig(prefix, libdir, work, cc, sanitize):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"),
               PKG_CONFIG_LIBDIR=os.path.join(libdir, "pkgconfig"))
    flags = run(["pkg-config", "--cflags", "--libs", "tether"],
                env=env).stdout.split()
    if not any(f.startswith("-I" + prefix) for f in flags):
        raise SystemExit("FAILED: tether.pc does not point into the prefix")
    exe = os.path.join(work, "consumer-pkgconfig")
    run([cc, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"] +
        sanitize_flags(sanitize) +
        [os.path.join(CONSUMER, "consumer.c"), "-o", exe] + flags)
    return exe, dict(os.environ, LD_LIBRARY_PATH=libdir)


def consume_plugin_template(prefix, libdir, work, cc, sanitize):
    """Builds examples/plugin-template against the install and runs the
    installed tether-plugin-check on it; returns the check's output."""
    src = os.path.join(HERE, "..", "..", "examples", "plugin-template")
    build = os.path.join(work, "plugin-template")
    run(["cmake", "-S", src, "-B", build, "-DCMAKE_PREFIX_PATH=" + prefix,
         "-DCMAKE_C_COMPILER=" + cc])
    run(["cmake", "--build", build])
    check = os.path.join(prefix, "bin", "tether-plugin-check")
    # As a plugin author runs it: the installed tool finds the installed
    # library by itself (it did not start without LD_LIBRARY_PATH).
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = run([check, "--exports", os.path.join(src, "exports.txt"),
               os.path.join(build, "template_plugin.so")], env=env).stdout
    if "verdict: PASS" not in out:
        raise SystemExit("FAILED: the template plugin did not pass the check")
    return out


def main(argv):
    if len(argv) in (4, 5) and argv[1] == "plugin-template":
        build_dir, cc = argv[2:4]
        sanitize = argv[4] if len(argv) == 5 else ""
        work = tempfile.mkdtemp(prefix="tether-install-")
        try:
            prefix = os.path.join(work, "prefix")
            run(["cmake", "--install", build_dir, "--prefix", prefix,
                 "--component", "tether"])
            libdir = check_layout(prefix)
            find_one(prefix, ["include/tether/tether.hpp"])
            consume_plugin_template(prefix, libdir, work, cc, sanitize)
            print("ok: the plugin template built out of tree and passed "
                  "tether-plugin-check")
            return 0
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if len(argv) not in (4, 5) or argv[1] not in ("cmake", "pkg-config"):
        sys.stderr.write(__doc__)
        return 2
    mode, build_dir, cc = argv[1:4]
    sanitize = argv[4] if len(argv) == 5 else ""
    work = tempfile.mkdtemp(prefix="tether-install-")
    try:
        prefix = os.path.join(work, "prefix")
        run(["cmake", "--install", build_dir, "--prefix", prefix,
             "--component", "tether"])
        libdir = check_layout(prefix)
        if mode == "cmake":
            exe, env = consume_cmake(prefix, work, cc, sanitize)
        else:
            exe, env = consume_pkgconfig(prefix, libdir, work, cc, sanitize)
        out = run([exe], env=env).stdout
        if os.path.realpath(libdir) not in out and libdir not in out:
            raise SystemExit("FAILED: the consumer did not load the "
                             "installed library")
        print("ok: %s consumer ran against the installed copy" % mode)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
