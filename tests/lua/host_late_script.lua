-- For tether_lua_host_late (host_late.c): a daemon thread blocked in a
-- write to a full pipe (whose reader starts reading after 3 s: a write is
-- not interruptible) when the host finalizes the runtime and closes the
-- state; the host lives on after lua_close until the write has returned.
local tether = require "tether"
local started = tether.event()
tether.thread({daemon = true}, function()
  local p = assert(io.popen("sleep 3; cat > /dev/null", "w"))
  p:setvbuf("no")
  started:set()
  p:write(string.rep("x", 1 << 20)) -- the GIL released, the handle busy
end)
assert(started:wait(20))
tether.sleep(0.2) -- usually lets it block in the write; the test needs not
