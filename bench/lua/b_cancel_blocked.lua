-- Cancel a thread blocked in a queue receive, then join it: the time from
-- t:cancel() until join returns.  Reference figures: Lanes 101 us, effil
-- 151 us; CPython never delivers until the wait ends.
--
-- The floor, measured in the same run and interleaved with it: the same
-- thread woken by an item instead (q:put, the get returns, the thread
-- returns, join returns): the same wake-up, exit and join, without the
-- cancel.
local tether = require "tether"
local B = require "benchlib"

local n = B.count(300)
local us, floor = {}, {}
local q = tether.queue()

local function blocked_once(cancel)
  local ready = tether.event()
  local t = tether.thread(function() ready:set() q:get() end)
  ready:wait()
  tether.sleep(0.001) -- lets it block in get
  local t0 = tether.clock()
  if cancel then t:cancel() else q:put(true) end
  t:join()
  local dt = (tether.clock() - t0) * 1e6
  assert(t:status() == (cancel and "cancelled" or "done"))
  return dt
end

for i = 1, n do
  if i % 2 == 1 then
    us[#us + 1] = blocked_once(true)
    floor[#floor + 1] = blocked_once(false)
  else
    floor[#floor + 1] = blocked_once(false)
    us[#us + 1] = blocked_once(true)
  end
end
local f = B.stats(floor)
B.report("lua.cancel_blocked", "us", us, nil,
         {floor = f.median, ratio = B.stats(us).median / f.median})
B.report("lua.wake_blocked_floor", "us", floor, nil)
