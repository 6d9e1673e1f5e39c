-- tether.local() (issue 20 item 3): per-thread fields for 8 threads, that
-- die with their thread, and per native thread in callbacks.
local tether = require "tether"
local T = require "testlib"

T.case("8 threads each see their own fields", function()
  local loc = tether["local"]()
  loc.who = "main"
  local go = tether.event()
  local ts = {}
  for i = 1, 8 do
    ts[i] = tether.thread(function()
      assert(loc.who == nil, "a new thread sees no field")
      loc.who = i
      loc.list = {i}
      go:wait()
      for _ = 1, 50 do
        assert(loc.who == i and loc.list[1] == i)
        tether.sleep(0)
      end
      return loc.who
    end)
  end
  go:set()
  for i = 1, 8 do
    local ok, who = ts[i]:join(T.LIMIT)
    assert(ok and who == i, tostring(who))
  end
  assert(loc.who == "main" and loc.list == nil)
  loc.who = nil
  assert(loc.who == nil)
  assert(tostring(loc):find("tether.local", 1, true))
end)

T.case("the values die with the thread", function()
  local loc = tether["local"]()
  local alive = setmetatable({}, {__mode = "k"})
  local t = tether.thread(function()
    local v = {}
    alive[v] = true
    loc.value = v
  end)
  assert(t:join(T.LIMIT))
  for _ = 1, 3 do collectgarbage() end
  assert(next(alive) == nil, "the finished thread's value is still referenced")
end)

T.case("callbacks on native threads: each native thread its own", function()
  local TICKER = os.getenv("TETHER_TICKER")
  if not TICKER then print("(no ticker plugin: skipped)") return end
  local ticker = tether.load(TICKER)
  local loc = tether["local"]()
  local bad, calls, firsts = 0, 0, 0
  local cb = tether.callback("void(ptr,i32,i32)", function(_, thread)
    calls = calls + 1
    if loc.thread == nil then
      loc.thread = thread -- first call on this native thread
      firsts = firsts + 1
    elseif loc.thread ~= thread then
      bad = bad + 1 -- another native thread's field
    end
  end)
  assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", cb:ptr(), nil, 4, 200, 0) == 0)
  assert(ticker:call("ticker_wait", "i32(i64)", -1) == 0)
  assert(calls == 800, calls)
  assert(bad == 0, bad)
  assert(firsts == 4, firsts) -- kept between the calls of each native thread
  assert(loc.thread == nil) -- the main thread's own is still empty
  cb:free()
end)

T.case("native threads of a later run inherit nothing; the earlier ones' values go", function()
  -- (a second ticker run's native threads may reuse the first run's
  -- pthread ids and stacks: a key made of either would hand them the old
  -- fields)
  local TICKER = os.getenv("TETHER_TICKER")
  if not TICKER then print("(no ticker plugin: skipped)") return end
  local ticker = tether.load(TICKER)
  local loc = tether["local"]()
  local alive = setmetatable({}, {__mode = "k"})
  for run = 1, 3 do
    local inherited, firsts = 0, 0
    local cb = tether.callback("void(ptr,i32,i32)", function()
      if loc.run ~= run then
        if loc.run ~= nil then inherited = inherited + 1 end
        loc.run = run
        local v = {}
        alive[v] = run
        loc.value = v
        firsts = firsts + 1
      end
    end)
    assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", cb:ptr(), nil, 4, 50, 0) == 0)
    assert(ticker:call("ticker_wait", "i32(i64)", -1) == 0)
    cb:free()
    assert(inherited == 0, "run " .. run .. ": " .. inherited .. " native threads saw an earlier one's fields")
    assert(firsts == 4, firsts)
  end
  -- the earlier runs' threads ended before the last run's stored: their
  -- values were dropped (only the last run's may remain)
  for _ = 1, 3 do collectgarbage() end
  for _, run in pairs(alive) do
    assert(run == 3, "a value of run " .. run .. " is still referenced")
  end
  assert(loc.run == nil)
end)

T.case("bad input", function()
  local loc = tether["local"]()
  T.raises("field name must not be nil", function() loc[nil] = 1 end)
end)

T.done()
