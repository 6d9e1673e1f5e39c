-- 16 LuaSocket clients (tether.socket), one thread each, against a
-- loopback server that answers each request after 50 ms: the wall time
-- from the first connect until the 16th answer (issue 18: <= 80 ms; with
-- LuaSocket's own blocking calls, which hold the GIL, it is 16 x 50 ms).
-- Needs lua-socket; prints nothing when it is not installed.
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/../../bindings/lua/?.lua;" .. package.path
local tether = require "tether"
if not pcall(require, "socket") then
  io.stderr:write("b_socket: lua-socket is not installed; skipped\n")
  return
end
local socket = require "tether.socket"
local B = require "benchlib"

local rounds = B.count(20)
local clients = 16

local server = assert(socket.bind("127.0.0.1", 0, 64))
local _, port = server:getsockname()
port = tonumber(port)
tether.thread({daemon = true}, function()
  while true do
    local c = server:accept()
    tether.thread({daemon = true}, function()
      local req = c:receive("*l")
      tether.sleep(0.05)
      c:send("answer to " .. tostring(req) .. "\n")
      c:close()
    end)
  end
end)

local function client(i)
  local c = assert(socket.connect("127.0.0.1", port))
  assert(c:send("request " .. i .. "\n"))
  local r = assert(c:receive("*l"))
  c:close()
  return r
end

local ms = {}
for _ = 1, rounds do
  local t0 = tether.clock()
  local ts = {}
  for i = 1, clients do ts[i] = tether.thread(client, i) end
  for i = 1, clients do assert(ts[i]:join()) end
  ms[#ms + 1] = (tether.clock() - t0) * 1e3
end
B.report("lua.socket_16x50ms", "ms", ms, 80)
