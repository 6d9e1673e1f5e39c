#!/usr/bin/env python3
"""test_sigint.py - Ctrl-C in lua5.4 with tether loaded (test lua.sigint).

Each case starts a child lua5.4 running a script (or lua5.4 -i on a
pseudo-terminal), waits until the child says it is about to block, sends
SIGINT (or types Ctrl-C on the terminal) and looks at how the child ends:
lua.c's "interrupted!" error in the main thread, the other threads
cancelled, lua.c's exit status.  No timing is asserted; a child that does
not end within the (generous) limit fails its case instead of hanging.

Environment: TETHER_LUA (the interpreter), LUA_CPATH (the built module);
TETHER_CHILD_PRELOAD, in sanitizer builds, is the LD_PRELOAD of the
children (the driver itself runs without it).
"""
import os
import pty
import select
import signal
import subprocess
import sys
import time

LUA = os.environ.get("TETHER_LUA", "lua5.4")
LIMIT = 60.0 * float(os.environ.get("TETHER_TEST_TIMEOUT_SCALE", "1"))


def child_env(extra=None):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    pre = os.environ.get("TETHER_CHILD_PRELOAD")
    if pre:
        env["LD_PRELOAD"] = pre
    env["LUA_INIT"] = ""
    env.update(extra or {})
    return env


def read_until(fd, marker, buf, limit=LIMIT):
    """Reads fd into buf (bytearray) until marker appears; True if it did."""
    end = time.monotonic() + limit
    while marker not in buf:
        left = end - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return False
        if not chunk:
            return marker in buf
        buf.extend(chunk)
    return True


def run_script(code, signals=1, ready=b"READY", extra_env=None):
    """Runs code in lua5.4; at each `ready` line on stdout sends SIGINT.
    Returns (returncode, stdout, stderr); returncode None if it hung."""
    p = subprocess.Popen([LUA, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=child_env(extra_env))
    p.stdin.write(code.encode())
    p.stdin.close()
    p.stdin = None
    out, seen = bytearray(), bytearray()
    for _ in range(signals):
        if not read_until(p.stdout.fileno(), ready, out):
            break
        time.sleep(0.2)  # let it block (it works without: the raise waits)
        cut = out.index(ready) + len(ready)
        seen += out[:cut]
        del out[:cut]
        p.send_signal(signal.SIGINT)
    out = seen + out
    try:
        rest, err = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        rest, err = p.communicate()
        return None, (bytes(out) + rest).decode(), err.decode()
    return p.returncode, (bytes(out) + rest).decode(), err.decode()


PRELUDE = """
local tether = require "tether"
local function ready() io.write("READY\\n") io.flush() end
-- a busy non-daemon thread, whose cancellation at exit shows in the output
local busy = tether.thread({name = "busy"}, function()
  local ok, err = pcall(function() while true do end end)
  io.write("busy ended: ", tostring(err == tether.Cancelled), "\\n") io.flush()
  error(err, 0)
end)
"""

WAITS = {
    "join": "ready() busy:join()",
    "queue:get": "local q = tether.queue() ready() q:get()",
    "event:wait": "local e = tether.event() ready() e:wait()",
    "lock": "local l, e = tether.lock(), tether.event() "
            "tether.thread({daemon = true}, function() l:acquire() e:set() tether.sleep(1e6) end) "
            "e:wait() ready() l:acquire()",
    "sleep": "ready() tether.sleep(1e6)",
    "channel:recv": "local ch = tether.channel() ready() ch:recv()",
    "condition:wait": "local c = tether.condition() local h <close> = c:held() ready() c:wait()",
    "interp thread join": "local i = tether.interp() "
                          "local t = i:thread(function() require 'tether'.sleep(1e6) end) "
                          "ready() t:join()",
    "io.read": "local fifo = os.tmpname() os.remove(fifo) assert(os.execute('mkfifo ' .. fifo)) "
               "local f = assert(io.open(fifo, 'r+')) os.remove(fifo) ready() f:read('l')",
    "wait_fd": "local fifo = os.tmpname() os.remove(fifo) assert(os.execute('mkfifo ' .. fifo)) "
               "local f = assert(io.open(fifo, 'r+')) os.remove(fifo) ready() tether.wait_fd(f, 'r')",
    "busy main": "ready() while true do end",
    # A worker thread's os.execute does not make the process ignore Ctrl-C
    # (as system() would): the shell says READY once the command runs.
    # (io.write first: the busy thread's write at exit then fits stdout's
    # buffer; a cancelled thread's write that reaches the descriptor
    # raises tether.Cancelled again before it starts.)
    "join of a thread in os.execute": "io.write('start\\n') io.flush() "
                                      "local w = tether.thread(function() "
                                      "os.execute('echo READY; exec sleep 5') end) w:join()",
}


def check_interrupted(name, rc, out, err):
    assert rc is not None, f"{name}: the child hung\nout: {out}\nerr: {err}"
    assert rc == 1, f"{name}: status {rc} (lua.c's for an error is 1)\nerr: {err}"
    assert "interrupted!" in err, f"{name}: no 'interrupted!'\nerr: {err}"
    assert "stack traceback" in err, f"{name}: lua.c did not report it\nerr: {err}"
    assert "hang" not in err


def case_waits():
    for name, wait in WAITS.items():
        rc, out, err = run_script(PRELUDE + wait + "\nprint('NOT REACHED')\n")
        check_interrupted(name, rc, out, err)
        assert "NOT REACHED" not in out, f"{name}: the wait returned\n{out}"
        assert "busy ended: true" in out, f"{name}: busy not cancelled\nout: {out}\nerr: {err}"
        assert "abandoned" not in err, f"{name}: {err}"


def case_message_is_lua_c_s():
    # the position lua.c's own hook gives: the caller's line
    rc, out, err = run_script("local tether = require 'tether'\n"
                              "io.write('READY\\n') io.flush()\n"
                              "tether.sleep(1e6)\n")
    check_interrupted("position", rc, out, err)
    assert "lua5.4: stdin:3: interrupted!" in err or ": stdin:3: interrupted!" in err, err


def case_caught_then_second_kills():
    # The script may catch it (pcall) and go on; as with lua.c, a second
    # Ctrl-C then ends the process by the default action.
    rc, out, err = run_script(
        "local tether = require 'tether'\n"
        "local ok, e = pcall(function() io.write('READY\\n') io.flush() tether.sleep(1e6) end)\n"
        "io.write('caught: ', tostring(e), '\\n') io.flush()\n"
        "io.write('READY\\n') io.flush()\n"
        "tether.sleep(1e6)\n", signals=2)
    assert rc == -signal.SIGINT, f"status {rc}\nout: {out}\nerr: {err}"
    assert "caught: " in out and "interrupted!" in out, out


def case_abandoned_with_warning():
    # A thread that holds cancellation back for ever is abandoned after
    # the bounded wait, with a warning; the exit does not hang.
    rc, out, err = run_script(
        "local tether = require 'tether'\n"
        "tether.thread({name = 'stubborn'}, function()\n"
        "  tether.deferred(function() while true do end end) end)\n"
        "io.write('READY\\n') io.flush()\n"
        "tether.queue():get()\n")
    check_interrupted("abandoned", rc, out, err)
    assert "abandoned: 'stubborn'" in err, err


def case_opt_out():
    # TETHER_LUA_SIGINT=0 leaves lua.c's handler alone: a busy main thread
    # is still interrupted by lua.c itself.  Not under ThreadSanitizer: it
    # defers a signal until the thread calls an intercepted function, which
    # the uninstrumented lua5.4 running a Lua loop never does.
    if "tsan" in os.environ.get("TETHER_CHILD_PRELOAD", ""):
        print("skip case_opt_out under ThreadSanitizer")
        return
    rc, out, err = run_script("local tether = require 'tether'\n"
                              "io.write('READY\\n') io.flush()\n"
                              "while true do end\n",
                              extra_env={"TETHER_LUA_SIGINT": "0"})
    check_interrupted("opt-out", rc, out, err)


def case_interactive():
    # lua5.4 -i on a pseudo-terminal: Ctrl-C typed while a line waits in
    # join interrupts that line; the prompt comes back; the session goes on
    # and its end cancels the busy thread.
    pid, fd = pty.fork()
    if pid == 0:
        env = child_env()
        os.execvpe(LUA, [LUA, "-i"], env)
    buf = bytearray()
    try:
        def send(line):
            os.write(fd, line.encode())

        send('tether = require "tether"\n')
        send('t = tether.thread({name = "busy"}, function() while true do end end)\n')
        send('print("go" .. "!") t:join()\n')
        assert read_until(fd, b"go!", buf), buf.decode(errors="replace")
        time.sleep(0.2)
        send("\x03")
        assert read_until(fd, b"interrupted!", buf), buf.decode(errors="replace")
        send('print("again" .. "!") tether.sleep(1e6)\n')
        assert read_until(fd, b"again!", buf), buf.decode(errors="replace")
        time.sleep(0.2)
        send("\x03")  # a new line: lua.c set its own handler again
        del buf[:buf.index(b"again!")]
        assert read_until(fd, b"interrupted!", buf), buf.decode(errors="replace")
        send('print(t:alive() and "alive" .. "!")\n')
        assert read_until(fd, b"alive!", buf), buf.decode(errors="replace")
        send("os.exit(0, true)\n")
        end = time.monotonic() + LIMIT
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    buf.extend(os.read(fd, 4096))
                except OSError:
                    pass
        else:
            raise AssertionError("lua5.4 -i did not exit: " + buf.decode(errors="replace"))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, buf)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(fd)


def main():
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("case_") and callable(fn):
            try:
                fn()
                print(f"ok   {name}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL {name}: {e}")
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
