-- testlib.lua - what the Lua test scripts share.
--
-- Every script: local T = require "testlib"; T.case("name", function() ...
-- end) ...; T.done().  A case that fails stops the script with its name and
-- the error.  Nothing here measures time: waits are bounded by a generous
-- failsafe (T.LIMIT seconds) that only turns a hang into a failure.

local tether = require "tether"

local T = {}

-- The failsafe of every wait, in seconds; the sanitizer builds scale it.
T.LIMIT = 20 * (tonumber(os.getenv("TETHER_TEST_TIMEOUT_SCALE")) or 1)

local count = 0

-- Runs one case.
function T.case(name, fn)
  io.write(name, " ... ")
  io.flush()
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    io.write("FAILED\n", tostring(err), "\n")
    io.flush()
    os.exit(1)
  end
  count = count + 1
  io.write("ok\n")
end

-- Ends the script.
function T.done()
  print(string.format("%d cases passed", count))
end

-- Asserts that fn(...) raises an error whose message contains `text`.
function T.raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error containing '" .. text .. "'")
  err = tostring(err)
  assert(err:find(text, 1, true), "error '" .. err .. "' lacks '" .. text .. "'")
  return err
end

-- Waits until pred() is true, letting other threads run; fails after the
-- failsafe.
function T.wait_for(pred, what)
  local deadline = tether.clock() + T.LIMIT
  while not pred() do
    assert(tether.clock() < deadline, "timed out waiting for " .. (what or "a condition"))
    tether.sleep(0.001)
  end
end

-- Runs `code` in a fresh lua5.4 with this environment (plus `env`, e.g.
-- "TETHER_DEBUG=1", when given; its standard input from the file `stdin`,
-- when given) and returns its exit status and everything it wrote (stdout
-- and stderr together).
function T.run_lua(code, env, stdin)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local lua = os.getenv("TETHER_LUA") or "lua5.4"
  local preload = os.getenv("TETHER_CHILD_PRELOAD") -- see child_env.c
  if preload then lua = "LD_PRELOAD=" .. preload .. " " .. lua end
  if env then lua = env .. " " .. lua end
  if preload or env then lua = "env " .. lua end
  local input = stdin and (" < " .. stdin) or ""
  local p = assert(io.popen(lua .. " " .. path .. input .. " 2>&1", "r"))
  local out = p:read("a")
  local ok, how, status = p:close()
  os.remove(path)
  return (how == "exit" and status or -1), out
end

-- Makes a FIFO at a fresh temporary path and returns the path; with
-- `mode` (e.g. "r+", which opens a FIFO without blocking), also opens it
-- and returns the file first: f, path.  The caller removes the path.
function T.fifo(mode)
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkfifo " .. path))
  if mode then return assert(io.open(path, mode)), path end
  return path
end

-- Starts a thread that signals `ready` and then spins until cancelled.
function T.spinner(ready, opts)
  local body = function()
    ready:set()
    local n = 0
    while true do n = n + 1 end
  end
  if opts then return tether.thread(opts, body) end
  return tether.thread(body)
end

return T
