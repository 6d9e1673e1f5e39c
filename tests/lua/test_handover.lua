-- A cancel or raise that reaches a thread before it first holds the GIL:
-- the raiser finds it holding none, so no hook is armed for it, and once
-- it runs a pure-Lua loop nothing would ever make it look.  Found while
-- running the examples of docs/lua.md (a call with a time limit hung in
-- its join).  The main thread holds the GIL from tether.thread's return to
-- the cancel, so the new thread often has not run yet.
local tether = require "tether"
local T = require "testlib"

local ROUNDS = 200

-- Starts a spinner and cancels it at once; it must end cancelled.
local function start_and_cancel(raise)
  local t = tether.thread(function() local x = 0 while true do x = x + 1 end end)
  if raise then t:raise("stop") else t:cancel() end
  local ok, err = t:join(T.LIMIT)
  assert(ok ~= nil, "the thread never took its " .. (raise and "raise" or "cancel"))
  assert(ok == false)
  if raise then
    assert(tostring(err):find("stop"), tostring(err))
    assert(t:status() == "error", t:status())
  else
    assert(err == tether.Cancelled, tostring(err))
    assert(t:status() == "cancelled", t:status())
  end
end

T.case("cancel a thread that has not run yet", function()
  for _ = 1, ROUNDS do start_and_cancel(false) end
end)

T.case("raise in a thread that has not run yet", function()
  for _ = 1, ROUNDS do start_and_cancel(true) end
end)

T.case("cancel among threads contending for the GIL", function()
  local old = tether.switchinterval()
  tether.switchinterval(0.0005)
  for _ = 1, ROUNDS // 4 do
    local ts = {}
    for k = 1, 3 do
      ts[k] = tether.thread(function() local x = 0 while true do x = x + 1 end end)
    end
    for k = 1, 3 do ts[k]:cancel() end
    for k = 1, 3 do
      local ok, err = ts[k]:join(T.LIMIT)
      assert(ok ~= nil, "thread " .. k .. " never took its cancel")
      assert(ok == false and err == tether.Cancelled, tostring(err))
    end
  end
  tether.switchinterval(old)
end)

T.done()
