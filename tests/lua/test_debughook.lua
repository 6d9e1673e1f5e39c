-- User debug hooks keep working: the module's one-shot hook saves the hook
-- it covers and puts it back when it fires.
local tether = require "tether"
local T = require "testlib"

tether.switchinterval(0.0005) -- many hand-overs, so many one-shot hooks

-- Runs body in a worker while the main thread keeps asking for the GIL.
local function contended(body)
  local done = false
  local t = tether.thread(function() local r = {body()} done = true return table.unpack(r) end)
  local rounds = 0
  while not done do
    tether.sleep(0) -- takes the GIL back from the worker each time
    rounds = rounds + 1
    assert(rounds < 1e7, "the worker never finished")
  end
  return t:join(T.LIMIT)
end

T.case("a line hook keeps firing through hand-overs", function()
  local before = tether.gil_stats().switches
  local ok, lines, still = contended(function()
    local lines = 0
    local hook = function(ev) lines = lines + 1 end
    debug.sethook(hook, "l")
    for i = 1, 200000 do local _ = i * 2 end
    local h, mask = debug.gethook()
    debug.sethook()
    return lines, h == hook and mask == "l"
  end)
  assert(ok and lines > 1000 and still, tostring(lines))
  assert(tether.gil_stats().switches > before)
end)

T.case("a count hook keeps firing through hand-overs", function()
  local ok, counts, still = contended(function()
    local counts = 0
    local hook = function(ev) assert(ev == "count") counts = counts + 1 end
    debug.sethook(hook, "", 1000)
    for i = 1, 300000 do local _ = i + 1 end
    local h, mask, count = debug.gethook()
    debug.sethook()
    return counts, h == hook and count == 1000
  end)
  assert(ok and counts > 100 and still, tostring(counts))
end)

T.case("a call hook on the main thread survives requests", function()
  local calls = 0
  local function f() return 1 end
  local go = tether.event()
  local t = tether.thread(function() go:wait() for _ = 1, 200 do tether.sleep(0) end end)
  debug.sethook(function() calls = calls + 1 end, "c")
  go:set()
  local n = 0
  repeat n = n + f() until not t:alive()
  debug.sethook()
  assert(t:join() and n > 0 and calls >= n, n .. " " .. calls)
end)

T.case("setting and clearing hooks while threads switch", function()
  local ok = contended(function()
    for i = 1, 2000 do
      debug.sethook(function() end, "l")
      for _ = 1, 10 do end
      debug.sethook()
    end
    return true
  end)
  assert(ok)
  assert(debug.gethook() == nil)
end)

T.case("hooks are per coroutine, also inside threads", function()
  local ok, inner_lines, outer_hook = contended(function()
    local lines = 0
    local co = coroutine.create(function()
      debug.sethook(function() lines = lines + 1 end, "l")
      for i = 1, 50000 do local _ = i end
      debug.sethook()
    end)
    assert(coroutine.resume(co))
    return lines, debug.gethook()
  end)
  assert(ok and inner_lines > 1000 and outer_hook == nil)
end)

T.case("debug.gethook never shows the module's hook", function()
  -- requests arm the worker's coroutine all along; gethook must report the
  -- user's hook (or none), not the one-shot hook that covers it
  local ok, seen_none, seen_user = contended(function()
    local bad_none, bad_user = 0, 0
    for _ = 1, 20000 do
      if debug.gethook() ~= nil then bad_none = bad_none + 1 end
    end
    local hook = function() end
    debug.sethook(hook, "c")
    for _ = 1, 20000 do
      local h, mask, count = debug.gethook()
      if h ~= hook or mask ~= "c" or count ~= 0 then bad_user = bad_user + 1 end
    end
    debug.sethook()
    return bad_none, bad_user
  end)
  assert(ok and seen_none == 0 and seen_user == 0, seen_none .. " " .. seen_user)
end)

T.case("a hook sees sethook itself as one C call, named", function()
  local events = {}
  debug.sethook(function(e)
    local info = debug.getinfo(2, "nS")
    events[#events + 1] = e .. " " .. tostring(info.name) .. " " .. info.what
  end, "cr")
  debug.sethook()
  assert(#events == 2, table.concat(events, ", "))
  assert(events[1] == "return sethook C", events[1])
  assert(events[2] == "call sethook C", events[2])
end)

T.done()
