-- tether.socket: LuaSocket (Debian's lua-socket) objects whose blocking
-- calls release the GIL.  Loopback only.  No timing is asserted:
-- parallelism shows as a server that answers only once all its clients
-- are connected and waiting, which cannot happen if a waiting client
-- held the GIL.
local T = require "testlib"
local tether = require "tether"
if not pcall(require, "socket") then
  print("SKIP: lua-socket (LuaSocket) is not installed")
  os.exit(77)
end
local socket = require "tether.socket"
local raw_socket = require "socket"

-- A listening server on an ephemeral loopback port.
local function listen()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  return s, tonumber(port)
end

T.case("the module wraps LuaSocket's objects", function()
  local s, port = listen()
  assert(socket.iswrapped(s))
  assert(tostring(s):match("^tcp{server}"), tostring(s))
  assert(s:getfd() >= 0)
  assert(s:settimeout(1) == 1)
  local b, t = s:gettimeout()
  assert(b == 1 and t == -1)
  s:close()
  assert(port > 0)
  T.raises("number expected", s.settimeout, s, "x")
end)

T.case("an echo server thread and 16 client threads", function()
  local server, port = listen()
  local handlers = {}
  local srv = tether.thread(function()
    for i = 1, 16 do
      local c = assert(server:accept())
      handlers[i] = tether.thread(function()
        while true do
          local line, err = c:receive("*l")
          if not line then assert(err == "closed", err) break end
          assert(c:send(line .. "\n"))
        end
        c:close()
      end)
    end
  end)
  local clients = {}
  for i = 1, 16 do
    clients[i] = tether.thread(function()
      local c = assert(socket.connect("127.0.0.1", port))
      for k = 1, 5 do
        local msg = ("client %d line %d"):format(i, k)
        assert(c:send(msg .. "\n") == #msg + 1)
        local back = assert(c:receive("*l"))
        assert(back == msg, back)
      end
      c:close()
      return true
    end)
  end
  for i = 1, 16 do assert(clients[i]:join(T.LIMIT * 3)) end
  assert(srv:join(T.LIMIT))
  for i = 1, 16 do assert(handlers[i]:join(T.LIMIT)) end
  server:close()
end)

T.case("a server that answers after 50 ms serves 16 clients in parallel", function()
  local server, port = listen()
  local n, all = 0, tether.event()
  local srv = tether.thread(function()
    local hs = {}
    for i = 1, 16 do
      local c = assert(server:accept())
      hs[i] = tether.thread(function()
        local req = assert(c:receive("*l"))
        n = n + 1
        if n == 16 then all:set() end
        -- answers only once all 16 are waiting for their answers
        local together = all:wait(T.LIMIT)
        tether.sleep(0.05)
        c:send((together and "together " or "alone ") .. req .. "\n")
        c:close()
      end)
    end
    for i = 1, 16 do hs[i]:join() end
  end)
  local ts = {}
  for i = 1, 16 do
    ts[i] = tether.thread(function()
      local c = assert(socket.connect("127.0.0.1", port))
      c:send("req" .. i .. "\n")
      local r = assert(c:receive("*l"))
      c:close()
      return r
    end)
  end
  for i = 1, 16 do
    local ok, r = ts[i]:join(T.LIMIT * 3)
    assert(ok and r == "together req" .. i, tostring(r))
  end
  assert(srv:join(T.LIMIT))
  server:close()
end)

-- A connected pair: the client (wrapped) and the server's end (wrapped).
local function pair()
  local server, port = listen()
  local c = assert(socket.connect("127.0.0.1", port))
  local s = assert(server:accept())
  server:close()
  return c, s
end

T.case("cancel reaches a thread blocked in receive, and keeps what was read", function()
  local c, s = pair()
  assert(s:send("par"))
  local t = tether.thread(function() return c:receive("*l") end)
  T.wait_for(function() return c.waiters == 1 end, "the receive to wait")
  T.wait_for(function() return c.pending == "par" end, "the partial line")
  t:cancel()
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(s:send("tial\nnext\n"))
  c:settimeout(T.LIMIT)
  assert(c:receive("*l") == "partial")
  assert(c:receive("*l") == "next")
  c:close() s:close()
end)

T.case("raise reaches a thread blocked in accept and in send", function()
  local server = listen()
  local t = tether.thread(function() return server:accept() end)
  T.wait_for(function() return server.waiters == 1 end, "accept to wait")
  t:raise("stop accepting")
  local ok, err = t:join(T.LIMIT)
  assert(ok == false and err == "stop accepting", tostring(err))
  server:close()
  local c, s = pair()
  local big = string.rep("x", 1 << 20)
  local t2 = tether.thread(function()
    while true do assert(c:send(big)) end -- nobody reads: send waits
  end)
  T.wait_for(function() return c.waiters == 1 end, "send to wait")
  t2:raise("stop sending")
  ok, err = t2:join(T.LIMIT)
  assert(ok == false and err == "stop sending", tostring(err))
  c:close() s:close()
end)

T.case("a peer that closes mid-message", function()
  local c, s = pair()
  s:send("abc")
  s:close()
  local data, err, partial = c:receive("*l")
  assert(data == nil and err == "closed" and partial == "abc", tostring(err))
  c:close()
  c, s = pair()
  s:send("abc")
  local t = tether.thread(function() return c:receive(10) end)
  T.wait_for(function() return c.waiters == 1 end, "the receive to wait")
  s:close()
  local ok, d, e, p = t:join(T.LIMIT)
  assert(ok and d == nil and e == "closed" and p == "abc", tostring(e))
  c:close()
  c, s = pair()
  s:send("all of it")
  s:close()
  assert(c:receive("*a") == "all of it")
  c:close()
end)

T.case("closing an object another thread waits on wakes it", function()
  local c, s = pair()
  local t = tether.thread(function() return c:receive("*l") end)
  T.wait_for(function() return c.waiters == 1 end, "the receive to wait")
  c:close()
  local ok, d, e = t:join(T.LIMIT)
  assert(ok and d == nil and e == "closed", tostring(e))
  s:close()
end)

T.case("timeouts as LuaSocket's: per call and total", function()
  local c, s = pair()
  c:settimeout(0.02)
  local d, e, p = c:receive("*l")
  assert(d == nil and e == "timeout" and p == "", tostring(e))
  s:send("half")
  d, e, p = c:receive(10)
  assert(d == nil and e == "timeout" and p == "half", tostring(p))
  c:settimeout(nil)
  c:settimeout(0.02, "t")
  d, e, p = c:receive("*l", "pre:")
  assert(d == nil and e == "timeout" and p == "pre:", tostring(p))
  c:settimeout(-1, "t")
  local server = listen()
  server:settimeout(0.01)
  local a, ae = server:accept()
  assert(a == nil and ae == "timeout")
  server:close()
  c:close() s:close()
end)

T.case("receive gives the same results as LuaSocket's blocking receive", function()
  local stream = "line one\r\nline two\nabcdefgh\nlast line\r\nthe rest, and no newline"
  -- LuaSocket 3.0's patterns: "*l", "*a" and a count, each with a prefix
  local script = {{"*l"}, {"*l"}, {3}, {"*l", "pre-"}, {5, "xy"}, {2, "four"}, {"*a"},
                  {"*l"}, {4}, {"*a", "p"}}
  local function run(wrapper)
    local server, port = listen()
    -- LuaSocket's own blocking receive holds the GIL: its reference run
    -- gets the whole stream at once; the wrapper's gets it in pieces, so
    -- that its calls wait midway.
    local feeder = tether.thread(function(p)
      local f = assert(raw_socket.connect("127.0.0.1", p))
      for i = 1, #stream, wrapper and 7 or #stream do
        f:send(stream:sub(i, i + (wrapper and 6 or #stream)))
        if wrapper then tether.sleep(0.002) end
      end
      f:close()
    end, tonumber(port))
    local c = assert(server:accept())
    if not wrapper then -- LuaSocket's own object, blocking again
      assert(feeder:join(T.LIMIT))
      c = c:unwrap()
      c:settimeout(T.LIMIT)
    end
    local out = {}
    for _, call in ipairs(script) do
      local a, b, p = c:receive(table.unpack(call))
      out[#out + 1] = ("%s|%s|%s"):format(tostring(a), tostring(b), tostring(p))
    end
    c:close() server:close()
    assert(feeder:join(T.LIMIT))
    return table.concat(out, "\n")
  end
  local want, got = run(false), run(true)
  assert(want == got, "LuaSocket:\n" .. want .. "\ntether.socket:\n" .. got)
end)

T.case("a pattern LuaSocket refuses is refused the same way", function()
  local c, s = pair()
  T.raises("invalid receive pattern", c.receive, c, "L")
  c:close() s:close()
end)

T.case("send with i and j, and a large send to a slow reader", function()
  local c, s = pair()
  assert(c:send("0123456789", 3, 5) == 5)
  assert(s:receive(3) == "234")
  local big = string.rep("0123456789abcdef", 1 << 16) -- 1 MiB
  local reader = tether.thread(function() return s:receive(#big) end)
  assert(c:send(big) == #big)
  local ok, got = reader:join(T.LIMIT)
  assert(ok and got == big)
  c:close() s:close()
end)

T.case("UDP: receivefrom waits without the GIL; sendto and receive", function()
  local srv = assert(socket.udp())
  assert(srv:setsockname("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local t = tether.thread(function() return srv:receivefrom() end)
  T.wait_for(function() return srv.waiters == 1 end, "receivefrom to wait")
  local cli = assert(socket.udp())
  assert(cli:sendto("ping", "127.0.0.1", tonumber(port)))
  local ok, data, ip, cport = t:join(T.LIMIT)
  assert(ok and data == "ping" and ip == "127.0.0.1", tostring(data))
  assert(srv:sendto("pong", ip, cport))
  assert(cli:receive() == "pong")
  cli:settimeout(0.01)
  local d, e = cli:receive()
  assert(d == nil and e == "timeout")
  cli:close() srv:close()
end)

T.case("connect errors are LuaSocket's", function()
  local server, port = listen()
  server:close()
  local c, err = socket.connect("127.0.0.1", port)
  assert(c == nil and err == "connection refused", tostring(err))
  local s = socket.tcp()
  local ok, e = s:connect("127.0.0.1", port)
  assert(ok == nil and e == "connection refused", tostring(e))
  s:close()
end)

T.done()
