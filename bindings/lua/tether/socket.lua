-- tether.socket - LuaSocket objects whose blocking calls let the GIL go.
--
--   local socket = require "tether.socket"
--   local c = assert(socket.connect("127.0.0.1", 8080))
--   c:send("hello\n") ; local line, err = c:receive("*l")
--
-- Each TCP or UDP object of LuaSocket (Debian's lua-socket, LuaSocket 3) is
-- wrapped: the real socket is put in non-blocking mode (settimeout(0)), and
-- where LuaSocket would block, the wrapper waits in tether.wait_fd, which
-- releases the GIL (other threads run Lua meanwhile) and is interrupted by
-- t:cancel(), t:raise(v) and Ctrl-C.  connect, accept, receive (every
-- pattern, with a prefix), send (with i, j), receivefrom, sendto, close
-- and settimeout behave as LuaSocket's blocking calls do: the same results,
-- the same error messages ("timeout", "closed", ...), the same partial
-- results.  Every other method (bind, listen, setoption, getsockname,
-- shutdown, ...) is LuaSocket's own, called on the real socket.
--
-- Where it differs: data a receive had read when it was cancelled is not
-- lost: the next receive on the object returns it first; closing an object
-- that another thread waits on wakes that thread (its call answers
-- "closed").  The module's other functions (socket.select, socket.dns,
-- socket.sleep, ...) are LuaSocket's, and hold the GIL.

local socket = require "socket"
local tether = require "tether"

local M = {}
for k, v in pairs(socket) do M[k] = v end
M._TETHER = true

local clock, wait_fd = tether.clock, tether.wait_fd
local huge = math.huge

local Sock = {}
local methods = {}
Sock.__index = function(self, k)
  local m = methods[k]
  if m then return m end
  local raw = rawget(self, "raw")
  local f = raw[k]
  if type(f) ~= "function" then return f end
  -- LuaSocket's own method, on the real socket.
  local fwd = function(s, ...)
    if type(s) == "table" and getmetatable(s) == Sock then s = s.raw end
    return f(s, ...)
  end
  return fwd
end
Sock.__tostring = function(self) return tostring(self.raw) end
Sock.__name = "tether.socket"

local function wrap(raw, err)
  if not raw then return nil, err end
  raw:settimeout(0)
  return setmetatable({raw = raw, block = nil, total = nil, pending = nil,
                       waiters = 0, closed = false}, Sock)
end
M.wrap = wrap

-- The deadline of one operation, from the object's timeouts.
local function start(self)
  if self.total then return clock() + self.total end
  return huge
end

-- Waits for fd readiness; true when ready, false at the object's timeout.
local function wait(self, mode, deadline)
  local t = self.block
  if deadline ~= huge then
    local left = deadline - clock()
    if left <= 0 then return false end
    if not t or left < t then t = left end
  end
  local fd = math.tointeger(self.raw:getfd()) -- LuaSocket gives a float
  if not fd or fd < 0 then return true end -- closed: the call answers "closed"
  self.waiters = self.waiters + 1
  local ok, r = pcall(wait_fd, fd, mode, t)
  self.waiters = self.waiters - 1
  if not ok then
    -- Closed by another thread while waiting: the call answers "closed".
    if self.closed and type(r) == "string" and r:find("wait_fd", 1, true) then
      return true
    end
    error(r, 0) -- cancel, raise, Ctrl-C: as they came
  end
  return r ~= nil
end

function methods:settimeout(value, mode)
  if value ~= nil and type(value) ~= "number" then
    error("bad argument #1 to 'settimeout' (number expected, got " .. type(value) .. ")", 2)
  end
  if value and value < 0 then value = nil end
  mode = mode or "b"
  if mode == "b" or mode == "r" then
    self.block = value
  elseif mode == "t" then
    self.total = value
  else
    error("bad argument #2 to 'settimeout' (invalid timeout mode)", 2)
  end
  return 1
end

function methods:gettimeout()
  return self.block or -1, self.total or -1
end

function methods:connect(host, port)
  local deadline = start(self)
  local ok, err = self.raw:connect(host, port)
  if ok then return ok end
  if err ~= "timeout" then return nil, err end
  while true do
    if not wait(self, "w", deadline) then return nil, "timeout" end
    -- A second connect tells how the first ended.
    ok, err = self.raw:connect(host, port)
    if ok or err == "already connected" then return 1 end
    if err ~= "timeout" and err ~= "Operation already in progress" then
      return nil, err
    end
  end
end

function methods:accept()
  local deadline = start(self)
  while true do
    local c, err = self.raw:accept()
    if c then return wrap(c) end
    if err ~= "timeout" then return nil, err end
    if not wait(self, "r", deadline) then return nil, "timeout" end
  end
end

-- A line already in the data a cancelled receive left ("*l" strips CRs).
local function pending_line(self, pattern, prefix)
  local p = self.pending
  if not p or (pattern ~= "*l" and pattern ~= "l") then return nil end
  local nl = p:find("\n", 1, true)
  if not nl then return nil end
  self.pending = nl < #p and p:sub(nl + 1) or nil
  return (prefix or "") .. p:sub(1, nl - 1):gsub("\r", "")
end

function methods:receive(pattern, prefix)
  pattern = pattern or "*l"
  if prefix ~= nil and type(prefix) ~= "string" then
    prefix = tostring(prefix)
  end
  local line = pending_line(self, pattern, prefix)
  if line then return line end
  local base = (prefix or "") .. (self.pending or "")
  self.pending = nil
  local deadline = start(self)
  local acc = base
  while true do
    local data, err, partial = self.raw:receive(pattern, acc)
    if data then return data end
    if err == "closed" and (pattern == "*a" or pattern == "a") and #partial > #base then
      return partial -- as LuaSocket's: "*a" succeeds if this call got bytes
    end
    if err ~= "timeout" then return nil, err, partial end
    acc = partial
    -- Keep what was read while waiting: a cancel must not lose it.
    local got = acc:sub(#(prefix or "") + 1)
    self.pending = got ~= "" and got or nil
    local ready = wait(self, "r", deadline)
    self.pending = nil
    if not ready then return nil, "timeout", acc end
  end
end

function methods:send(data, i, j)
  local deadline = start(self)
  i = i or 1
  local last = i - 1
  while true do
    local sent, err, lastsent = self.raw:send(data, last + 1, j)
    if sent then return sent end
    if err ~= "timeout" then return nil, err, lastsent end
    last = lastsent
    if not wait(self, "w", deadline) then return nil, "timeout", last end
  end
end

-- UDP: each datagram call either completes or would block.
local function datagram(self, mode, f, ...)
  local deadline = start(self)
  while true do
    local a, b, c = f(self.raw, ...)
    if a or b ~= "timeout" then return a, b, c end
    if not wait(self, mode, deadline) then return nil, "timeout" end
  end
end

function methods:receivefrom(size)
  return datagram(self, "r", self.raw.receivefrom, size)
end

function methods:sendto(data, ip, port)
  return datagram(self, "w", self.raw.sendto, data, ip, port)
end

-- receive on a UDP object takes a size, not a pattern.
local function is_udp(self)
  return tostring(self.raw):match("^udp") ~= nil
end

local tcp_receive, tcp_send = methods.receive, methods.send
function methods:receive(pattern, prefix)
  if is_udp(self) then return datagram(self, "r", self.raw.receive, pattern) end
  return tcp_receive(self, pattern, prefix)
end

function methods:send(data, i, j)
  if is_udp(self) then return datagram(self, "w", self.raw.send, data) end
  return tcp_send(self, data, i, j)
end

function methods:close()
  if self.waiters > 0 then
    -- Wakes the threads waiting on it: their calls answer "closed".
    pcall(self.raw.shutdown, self.raw, "both")
  end
  self.closed = true
  return self.raw:close()
end

function methods:unwrap()
  return self.raw
end

for _, name in ipairs({"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"}) do
  if socket[name] then
    M[name] = function(...) return wrap(socket[name](...)) end
  end
end

function M.bind(host, port, backlog)
  return wrap(socket.bind(host, port, backlog))
end

-- socket.connect(address, port [, locaddr] [, locport] [, family]), as
-- LuaSocket's, with a connect that lets the GIL go.
function M.connect(address, port, laddress, lport, family)
  local raw, err
  if family == "inet6" then raw, err = socket.tcp6()
  elseif family == "inet" then raw, err = socket.tcp4()
  else raw, err = socket.tcp() end
  if not raw then return nil, err end
  local s = wrap(raw)
  if laddress then
    local ok, e = raw:bind(laddress, lport or 0, family)
    if not ok then raw:close() return nil, e end
  end
  local ok, e = s:connect(address, port)
  if not ok then raw:close() return nil, e end
  return s
end

function M.iswrapped(s)
  return getmetatable(s) == Sock
end

return M
