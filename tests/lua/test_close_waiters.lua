-- test_close_waiters.lua - a daemon thread blocked in a wait of the module
-- when the Lua state closes leaves that wait without the GIL (finalize
-- detached it): its record on the wait list, which lives on its C stack,
-- must come off the list before it goes, or a finalizer that later walks
-- the list (q:put, c:notify, a file operation) follows a pointer into a
-- dead stack (issue 20; it segfaulted).
--
-- Each case runs a child lua5.4.  The order is made, not waited for: the
-- switch interval is 10 s, so a thread keeps the GIL until it blocks, and
-- the main thread, woken by the daemon's "ready", gets the GIL back only
-- once the daemon sleeps in the wait under test.  Then the main chunk ends;
-- lua_close stops the daemon; a finalizer that runs after that walks the
-- list.  The child prints "walked" from the finalizer and must exit 0.

local T = require "testlib"

local PRELUDE = [[
local tether = require "tether"
tether.switchinterval(10)
local ready = tether.queue()
local function daemon(fn) tether.thread({daemon = true}, fn) ready:get() end
local function at_close(fn)
  -- Made before the module's sentinel of the daemons: finalized after it.
  return setmetatable({}, {__gc = function() fn() io.stdout:write("walked\n") end})
end
]]

local function check(name, code)
  local status, out = T.run_lua(PRELUDE .. code)
  assert(status == 0 and out:find("walked", 1, true),
         name .. ": the child exited " .. tostring(status) .. ":\n" .. out)
end

T.case("queue:get left at close, then a put from a finalizer", function()
  check("get", [[
local q = tether.queue()
G = at_close(function() assert(q:put(1, 0)) end)
daemon(function() ready:put(1) return q:get() end)
]])
end)

T.case("the issue's reproducer: two daemons in get, a put from a finalizer", function()
  check("get2", [[
local q = tether.queue()
G = at_close(function() q:put(1, 0) q:put(2, 0) end)
daemon(function() ready:put(1) return q:get() end)
daemon(function() ready:put(1) return q:get() end)
]])
end)

T.case("queue:put on a full queue left at close, then a get from a finalizer", function()
  check("put", [[
local q = tether.queue(1)
q:put(0)
G = at_close(function() assert(q:get(0) == 0) end)
daemon(function() ready:put(1) return q:put(2) end)
]])
end)

T.case("condition:wait left at close, then notify from a finalizer", function()
  check("condition", [[
local c = tether.condition(tether.lock())
G = at_close(function()
  assert(c:acquire(0), "the lock is free: the daemon's wait released it")
  c:notify_all()
  c:release()
end)
daemon(function()
  c:acquire()
  ready:put(1)
  return c:wait()
end)
]])
end)

T.case("a file handle wait left at close, then I/O from a finalizer", function()
  local fifo = os.tmpname()
  os.remove(fifo)
  assert(os.execute("mkfifo " .. fifo))
  -- The first daemon blocks reading the FIFO (opened for both ends, so no
  -- EOF); the second waits for the handle the first holds.
  local ok, err = pcall(check, "io", string.format([[
local f = assert(io.open(%q, "r+"))
G = at_close(function() io.stdout:write("") io.stdout:flush() end)
daemon(function() ready:put(1) return f:read("l") end)
daemon(function() ready:put(1) return f:read("l") end)
]], fifo))
  os.remove(fifo)
  assert(ok, err)
end)

T.case("a channel recv and send left as their interpreter closes touch no Lua memory", function()
  -- A daemon of an isolated interpreter blocked in ch:recv (then in a
  -- ch:send on a full channel) when i:close() destroys the interpreter
  -- wrote the message's slot on the Lua stack after its wait answered
  -- EFINALIZING, without the GIL, while the closing thread freed that
  -- memory with the state (ThreadSanitizer: data race in channel_recv).
  -- TETHER_DELAY holds the woken waiter back, so that the close runs
  -- first; the sanitizer builds report what the dev build cannot see.
  for _, op in ipairs({"recv", "send"}) do
    local status, out = T.run_lua([[
local tether = require "tether"
local i = tether.interp()
local ch, ready = tether.channel(1), tether.channel()
if "]] .. op .. [[" == "send" then ch:send(0) end
local t = i:thread({daemon = true}, function(op, ch, ready)
  ready:send(1)
  if op == "recv" then return ch:recv() end
  return ch:send({ch})
end, "]] .. op .. [[", ch, ready)
assert(ready:recv() == 1)
assert(i:close() == true)
assert(t:join(20) == false)
io.stdout:write("closed\n")
]], "TETHER_DELAY=wait.woken:300000")
    assert(status == 0 and out:find("closed", 1, true) and not out:find("Sanitizer", 1, true),
           op .. ": the child exited " .. tostring(status) .. ":\n" .. out)
  end
end)

T.done()
