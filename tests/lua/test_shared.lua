-- Shared state: threads share one Lua state, and the GIL makes a plain
-- `x = x + 1` loop exact, because the GIL changes hands only between lines
-- and at calls (docs/lua.md), never inside a one-line statement.  A read
-- and a write with a call in between are not atomic; a lock makes them so.
local tether = require "tether"
local T = require "testlib"

-- Keeps the GIL changing hands often, so the cases below really interleave.
tether.switchinterval(0.0005)

T.case("8 threads, x = x + 1, exact", function()
  local x = 0
  local N = 200000
  local before = tether.gil_stats().switches
  local ts = {}
  for i = 1, 8 do
    ts[i] = tether.thread(function() for _ = 1, N do x = x + 1 end end)
  end
  for i = 1, 8 do assert(ts[i]:join()) end
  assert(x == 8 * N, "x = " .. x)
  assert(tether.gil_stats().switches > before, "the threads never switched")
end)

T.case("globals and table fields too", function()
  counter_global = 0
  local t = {n = 0}
  local ts = {}
  for i = 1, 8 do
    ts[i] = tether.thread(function()
      for _ = 1, 100000 do
        counter_global = counter_global + 1
        t.n = t.n + 1
      end
    end)
  end
  for i = 1, 8 do assert(ts[i]:join()) end
  assert(counter_global == 800000 and t.n == 800000)
end)

T.case("8 threads appending with t[#t + 1] = v lose nothing", function()
  -- `#` takes a slow path, after which the VM looks at its hook flag: a
  -- hook that fired at the next instruction would split the statement
  local t = {}
  local ts = {}
  for i = 1, 8 do
    ts[i] = tether.thread(function() for k = 1, 50000 do t[#t + 1] = k end end)
  end
  for i = 1, 8 do assert(ts[i]:join()) end
  assert(#t == 400000, "#t = " .. #t)
end)

T.case("a read-call-write update is made safe by a lock", function()
  local x = 0
  local lock = tether.lock()
  local function slow_increment()
    local l <close> = lock:held()
    local v = x
    tether.sleep(0) -- hands the GIL to a waiting thread, if any
    x = v + 1
  end
  local ts = {}
  for i = 1, 4 do
    ts[i] = tether.thread(function() for _ = 1, 300 do slow_increment() end end)
  end
  for i = 1, 4 do assert(ts[i]:join()) end
  assert(x == 1200, "x = " .. x)
  assert(not lock:locked())
end)

T.case("the main thread keeps running while workers spin", function()
  local stop = false
  local spins = 0
  local ts = {}
  for i = 1, 2 do
    ts[i] = tether.thread(function() while not stop do spins = spins + 1 end end)
  end
  T.wait_for(function() return spins > 1000 end, "the spinners")
  local mine = 0
  for _ = 1, 1000000 do mine = mine + 1 end -- needs the GIL back, repeatedly
  stop = true
  for i = 1, 2 do assert(ts[i]:join()) end
  assert(mine == 1000000)
end)

T.done()
