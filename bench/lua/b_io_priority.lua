-- I/O threads ahead of CPU-bound ones (issue 20, item 4).  The main thread
-- loops tether.sleep(0.001) while 8 threads spin in pure Lua; each sleep is
-- timed from the call to its return (a return needs the GIL back from the
-- spinners).  Targets: mean <= 2 ms, p99 <= 5 ms, and the spinners' total
-- throughput with the sleeper >= 0.95x the same spinners without it.
--
-- BUSY=n in the environment changes the number of spinners (BUSY=0: the
-- sleep alone, what the machine gives without any GIL contention).
--
-- Windows alternate solo / with / with / solo (as the C convoy rows), so
-- that a load change on a shared machine hits both throughputs alike; the
-- busy ratio is each such round's (with + with) / (solo + solo), and the
-- row reports their median (as the C convoy row reports its repetitions'),
-- so that a window a neighbour on the host disturbed moves one round's
-- ratio, not the result.
local tether = require "tether"
local B = require "benchlib"

local rounds = B.count(3)
local window = rounds > 1 and 0.5 or 0.05
local BUSY = tonumber(os.getenv("BUSY") or 8)

local sleeps = {}

-- One window: the spinners, and the sleeper if with_sleeper.  Returns the
-- spinners' iterations per second.
local function window_run(with_sleeper)
  local stop = false
  local counts = {}
  local threads = {}
  for i = 1, BUSY do
    counts[i] = 0
    threads[i] = tether.thread(function()
      local x = 0
      while not stop do
        x = x + 1
        if x & 1023 == 0 then counts[i] = x end
      end
      counts[i] = x
    end)
  end
  tether.sleep(window / 5) -- warm up: every spinner has run
  local c0, t0 = 0, tether.clock()
  for i = 1, BUSY do c0 = c0 + counts[i] end
  if with_sleeper then
    while tether.clock() - t0 < window do
      local s0 = tether.clock()
      tether.sleep(0.001)
      sleeps[#sleeps + 1] = (tether.clock() - s0) * 1e3
    end
  else
    tether.sleep(window)
  end
  local c1, t1 = 0, tether.clock()
  for i = 1, BUSY do c1 = c1 + counts[i] end
  stop = true
  for i = 1, BUSY do threads[i]:join() end
  return (c1 - c0) / (t1 - t0)
end

local solo, with, ratios = 0, 0, {}
for r = 1, rounds do
  local s1 = window_run(false)
  local w = window_run(true) + window_run(true)
  local s2 = s1 + window_run(false)
  solo, with, ratios[r] = solo + s2, with + w, w / s2
end

local st = B.stats(sleeps)
table.sort(sleeps)
local p99 = sleeps[math.max(1, math.floor(0.99 * #sleeps + 0.5))]
B.report("lua.io_sleep_mean", "ms", {st.mean}, 2, {sleeps = #sleeps})
B.report("lua.io_sleep_p99", "ms", {p99}, 5, {sleeps = #sleeps})
B.report("lua.io_busy_ratio", "x", ratios, 0.95,
         {better = "higher", solo = solo / (2 * rounds), with = with / (2 * rounds)})
