-- A user's count hook counts every instruction while other threads keep
-- asking for the GIL (issue 13, review of the count hook).  lua_sethook
-- starts a count again, so a hook the module covered and put back at each
-- request used to lose the part of its count it had run: a count of a
-- million under a request every millisecond fired 1 to 12 times instead of
-- about 100.  Each case counts the events of a fixed loop once without
-- competition and once with a thread that wants the GIL every half
-- millisecond, and compares the counts (a loose band: nothing timed).
local tether = require "tether"
local T = require "testlib"

tether.switchinterval(0.001)

-- A thread that takes the GIL every half millisecond until stopped.
local function competitor()
  local stop, rounds = false, 0
  local t = tether.thread(function()
    while not stop do
      tether.sleep(0.0005)
      rounds = rounds + 1
    end
  end)
  return function()
    stop = true
    assert(t:join(T.LIMIT))
    return rounds
  end
end

-- Runs body() with and without the competitor; returns both results and
-- the GIL switches made while the competitor ran.
local function both(body)
  local alone = {body()}
  local stop = competitor()
  tether.sleep(0.01) -- the competitor is running
  local before = tether.gil_stats().switches
  local contended = {body()}
  local switches = tether.gil_stats().switches - before
  local rounds = stop()
  -- the case proves nothing unless the GIL really changed hands
  assert(switches >= 20 and rounds >= 10,
         "no competition: " .. switches .. " switches, " .. rounds .. " rounds")
  return alone, contended
end

local function in_band(alone, contended, what)
  assert(alone >= 10, what .. ": only " .. alone .. " events alone")
  assert(contended >= alone * 0.9 and contended <= alone * 1.1 + 1,
         string.format("%s: %d events alone, %d under requests", what, alone, contended))
end

T.case("a count hook of a million fires as often under requests", function()
  local function body()
    local fired, exact = 0, true
    local hook
    hook = function(ev)
      fired = fired + 1
      local h, mask, count = debug.gethook()
      exact = exact and ev == "count" and h == hook and mask == "" and count == 1000000
    end
    debug.sethook(hook, "", 1000000)
    local x = 0
    for i = 1, 25000000 do x = x + i end
    local h, mask, count = debug.gethook()
    debug.sethook()
    return fired, exact and h == hook and mask == "" and count == 1000000
  end
  local alone, contended = both(body)
  in_band(alone[1], contended[1], "count 1e6")
  assert(alone[2] and contended[2], "debug.gethook did not report the user's hook")
end)

T.case("a count hook on a coroutine, and one in a tether.thread", function()
  local function body()
    local fired = 0
    local co = coroutine.create(function()
      debug.sethook(function() fired = fired + 1 end, "", 300000)
      local x = 0
      for i = 1, 7500000 do x = x + i end
      local _, mask, count = debug.gethook()
      debug.sethook()
      return mask == "" and count == 300000
    end)
    local ok, exact = coroutine.resume(co)
    assert(ok, exact)
    local tfired = 0
    local t = tether.thread(function()
      debug.sethook(function() tfired = tfired + 1 end, "", 300000)
      local x = 0
      for i = 1, 7500000 do x = x + i end
      debug.sethook()
    end)
    assert(t:join(T.LIMIT))
    return fired, tfired, exact
  end
  local alone, contended = both(body)
  in_band(alone[1], contended[1], "coroutine")
  in_band(alone[2], contended[2], "thread")
  assert(contended[3], "debug.gethook in the coroutine")
end)

T.case("count and line together: the user's events are plain Lua's", function()
  local function body()
    local lines, counts, calls = 0, 0, 0
    local function f(v) return v end
    debug.sethook(function(ev)
      if ev == "line" then lines = lines + 1
      elseif ev == "count" then counts = counts + 1
      elseif ev == "call" then calls = calls + 1 end
    end, "lc", 100000)
    local x = 0
    for i = 1, 1000000 do
      x = x + i
      if i % 1000 == 0 then x = f(x) end
    end
    debug.sethook()
    return lines, counts, calls
  end
  local alone, contended = both(body)
  assert(alone[1] == contended[1], "line events: " .. alone[1] .. " alone, " .. contended[1])
  assert(alone[3] == contended[3], "call events: " .. alone[3] .. " alone, " .. contended[3])
  in_band(alone[2], contended[2], "count with lines")
end)

T.case("debug.gethook of a coroutine that inherited a count hook", function()
  -- lua_newthread copies the creating coroutine's hook; stock Lua then
  -- reports no function, the mask and the count (checked on lua5.4)
  local stop = competitor()
  debug.sethook(function() end, "", 1000)
  local bad = 0
  for _ = 1, 20000 do
    local co = coroutine.create(function() end)
    local h, mask, count = debug.gethook(co)
    if h ~= nil or mask ~= "" or count ~= 1000 then bad = bad + 1 end
    coroutine.resume(co)
  end
  debug.sethook()
  stop()
  assert(bad == 0, bad .. " wrong answers")
end)

T.case("requests reach a busy loop that has a count hook", function()
  -- the module serves them through the user's count hook: a cancel and
  -- the GIL still get through, whatever the mask
  for _, mask in ipairs({"", "l", "c", "r"}) do
    local ready = tether.event()
    local t = tether.thread(function()
      debug.sethook(function() end, mask, 1000000)
      ready:set()
      local n = 0
      while true do n = n + 1 end
    end)
    assert(ready:wait(T.LIMIT))
    for _ = 1, 20 do tether.sleep(0.001) end -- the GIL comes back
    t:cancel()
    local ok, err = t:join(T.LIMIT)
    assert(ok == false and err == tether.Cancelled, mask .. ": " .. tostring(err))
  end
end)

T.done()
