-- t:cancel() and t:raise(v) reach a thread blocked in I/O (lt_io.c): a
-- read of a FIFO, a popen read, os.execute; nothing already read is lost
-- (a partial line, number or count stays readable, and so do the earlier
-- results of a multi-format read); a cancelled os.execute leaves its
-- command running; tether.deferred holds the exception back.
local tether = require "tether"
local T = require "testlib"

local fifo = T.fifo

-- Starts fn in a thread, lets it block, interrupts it with `how`
-- ("cancel" or "raise") and checks that it ended with that exception.
local function interrupt(how, fn)
  local ready = tether.event()
  local t = tether.thread(function() ready:set() fn() return "not interrupted" end)
  assert(ready:wait(T.LIMIT))
  tether.sleep(0.02) -- usually lets it block; correctness does not depend on it
  if how == "cancel" then assert(t:cancel()) else assert(t:raise("stop")) end
  local ok, err = t:join(T.LIMIT)
  assert(ok == false, how .. ": the thread ended with " .. tostring(err))
  if how == "cancel" then
    assert(err == tether.Cancelled, tostring(err))
  else
    assert(err == "stop", tostring(err))
  end
end

-- A FIFO with a reading handle and a writing one (both "r+"/"w" open at
-- once, so that neither open waits).
local function pipe_pair()
  local path = fifo()
  local r = assert(io.open(path, "r+"))
  local w = assert(io.open(path, "w"))
  w:setvbuf("no")
  return r, w, path
end

for _, how in ipairs({"cancel", "raise"}) do
  T.case(how .. " reaches io.read on a FIFO", function()
    local r, w, path = pipe_pair()
    interrupt(how, function() return r:read("l") end)
    w:write("after\n")
    assert(r:read("l") == "after")
    r:close() w:close() os.remove(path)
  end)

  T.case(how .. " reaches io.read through io.input", function()
    local r, w, path = pipe_pair()
    interrupt(how, function() io.input(r) return io.read("a") end)
    io.input(io.stdin)
    w:write("x\n")
    assert(r:read("l") == "x")
    r:close() w:close() os.remove(path)
  end)

  T.case(how .. " reaches a popen read", function()
    local p = io.popen("echo $$; exec sleep 600")
    local pid = assert(math.tointeger(tonumber(p:read("l"))))
    interrupt(how, function() return p:read("a") end)
    -- The command still runs, and its pipe is still open.
    assert(io.type(p) == "file")
    assert(os.execute("kill " .. pid))
    assert(p:read("a") == "")
    p:close()
  end)

  T.case(how .. " reaches os.execute", function()
    local path = fifo()
    local marker = os.tmpname()
    os.remove(marker)
    interrupt(how, function()
      return os.execute("head -c 1 " .. path .. " > /dev/null; echo ran > " .. marker)
    end)
    -- The command was not killed: it goes on once its FIFO has data.
    local w = assert(io.open(path, "w"))
    w:write("z")
    w:close()
    T.wait_for(function()
      local f = io.open(marker)
      local s = f and f:read("a")
      if f then f:close() end
      return s == "ran\n"
    end, "the abandoned command to finish")
    os.remove(marker)
    os.remove(path)
  end)
end

T.case("cancel reaches io.read on a terminal", function()
  if not os.execute("command -v script > /dev/null") then
    print("(skipped: no script(1) for a pseudo-terminal)")
    return
  end
  -- A child lua5.4 whose stdin is a pseudo-terminal (script(1)); this
  -- thread keeps the terminal's other side open and silent meanwhile.
  local child = os.tmpname()
  local out = os.tmpname()
  local f = assert(io.open(child, "w"))
  f:write([[
    local tether = require "tether"
    local ready = tether.event()
    local t = tether.thread(function() ready:set() return io.read("l") end)
    ready:wait()
    tether.sleep(0.02)
    t:cancel()
    local ok, err = t:join(]] .. T.LIMIT .. [[)
    print("tty:", os.execute("test -t 0"), ok, err == tether.Cancelled)
  ]])
  f:close()
  local lua = os.getenv("TETHER_LUA") or "lua5.4"
  local preload = os.getenv("TETHER_CHILD_PRELOAD")
  if preload then lua = "env LD_PRELOAD=" .. preload .. " " .. lua end
  local p = assert(io.popen(string.format("script -qec '%s %s' /dev/null > %s 2>&1",
                                          lua, child, out), "w"))
  local text
  T.wait_for(function()
    local g = io.open(out)
    text = g and g:read("a") or ""
    if g then g:close() end
    return text:find("tty:.*\n")
  end, "the child's answer")
  p:close()
  os.remove(child)
  os.remove(out)
  assert(text:find("tty:%s+true%s+false%s+true"), text)
end)

T.case("a partial line stays readable", function()
  local r, w, path = pipe_pair()
  w:write("par")
  interrupt("cancel", function() return r:read("l") end)
  w:write("tial\n")
  assert(r:read("l") == "partial")
  -- The same for "L", a count, a number and "a" (at end of file).
  w:write("ab")
  interrupt("cancel", function() return r:read("L") end)
  w:write("c\n")
  assert(r:read("L") == "abc\n")
  w:write("123")
  interrupt("cancel", function() return r:read(6) end)
  w:write("456")
  assert(r:read(6) == "123456")
  w:write("-12")
  interrupt("cancel", function() return r:read("n") end)
  w:write("34 ")
  assert(r:read("n") == -1234)
  r:close() w:close() os.remove(path)
end)

T.case("earlier results of a multi-format read stay readable", function()
  local r, w, path = pipe_pair()
  w:write("first\n42 sec")
  interrupt("raise", function() return r:read("l", "n", "l") end)
  w:write("ond\n")
  local a, b, c = r:read("l", "n", "l")
  assert(a == "first" and b == 42 and c == " second", tostring(c))
  r:close() w:close() os.remove(path)
end)

T.case("nothing read is lost when the data come in pieces", function()
  -- A reader that is interrupted again and again while a line arrives
  -- byte by byte ends up with the whole line.
  local r, w, path = pipe_pair()
  local text = "the quick brown fox"
  for i = 1, #text do
    w:write(text:sub(i, i))
    interrupt("raise", function() return r:read("l") end)
  end
  w:write("\n")
  assert(r:read("l") == text)
  r:close() w:close() os.remove(path)
end)

T.case("bytes pushed back past the buffer are all read without new data", function()
  -- "a" and "b" arrive in two reads of the pipe; the interrupted line read
  -- gives both back, one of them beyond the buffer (glibc's pushback
  -- area).  Both must then be readable with nothing more written.
  local r, w, path = pipe_pair()
  local reader = tether.thread(function() return r:read("l") end)
  tether.sleep(0.02)
  w:write("a")
  tether.sleep(0.02)
  w:write("b")
  tether.sleep(0.02)
  reader:raise("stop")
  local ok, err = reader:join(T.LIMIT)
  assert(ok == false and err == "stop", tostring(err))
  local t = tether.thread(function() return r:read(1), r:read(1) end)
  local ok2, x, y = t:join(T.LIMIT)
  if ok2 == nil then w:write("\n") t:join() end -- unblock it before failing
  assert(ok2 and x == "a" and y == "b", tostring(x) .. tostring(y))
  r:close() w:close() os.remove(path)
end)

T.case("tether.deferred holds the exception back until the read returns", function()
  local r, w, path = pipe_pair()
  local ready = tether.event()
  local got
  local t = tether.thread(function()
    tether.deferred(function()
      ready:set()
      got = r:read("l")
    end)
    return "not raised"
  end)
  assert(ready:wait(T.LIMIT))
  tether.sleep(0.02)
  t:raise("later")
  tether.sleep(0.02)
  w:write("kept\n")
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "later", tostring(err))
  assert(got == "kept", tostring(got))
  r:close() w:close() os.remove(path)
end)

T.case("a cancel while waiting for a busy handle", function()
  local r, w, path = pipe_pair()
  local holder = tether.thread(function() return r:read("l") end)
  tether.sleep(0.02)
  interrupt("cancel", function() return r:read("l") end)
  w:write("for the holder\n")
  local ok, line = holder:join(T.LIMIT)
  assert(ok and line == "for the holder", tostring(line))
  r:close() w:close() os.remove(path)
end)

-- How many descriptors of this process are open on `path` (Linux:
-- /proc/<pid>/fd; other descriptors come and go with threads).
local function open_on(path)
  local pid = assert(io.open("/proc/self/stat")):read("n") -- closed by GC
  local p = io.popen("ls -l /proc/" .. pid .. "/fd")
  local n = 0
  for l in p:lines() do
    if l:sub(-#path - 4) == " -> " .. path then n = n + 1 end
  end
  p:close()
  return n
end

T.case("a cancelled thread's close still closes: buffered data out, descriptor closed", function()
  -- Cancellation is raised again at every call, __close's too; close runs
  -- all the same (the handle is marked closed first: nothing would close
  -- it later), and raises once it has.
  local path = os.tmpname()
  local out = path .. ".popen"
  local go = tether.event()
  local t = tether.thread(function()
    local f <close> = assert(io.open(path, "w"))
    f:write("file data")
    local p <close> = assert(io.popen("cat > " .. out, "w"))
    p:write("popen data")
    go:set()
    tether.sleep(T.LIMIT) -- cancelled here: p, then f closed on the way out
  end)
  assert(go:wait(T.LIMIT))
  assert(t:cancel())
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(io.open(path):read("a") == "file data", "the file's buffer was not written")
  assert(io.open(out):read("a") == "popen data", "the popen was not closed")
  os.remove(path) os.remove(out)
end)

T.case("an exception that comes during an open leaves no descriptor behind", function()
  -- The open of a FIFO waits for a writer and cannot be interrupted: the
  -- raise comes during it, and the FILE it made must go into the handle
  -- (closed when collected), not be lost.
  local path = fifo()
  local ready = tether.event()
  local t = tether.thread(function() ready:set() return io.open(path, "r") end)
  assert(ready:wait(T.LIMIT))
  tether.sleep(0.05) -- usually lets it block in the open
  assert(t:raise("during open"))
  local w = assert(io.open(path, "w")) -- lets the open return
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "during open", tostring(err))
  w:close()
  t = nil -- its coroutine held the handle
  for _ = 1, 4 do collectgarbage() end
  local left = open_on(path)
  assert(left == 0, string.format("%d descriptors left open on the FIFO", left))
  os.remove(path)
end)

T.done()
