-- Run by tether_lua_host (host.c): the module joins the host's runtime.
local tether = require "tether"

assert(tether.current().name == "MainThread")
local shared, lock = {}, tether.lock()
local ts = {}
for i = 1, 4 do
  ts[i] = tether.thread(function()
    for k = 1, 1000 do
      local held <close> = lock:held() -- `#` and a new key: not one step
      shared[#shared + 1] = k
    end
    return i
  end)
end
for i = 1, 4 do
  local ok, v = ts[i]:join()
  assert(ok and v == i)
end
assert(#shared == 4000)

local ready = tether.event()
local spinner = tether.thread(function() ready:set() while true do end end)
ready:wait()
spinner:cancel()
assert(spinner:join() == false and spinner:status() == "cancelled")

-- a daemon blocked in tether.select when the host finalizes: it leaves Lua
-- without unlinking its records from the sources (no GIL); once it has
-- ended and its last handle goes, the host's own Lua after the finalize
-- collected its coroutine and the records with it, and a set of the event
-- then walked freed memory (here reused by strings of 'A's: a crash;
-- issue 20).  The switch interval keeps the GIL with the daemon until it
-- blocks in the select.
do
  local ev, ready = tether.event(), tether.queue()
  local old = tether.switchinterval()
  tether.switchinterval(10)
  local selector = tether.thread({daemon = true}, function()
    ready:put(1)
    return tether.select({ev})
  end)
  ready:get()
  tether.switchinterval(old)
  HOST_AFTER_FINALIZE = function()
    assert(selector:join() == false) -- it left Lua: waits for its end
    selector = nil
    for _ = 1, 4 do collectgarbage() end
    local filler = {}
    for len = 40, 400, 4 do
      for k = 1, 50 do filler[#filler + 1] = string.rep("A", len - 1) .. k % 10 end
    end
    ev:set()
  end
end

-- a daemon thread left running: the host's finalize stops it; the host's
-- finalize also joins the non-daemon one, and then checks what it left
HOST_CHECK = {}
tether.thread({daemon = true}, function() while true do end end)
tether.thread(function() tether.sleep(0.02) HOST_CHECK.nondaemon = "done" end)

-- a callback whose record outlives the state: the host retains it before
-- lua_close and releases it after, when no Lua is left to free the record
-- with (issue 14 P4; the leak check sees a record never freed)
local kept = tether.callback("i32()", function() return 1 end)
HOST_CHECK.callback = kept:handle()
HOST_CHECK.kept = kept -- (not collected by HOST_AFTER_FINALIZE's collections)

