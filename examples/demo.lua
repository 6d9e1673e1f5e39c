-- demo.lua - a tour of `require "tether"` in one script.
--
--   LUA_CPATH='build/dev/bindings/lua/?.so;;' lua5.4 examples/demo.lua [ticker.so]
--
-- Lua threads share a table; the ticker plugin's native threads call back
-- into Lua; a runaway thread is cancelled; joins have timeouts; a summary
-- with the GIL's statistics closes it.  It checks what it shows, so it also
-- runs as a test (tests/lua/test_demo.lua).

local tether = require "tether"

local function say(fmt, ...) print(string.format(fmt, ...)) end

-- 1. Threads that share one Lua state: no copying, upvalues and all.
local shared = {words = 0, by_thread = {}}
local lock = tether.lock()
local text = string.rep("the quick brown fox jumps over the lazy dog ", 2000)
local workers = {}
for i = 1, 4 do
  workers[i] = tether.thread({name = "counter-" .. i}, function()
    local n = 0
    for _ in text:gmatch("%a+") do n = n + 1 end
    local held <close> = lock:held() -- a read-modify-write of shared state
    shared.words = shared.words + n
    shared.by_thread[tether.current().name] = n
    return n
  end)
end
for i, t in ipairs(workers) do
  local ok, n = t:join(10)
  assert(ok and n == 18000, "counter " .. i)
end
say("1. four threads counted %d words into one shared table", shared.words)
assert(shared.words == 4 * 18000)

-- 2. Native threads of a plugin call a Lua function.
local ticker_path = arg[1] or os.getenv("TETHER_TICKER")
if ticker_path then
  local ticker = tether.load(ticker_path)
  local ticks = {}
  local cb <close> = tether.callback("void(ptr,i32,i32)", function(_, thread, tick)
    ticks[thread] = (ticks[thread] or 0) + 1
  end)
  assert(ticker:call("ticker_start", "i32(ptr,ptr,i32,i32,i32)", cb, nil, 3, 500, 0) == 0)
  assert(ticker:call("ticker_wait", "i32(i64)", -1) == 0)
  say("2. %s %s: 3 native threads called back into Lua %d + %d + %d times",
      ticker.name, ticker.version, ticks[0], ticks[1], ticks[2])
  assert(ticks[0] + ticks[1] + ticks[2] == 1500)
else
  say("2. (no ticker plugin given: skipped)")
end

-- 3. A runaway thread, stopped from outside: no cooperation needed.
local started = tether.event()
local runaway = tether.thread({name = "runaway"}, function()
  started:set()
  local n = 0
  while true do n = n + 1 end -- pure Lua, never yields, never calls
end)
started:wait()
tether.sleep(0.01)
local t0 = tether.clock()
runaway:cancel()
local ok, err = runaway:join(5)
say("3. cancelled a busy loop in %.0f us: join -> %s, %s (status %s)",
    (tether.clock() - t0) * 1e6, tostring(ok), tostring(err), runaway:status())
assert(ok == false and err == tether.Cancelled)

-- 4. Joins with timeouts, and results.
local go = tether.event()
local slow = tether.thread(function() go:wait() return "slow result" end)
local r1, why = slow:join(0.001)
go:set()
local r2, value = slow:join(5)
say("4. join(0.001) -> %s, %s; join(5) -> %s, %s", tostring(r1), why, tostring(r2), value)
assert(r1 == nil and why == "timeout" and r2 == true and value == "slow result")

-- 5. What the GIL did.
local st = tether.gil_stats()
say("5. GIL: %d acquisitions, %d switches, %d forced drops, longest wait %.2f ms",
    st.acquisitions, st.switches, st.forced_drops, st.wait_max * 1e3)
say("demo done")
