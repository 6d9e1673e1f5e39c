-- tether.wait_fd: readiness, timeouts, bad input, the GIL released while
-- it waits, cancel and raise reaching a thread blocked in it, and an
-- exception held back by tether.deferred.
local tether = require "tether"
local T = require "testlib"

-- A FIFO opened for reading and writing: open never blocks, and nothing
-- is readable until someone writes.
local function fifo() return T.fifo("r+") end

T.case("bad arguments are errors that name the argument", function()
  local f, path = fifo()
  T.raises("bad argument #2 to 'tether.wait_fd' (mode must be", tether.wait_fd, f, "x")
  T.raises("bad argument #1 to 'tether.wait_fd' (file descriptor out of range)", tether.wait_fd, -1, "r")
  T.raises("bad argument #1 to 'tether.wait_fd' (not an open file descriptor)", tether.wait_fd, 987654, "r")
  T.raises("bad argument #1 to 'tether.wait_fd' (file descriptor or file expected, got string)",
           tether.wait_fd, "0", "r")
  T.raises("bad argument #3 to 'tether.wait_fd' (timeout must be", tether.wait_fd, f, "r", -1)
  -- A float with an integer value is that integer, as for Lua's own
  -- functions; other floats are Lua's error for them.
  T.raises("bad argument #1 to 'tether.wait_fd' (file descriptor out of range)", tether.wait_fd, 2.0^31, "r")
  T.raises("bad argument #1 to 'tether.wait_fd' (file descriptor out of range)", tether.wait_fd, -1.0, "r")
  T.raises("bad argument #1 to 'tether.wait_fd' (number has no integer representation)",
           tether.wait_fd, 0.5, "r")
  assert(pcall(tether.wait_fd, 1.0, "w", 0)) -- descriptor 1, ready or not
  f:close()
  T.raises("bad argument #1 to 'tether.wait_fd' (file is closed)", tether.wait_fd, f, "r")
  os.remove(path)
end)

T.case("readiness and timeouts", function()
  local f, path = fifo()
  local r, why = tether.wait_fd(f, "r", 0)
  assert(r == nil and why == "timeout", tostring(r))
  r, why = tether.wait_fd(f, "r", 0.02)
  assert(r == nil and why == "timeout", tostring(r))
  assert(tether.wait_fd(f, "w") == "w")
  assert(tether.wait_fd(f, "rw") == "w")
  f:write("x"); f:flush()
  assert(tether.wait_fd(f, "r") == "r")
  assert(tether.wait_fd(f, "rw", 0) == "rw")
  assert(f:read(1) == "x")
  local p = io.popen("echo hi")
  assert(tether.wait_fd(p, "r", T.LIMIT) == "r")
  assert(p:read("l") == "hi")
  assert(tether.wait_fd(p, "r", T.LIMIT) == "r") -- end of file is ready
  p:close()
  f:close()
  os.remove(path)
end)

T.case("an integer descriptor", function()
  local p = io.popen("echo hi")
  -- Find p's descriptor: the lowest one that wait_fd says is readable.
  local found
  for fd = 3, 64 do
    local ok, r = pcall(tether.wait_fd, fd, "r", 0)
    if ok and r == "r" then found = fd break end
  end
  assert(found, "no readable descriptor")
  p:close()
end)

T.case("other threads run Lua while one waits", function()
  local f, path = fifo()
  local waiting = tether.event()
  local t = tether.thread(function()
    waiting:set()
    return tether.wait_fd(f, "r", T.LIMIT)
  end)
  assert(waiting:wait(T.LIMIT))
  -- Only this thread writes, and only once it runs: a wait_fd that held
  -- the GIL would time out first.
  local w = assert(io.open(path, "w"))
  w:write("y"); w:close()
  local ok, r, why = t:join(T.LIMIT)
  assert(ok and r == "r", tostring(r) .. " " .. tostring(why))
  assert(f:read(1) == "y")
  f:close()
  os.remove(path)
end)

T.case("cancel and raise reach a thread blocked in wait_fd", function()
  local f, path = fifo()
  for _, how in ipairs({"cancel", "raise"}) do
    local waiting = tether.event()
    local t = tether.thread(function()
      waiting:set()
      tether.wait_fd(f, "r")
      return "not interrupted"
    end)
    assert(waiting:wait(T.LIMIT))
    tether.sleep(0.01) -- usually lets it block; correctness does not depend on it
    if how == "cancel" then t:cancel() else t:raise("stop") end
    local ok, err = t:join(T.LIMIT)
    assert(ok == false, how .. ": " .. tostring(err))
    if how == "cancel" then assert(err == tether.Cancelled) else assert(err == "stop") end
  end
  f:close()
  os.remove(path)
end)

T.case("an exception held back by deferred waits for the descriptor", function()
  local f, path = fifo()
  local waiting = tether.event()
  local got
  local t = tether.thread(function()
    tether.deferred(function()
      waiting:set()
      got = tether.wait_fd(f, "r", T.LIMIT)
    end)
    return "not raised"
  end)
  assert(waiting:wait(T.LIMIT))
  tether.sleep(0.01)
  t:raise("later")
  tether.sleep(0.01)
  local w = assert(io.open(path, "w"))
  w:write("z"); w:close()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "later", tostring(err))
  assert(got == "r", tostring(got))
  f:close()
  os.remove(path)
end)

T.done()
