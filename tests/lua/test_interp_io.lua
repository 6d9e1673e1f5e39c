-- Interpreters and I/O (issue 18 §6): each interpreter's Lua state gets
-- the module's GIL-releasing io and os functions, and i:thread returns
-- without waiting for the new thread's work, even work that holds that
-- interpreter's GIL for good.
local tether = require "tether"
local T = require "testlib"

local fifo = T.fifo

T.case("an interpreter's io and os functions are the module's", function()
  local i = tether.interp()
  local t = i:thread(function()
    for _, fn in ipairs({io.read, io.write, io.lines, io.open, io.popen,
                         os.execute, io.stdout.read, io.stdout.close}) do
      local _, up = debug.getupvalue(fn, 1)
      if type(up) ~= "userdata" then return false end
    end
    return true
  end)
  local ok, replaced = t:join(T.LIMIT)
  assert(ok and replaced == true, tostring(replaced))
  assert(i:close(T.LIMIT))
end)

T.case("i:thread does not wait for the new thread's work", function()
  local path = fifo()
  local i = tether.interp()
  -- The new thread blocks holding its interpreter's GIL (a finalizer
  -- never lets it go) until this thread, after i:thread returned, opens
  -- the FIFO and writes to it.  An i:thread that took that GIL back after
  -- the start would wait for ever.
  local t = i:thread(function(p)
    local got
    setmetatable({}, {__gc = function()
      local f = io.open(p, "r")
      got = f:read(1)
      f:close()
    end})
    collectgarbage()
    return got
  end, path)
  local w = assert(io.open(path, "w"))
  w:write("g")
  w:close()
  local ok, got = t:join(T.LIMIT)
  assert(ok and got == "g", tostring(got))
  assert(i:close(T.LIMIT))
  os.remove(path)
end)

T.case("a thread cancelled before it started its function", function()
  local i = tether.interp()
  local t = i:thread(function() while true do end end)
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false, tostring(err))
  assert(i:close(T.LIMIT))
end)

T.case("threads of several interpreters overlap os.execute", function()
  local paths, is, ts = {}, {}, {}
  for k = 1, 3 do
    paths[k] = fifo()
    is[k] = tether.interp()
    ts[k] = is[k]:thread(function(p)
      return os.execute("head -c 1 " .. p .. " > /dev/null")
    end, paths[k])
  end
  -- Each head waits for a byte that this thread writes once all three
  -- threads started.
  for k = 3, 1, -1 do
    local w = assert(io.open(paths[k], "w"))
    w:write("x")
    w:close()
  end
  for k = 1, 3 do
    local ok, r = ts[k]:join(T.LIMIT)
    assert(ok and r == true, tostring(r))
    assert(is[k]:close(T.LIMIT))
    os.remove(paths[k])
  end
end)

T.case("interpreters reading lines of the same standard input share them out whole", function()
  -- io.stdin is one C FILE for every interpreter: each read takes the
  -- FILE's lock as Lua's own does (glibc's), so no line is split between
  -- two interpreters, whatever the buffer boundaries.
  local n = 400000 // (tonumber(os.getenv("TETHER_TEST_ROUNDS_DIV")) or 1)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for k = 1, n do f:write(k, "\n") end
  f:close()
  local status, out = T.run_lua([[
    local tether = require "tether"
    local is, ts = {}, {}
    for k = 1, 3 do is[k] = tether.interp() end
    for k = 1, 3 do
      ts[k] = is[k]:thread(function()
        local lines, sum, bad = 0, 0, 0
        for l in io.lines() do
          local v = math.tointeger(tonumber(l))
          if v then sum = sum + v else bad = bad + 1 end
          lines = lines + 1
        end
        return lines, sum, bad
      end)
    end
    local L, S, B = 0, 0, 0
    for k = 1, 3 do
      local ok, l, s, b = ts[k]:join()
      assert(ok, l)
      L, S, B = L + l, S + s, B + b
    end
    print(string.format("lines=%d sum=%d bad=%d", L, S, B))
  ]], nil, path)
  os.remove(path)
  local want = string.format("lines=%d sum=%d bad=0", n, n * (n + 1) // 2)
  assert(status == 0 and out:find(want, 1, true), "want " .. want .. ", got:\n" .. out)
end)

T.done()
