-- Lua's io and os libraries release the GIL while they block (lt_io.c):
-- another thread runs Lua meanwhile, and the one that unblocks the I/O
-- is that other thread, so an I/O call that held the GIL would hang the
-- test (CTest's timeout turns that into a failure).  Then one handle used
-- by many threads: reads and writes never interleave inside a call, and a
-- close waits for the read in progress.
local tether = require "tether"
local T = require "testlib"

local fifo = T.fifo

-- Runs fn in a thread that sets `ready` just before it calls fn, and
-- returns the thread once ready is set.
local function start(fn, ...)
  local ready = tether.event()
  local args = table.pack(...)
  local t = tether.thread(function()
    ready:set()
    return fn(table.unpack(args, 1, args.n))
  end)
  assert(ready:wait(T.LIMIT))
  return t
end

T.case("the io, os and file functions are the module's", function()
  for _, fn in ipairs({io.read, io.write, io.lines, io.open, io.close, io.popen,
                       io.input, io.output, io.flush, io.tmpfile, os.execute,
                       os.remove, os.rename, os.tmpname, io.stdout.read,
                       io.stdout.write, io.stdout.lines, io.stdout.close,
                       io.stdout.flush, io.stdout.seek, io.stdout.setvbuf}) do
    local _, up = debug.getupvalue(fn, 1)
    assert(type(up) == "userdata", "not replaced: " .. tostring(fn))
  end
end)

T.case("io.read on a FIFO lets other threads run", function()
  local path = fifo()
  local f = assert(io.open(path, "r+"))
  local t = start(function() return f:read("l") end)
  local w = assert(io.open(path, "w"))
  w:write("from main\n")
  w:close()
  local ok, line = t:join(T.LIMIT)
  assert(ok and line == "from main", tostring(line))
  f:close()
  os.remove(path)
end)

T.case("os.execute lets other threads run", function()
  local path = fifo()
  local t = start(os.execute, "head -c 1 " .. path .. " > /dev/null")
  -- The child opens the FIFO for reading; this open waits for it.
  local w = assert(io.open(path, "w"))
  w:write("x")
  w:close()
  local ok, a, b, c = t:join(T.LIMIT)
  assert(ok and a == true and b == "exit" and c == 0, tostring(a))
  os.remove(path)
end)

T.case("a popen read lets other threads run", function()
  local path = fifo()
  local t = start(function()
    local p = io.popen("head -c 1 " .. path .. "; echo done")
    local out = p:read("a")
    return out, p:close()
  end)
  local w = assert(io.open(path, "w"))
  w:write("y")
  w:close()
  local ok, out, closed = t:join(T.LIMIT)
  assert(ok and out == "ydone\n" and closed == true, tostring(out))
  os.remove(path)
end)

T.case("io.open of a FIFO lets other threads run", function()
  local path = fifo()
  local t = start(function()
    local f = assert(io.open(path, "r")) -- waits for a writer
    local s = f:read("a")
    f:close()
    return s
  end)
  local w = assert(io.open(path, "w"))
  w:write("opened")
  w:close()
  local ok, s = t:join(T.LIMIT)
  assert(ok and s == "opened", tostring(s))
  os.remove(path)
end)

T.case("a popen does not wait for a line read that waits for data", function()
  -- io.popen flushes every stream first (fflush(NULL), as Lua does), which
  -- takes each FILE's lock: a reader waiting for its next line must not
  -- hold its FILE's lock meanwhile, or every popen of the program waits
  -- for that line (8 popen readers took 1.4 s instead of 1 s).
  -- (Opened before: with the defect, an fopen waits for the popen's
  -- flush, which holds glibc's list of streams.)
  local path = fifo()
  local f = assert(io.open(path, "r+"))
  local w = assert(io.open(path, "w"))
  w:setvbuf("no")
  local t = start(function() return f:read("l") end)
  tether.sleep(0.1) -- let it block in the read (if not, the case proves nothing)
  local wrote = tether.event()
  local watchdog = tether.thread({daemon = true}, function()
    -- With the defect the popen below never returns: free it, and fail.
    if not wrote:wait(10) then w:write("from the watchdog\n") end
  end)
  local p = assert(io.popen("echo popen"))
  assert(p:read("l") == "popen")
  assert(p:close())
  assert(t:status() == "running", "the popen waited for the reader's line")
  w:write("from main\n")
  wrote:set()
  local ok, line = t:join(T.LIMIT)
  assert(ok and line == "from main", tostring(line))
  assert(watchdog:join(T.LIMIT))
  w:close()
  f:close()
  os.remove(path)
end)

T.case("two readers of one handle never split a line", function()
  local path = fifo()
  local f = assert(io.open(path, "r+"))
  local n = 300
  local readers = {}
  for r = 1, 2 do
    readers[r] = tether.thread(function()
      local got = {}
      while true do
        local l = f:read("l")
        if l == "end" then break end
        got[#got + 1] = l
      end
      return got
    end)
  end
  local w = assert(io.open(path, "w"))
  w:setvbuf("no")
  for i = 1, n do
    -- Each line in two writes, so that a reader often has half of one.
    w:write("line-", i)
    if i % 7 == 0 then tether.sleep(0) end
    w:write("-", string.rep("x", i % 13), "\n")
  end
  w:write("end\nend\n")
  w:close()
  local seen = {}
  for r = 1, 2 do
    local ok, got = readers[r]:join(T.LIMIT)
    assert(ok, tostring(got))
    for _, l in ipairs(got) do
      local i, xs = l:match("^line%-(%d+)%-(x*)$")
      assert(i and #xs == tonumber(i) % 13, "a split line: " .. l)
      assert(not seen[l], "read twice: " .. l)
      seen[l] = true
    end
  end
  for i = 1, n do
    assert(seen["line-" .. i .. "-" .. string.rep("x", i % 13)], "lost line " .. i)
  end
  f:close()
  os.remove(path)
end)

T.case("two writers of one blocked pipe never mix their lines", function()
  local out = os.tmpname()
  -- The reader starts late, so the pipe fills and writes block.
  local p = assert(io.popen("sleep 0.2; cat > " .. out, "w"))
  local line = {A = string.rep("A", 99), B = string.rep("B", 99)}
  local writers = {}
  for _, who in ipairs({"A", "B"}) do
    writers[#writers + 1] = tether.thread(function()
      for _ = 1, 1500 do p:write(line[who], "\n") end
    end)
  end
  for _, t in ipairs(writers) do assert(t:join(T.LIMIT)) end
  assert(p:close())
  local count = {A = 0, B = 0}
  for l in io.lines(out) do
    assert(l == line.A or l == line.B, "a mixed line: " .. l:sub(1, 40))
    count[l:sub(1, 1)] = count[l:sub(1, 1)] + 1
  end
  assert(count.A == 1500 and count.B == 1500)
  os.remove(out)
end)

T.case("a close waits for the read in progress on its handle", function()
  local path = fifo()
  local f = assert(io.open(path, "r+"))
  local reader = start(function() return f:read("l") end)
  tether.sleep(0.01) -- usually lets it block; correctness does not depend on it
  local closer = start(function() return f:close() end)
  tether.sleep(0.01)
  local w = assert(io.open(path, "w"))
  w:write("whole line\n")
  w:close()
  local ok, line = reader:join(T.LIMIT)
  assert(ok and line == "whole line", tostring(line))
  local ok2, closed = closer:join(T.LIMIT)
  assert(ok2 and closed == true, tostring(closed))
  assert(io.type(f) == "closed file")
  T.raises("attempt to use a closed file", f.read, f)
  os.remove(path)
end)

T.case("other threads use other handles while one is busy", function()
  local path = fifo()
  local f = assert(io.open(path, "r+"))
  local t = start(function() return f:read("l") end)
  -- io.write and a tmpfile work while t holds f.
  local g = io.tmpfile()
  g:write("other")
  g:seek("set")
  assert(g:read("a") == "other")
  g:close()
  local w = assert(io.open(path, "w"))
  w:write("done\n")
  w:close()
  local ok, line = t:join(T.LIMIT)
  assert(ok and line == "done", tostring(line))
  f:close()
  os.remove(path)
end)

T.case("a daemon thread blocked in io.read at the end of the program", function()
  -- Finalize wakes it and it leaves; the file's finalizer runs after.
  local path = fifo()
  local status, out = T.run_lua(string.format([[
    local tether = require "tether"
    local f = assert(io.open(%q, "r+"))
    local ready = tether.event()
    tether.thread({daemon = true}, function() ready:set() return f:read("l") end)
    ready:wait()
    tether.sleep(0.02)
    print("leaving")
  ]], path))
  assert(status == 0 and out == "leaving\n", status .. ": " .. out)
  os.remove(path)
end)

T.done()
