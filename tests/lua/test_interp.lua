-- Isolated interpreters and channels: tether.interp, i:thread, i:close,
-- tether.channel, and the copying of values between Lua states.
local tether = require "tether"
local T = require "testlib"

local L = T.LIMIT

-- Sends v through a channel (in the same state) and returns the copy.
local function roundtrip(v)
  local ch = tether.channel()
  assert(ch:send(v, L))
  local c, why = ch:recv(L)
  assert(why == nil, why)
  return c
end

T.case("scalars keep their type and subtype", function()
  local ch = tether.channel()
  for _, v in ipairs({true, false, 0, -7, math.maxinteger, math.mininteger,
                      1.5, -0.25, 3.0, math.huge, -math.huge, "", "a\0b",
                      string.rep("x", 100000)}) do
    local c = roundtrip(v)
    assert(c == v and math.type(c) == math.type(v), tostring(v))
  end
  assert(ch:send(nil, L))
  local v, why = ch:recv(L)
  assert(v == nil and why == nil)
  local nan = roundtrip(0 / 0)
  assert(nan ~= nan)
  assert(math.type(roundtrip(2^53)) == "float")
end)

T.case("tables: deep, cyclic, shared subtables, table keys", function()
  local shared = {1, 2, 3}
  local key = {k = true}
  local t = {a = {b = {c = "deep"}}, s1 = shared, s2 = shared, [key] = "v",
             list = {10, 20, 30, n = 3}, [1.5] = "f", [2] = "i"}
  t.self = t
  t.a.up = t
  local c = roundtrip(t)
  assert(c ~= t and c.self == c and c.a.up == c)
  assert(c.a.b.c == "deep")
  assert(c.s1 == c.s2 and c.s1 ~= shared and #c.s1 == 3 and c.s1[3] == 3)
  assert(c.list[2] == 20 and c.list.n == 3)
  assert(c[1.5] == "f" and c[2] == "i")
  local k, v
  for kk, vv in pairs(c) do
    if type(kk) == "table" then k, v = kk, vv end
  end
  assert(k and k.k == true and v == "v")
end)

T.case("nesting is bounded alike for keys and values, at both ends", function()
  -- n tables, each the value (or the key) of the next one out.
  local function chain(n, as_key)
    local t = {}
    for _ = 2, n do
      local outer = {}
      if as_key then outer[t] = true else outer.v = t end
      t = outer
    end
    return t
  end
  local ch = tether.channel()
  for _, as_key in ipairs({false, true}) do
    local c = roundtrip(chain(200, as_key))
    for _ = 2, 200 do
      c = as_key and next(c) or c.v
    end
    assert(type(c) == "table" and next(c) == nil)
    -- Refused by the sender: the receiver would find the message corrupt.
    T.raises("tables nested too deeply", ch.send, ch, chain(201, as_key))
    -- Deep enough to overflow the C stack if the encoder recursed on.
    T.raises("tables nested too deeply", ch.send, ch, chain(100000, as_key))
  end
  assert(ch:count() == 0)
end)

T.case("channels and tether.Cancelled travel", function()
  local inner = tether.channel()
  local c = roundtrip({ch = inner, both = {inner, inner}})
  assert(c.ch == inner and c.both[1] == inner)
  assert(c.ch:send("through the copy", L))
  assert(inner:recv(L) == "through the copy")
  assert(roundtrip(tether.Cancelled) == tether.Cancelled)
  -- (printed "tether.channel: 0x0x...": %p has its own 0x)
  assert(tostring(inner):find("^tether%.channel: 0x%x+$"), tostring(inner))
end)

T.case("what cannot be copied is an error naming where it is", function()
  local ch = tether.channel()
  T.raises("cannot copy a function at value.a.b[3]", ch.send, ch,
           {a = {b = {1, 2, print}}})
  T.raises("cannot copy a FILE* at value.f", ch.send, ch, {f = io.stdout})
  T.raises("cannot copy a tether.lock at value", ch.send, ch, tether.lock())
  T.raises("cannot copy a thread at value[\"a key\"]", ch.send, ch,
           {["a key"] = coroutine.create(print)})
  T.raises("cannot copy a function as a key at value.t", ch.send, ch,
           {t = {[print] = 1}})
  assert(ch:count() == 0, "a failed send queued something")
end)

T.case("i:thread copies the function and its arguments; join copies back", function()
  local i = tether.interp()
  local t = i:thread(function(a, b, tab)
    local tt = require "tether" -- the module loads in the new state
    assert(type(tt.thread) == "function")
    tab.seen = true
    return a + b, math.type(a + b), tab, nil, "last"
  end, 2, 3, {x = 1})
  local ok, sum, sub, tab, none, last = t:join(L)
  assert(ok == true and sum == 5 and sub == "integer")
  assert(tab.x == 1 and tab.seen == true and none == nil and last == "last")
  assert(t:status() == "done" and not t:alive())
  local ok2, err, tb = i:thread(function() error({code = 7}) end):join(L)
  assert(ok2 == false and err.code == 7 and type(tb) == "string")
  local ok3, err3 = i:thread(function() return print end):join(L)
  assert(ok3 == false and err3:find("cannot copy a function at result #1", 1, true))
  assert(i:close(L) == true)
  assert(i:close() == true, "closing twice")
  T.raises("closed interpreter", i.thread, i, function() end)
end)

T.case("a load reader's error comes back from load as it was raised", function()
  -- Lua's protected parser runs the running message handler; the one of an
  -- interpreter's thread once turned the error into a table
  local i = tether.interp()
  local ok, t1, m1, t2, m2 = i:thread(function()
    local f1, e1 = load(function() error("hhi") end)
    local f2, e2 = load(function() return {} end)
    return type(e1), e1, type(e2), e2
  end):join(L)
  assert(ok, tostring(t1))
  assert(t1 == "string" and m1:find("hhi", 1, true), tostring(m1))
  assert(t2 == "string" and m2:find("reader function must return a string", 1, true), tostring(m2))
  local ok2, err, tb = i:thread(function() error("later") end):join(L)
  assert(ok2 == false and err:find("later", 1, true) and tb:find("traceback", 1, true))
  assert(i:close(L))
end)

T.case("each argument and result keeps its own cycles and shared tables", function()
  -- Several values in one encoding: a back reference inside the second
  -- one once named a table of the first.
  local function cyclic(tag)
    local t = {tag = tag}
    t.self, t.pair = t, {t, t}
    return t
  end
  local i = tether.interp()
  local x = cyclic("a")
  local th = i:thread(function(a, b, c)
    local function same(t, tag)
      return t.tag == tag and t.self == t and t.pair[1] == t and t.pair[2] == t
    end
    assert(same(a, "a") and same(b, "b") and same(c, "a"), "arguments")
    assert(c ~= a, "a table passed twice arrives as two copies")
    return b, a
  end, x, cyclic("b"), x)
  local ok, b, a = th:join(L)
  assert(ok, b)
  for t, tag in pairs({[a] = "a", [b] = "b"}) do
    assert(t.tag == tag and t.self == t and t.pair[1] == t and t.pair[2] == t,
           "result " .. tag)
  end
  assert(i:close(L))
end)

T.case("i:thread takes thread options; handles have name, ident, daemon", function()
  local i = tether.interp()
  local ready, go = tether.channel(), tether.channel()
  local t = i:thread({name = "iworker", daemon = true}, function(ready, go)
    local tether = require "tether"
    local me = tether.current()
    ready:send({me.name, me.ident, me.daemon})
    go:recv()
  end, ready, go)
  local seen = ready:recv()
  assert(t.name == "iworker" and seen[1] == "iworker", t.name)
  assert(math.type(t.ident) == "integer" and t.ident == seen[2])
  assert(t.daemon == true and seen[3] == true)
  assert(tostring(t) == "tether.ithread: iworker (running)", tostring(t))
  assert(t.join and t.nosuchfield == nil)
  go:send(true)
  assert(t:join(L))
  local d = i:thread(function() end)
  assert(d.daemon == false and d.name:find("^Thread%-") and math.type(d.ident) == "integer")
  assert(d:join(L))
  assert(i:close(L))
  assert(t.name == "iworker" and t.ident == seen[2], "fields outlive the interpreter")
  T.raises("unknown option 'nme'", i.thread, tether.interp(), {nme = "x"}, function() end)
end)

T.case("channels inside messages nobody receives are released", function()
  -- TETHER_DEBUG=1 lists every handle still open when the runtime
  -- finalizes: a channel reference lost with a message would show there.
  local status, out = T.run_lua([[
    local tether = require "tether"
    local outer, inner, taken = tether.channel(), tether.channel(), tether.channel()
    inner:send("queued in inner")
    outer:send({reply = inner, again = {inner}, more = taken}) -- never received
    local i = tether.interp()
    local t = i:thread(function(outer, taken)
      outer:send(taken)                 -- sent from another interpreter
      local q = require("tether").channel()
      outer:send(q)                     -- a channel that only messages hold
    end, outer, taken)
    assert(t:join())
    local echo = tether.channel()
    echo:send(taken)
    assert(echo:recv() == taken)        -- received: its reference goes with it
    outer, inner, taken, echo, t = nil
    collectgarbage()
    assert(i:close())
    print("done")
  ]], "TETHER_DEBUG=1")
  assert(status == 0 and out:find("done"), status .. ": " .. out)
  assert(not out:find("still open"), out)
end)

T.case("a send stopped by the close of its interpreter releases the channels of its message", function()
  -- The daemon blocks in full:send(payload) until i:close() stops it with
  -- TETHER_EFINALIZING, its message not queued.  The message's reference
  -- to `payload` is the message's then, and goes with it through the
  -- channel's discard; before, nobody released it, and TETHER_DEBUG=1
  -- listed `payload` as still open when the runtime finalized.
  local status, out = T.run_lua([[
    local tether = require "tether"
    local full, ready, payload = tether.channel(1), tether.channel(), tether.channel()
    assert(full:send("fills it"))
    local i = tether.interp()
    i:thread({daemon = true}, function(full, ready, payload)
      ready:send(true)
      full:send(payload)                -- waits until the close stops it
    end, full, ready, payload)
    assert(ready:recv())
    tether.sleep(0.05)                  -- (either way it is stopped unqueued)
    assert(i:close())
    assert(full:count() == 1)           -- "fills it" alone
    print(("payload 0x%016x"):format(tonumber(tostring(payload):match("0x(%x+)"), 16)))
    full, ready, payload = nil
    collectgarbage()
    print("done")
  ]], "TETHER_DEBUG=1")
  assert(status == 0 and out:find("done"), status .. ": " .. out)
  local payload = out:match("payload (0x%x+)")
  assert(payload and not out:find(payload .. " still open", 1, true), out)
  assert(not out:find("still open"), out)
end)

T.case("functions with upvalues and C functions cannot be copied", function()
  local i = tether.interp()
  local x = 1
  T.raises("bad argument #1 to 'thread' (function with upvalues cannot be copied: upvalue 'x')",
           function() return i:thread(function() return x end) end)
  T.raises("bad argument #1 to 'thread' (a C function cannot be copied)",
           function() return i:thread(print) end)
  T.raises("cannot copy a function at argument #3", function()
    return i:thread(function() end, 1, print)
  end)
  -- _ENV is the only upvalue allowed: it becomes the new state's globals.
  marker = "creator's"
  local ok, v = i:thread(function() return marker end):join(L)
  assert(ok and v == nil)
  marker = nil
  assert(i:close(L))
end)

T.case("channel ping-pong between interpreters", function()
  local a, b = tether.interp(), tether.interp()
  local ab, ba, done = tether.channel(1), tether.channel(1), tether.channel()
  local N = 2000
  local pinger = a:thread(function(out, back, n)
    for k = 1, n do
      assert(out:send(k))
      assert(back:recv() == k + 1)
    end
    return "pinged"
  end, ab, ba, N)
  local ponger = b:thread(function(inp, out, n, done)
    for _ = 1, n do assert(out:send(inp:recv() + 1)) end
    done:send({count = n})
    return "ponged"
  end, ab, ba, N, done)
  assert(select(2, pinger:join(L)) == "pinged")
  assert(select(2, ponger:join(L)) == "ponged")
  assert(done:recv(L).count == N)
  assert(a:close(L) and b:close(L))
end)

-- Starts in interpreter i a thread that says it is ready and then blocks in
-- recv on ch until that returns.
local function blocked_reader(i, ch)
  local ready = tether.channel()
  local t = i:thread(function(ready, ch)
    ready:send(true)
    return ch:recv()
  end, ready, ch)
  assert(ready:recv(L))
  return t
end

T.case("cancel reaches a thread of another interpreter blocked in recv", function()
  local i = tether.interp()
  local ch = tether.channel()
  local t = blocked_reader(i, ch)
  assert(t:cancel() == true)
  local ok, err, tb = t:join(L)
  assert(ok == false and err == tether.Cancelled, tostring(err))
  assert(t:status() == "cancelled" and type(tb) == "string")
  local t2 = blocked_reader(i, ch)
  assert(t2:raise({why = "copied"}))
  local ok2, err2 = t2:join(L)
  assert(ok2 == false and err2.why == "copied")
  assert(t2:status() == "error")
  assert(i:close(L))
end)

T.case("closing an interpreter waits for threads blocked on a channel", function()
  local i = tether.interp()
  local ch = tether.channel()
  local ts = {blocked_reader(i, ch), blocked_reader(i, ch)}
  local closer = tether.thread(function() ch:close() end)
  assert(i:close(L) == true) -- returns once the close woke both readers
  for _, t in ipairs(ts) do
    local ok, v, why = t:join(L)
    assert(ok == true and v == nil and why == "closed")
  end
  assert(closer:join(L))
  local sent, why = ch:send(1)
  assert(sent == false and why == "closed")
end)

T.case("closing with a timeout abandons a state its threads may still use", function()
  local status, out = T.run_lua([[
    local tether = require "tether"
    local i = tether.interp()
    local ch, ready = tether.channel(), tether.channel()
    local t = i:thread(function(ch, ready) ready:send(1); return ch:recv() end, ch, ready)
    ready:recv()
    local r, why = i:close(0.05)
    print("close", r, why)
    local ok, err = t:join()
    print("join", ok, err)
    print("alive", t:alive())
  ]])
  assert(out:find("close\tnil\ttimeout", 1, true), out)
  assert(out:find("join\tfalse\ttether: the interpreter was closed", 1, true), out)
  assert(out:find("alive\tfalse", 1, true), out)
  -- The abandoned Lua state is leaked on purpose, which LeakSanitizer
  -- reports: only the output is checked under a sanitizer.
  assert(os.getenv("TETHER_CHILD_PRELOAD") or status == 0, out)
end)

T.case("several interpreters at once", function()
  local is, ts = {}, {}
  local gate = tether.channel()
  for k = 1, 4 do
    is[k] = tether.interp()
    ts[k] = is[k]:thread(function(gate, k)
      local x = 0
      for n = 1, 10000 do x = x + n end
      gate:send(k)
      return x
    end, gate, k)
  end
  local seen = 0
  for _ = 1, 4 do seen = seen + gate:recv(L) end
  assert(seen == 10)
  for k = 1, 4 do
    local ok, x = ts[k]:join(L)
    assert(ok and x == 50005000)
    assert(is[k]:close(L))
  end
end)

T.case("each interpreter has its own GIL", function()
  -- A thread of `a` spins, never waiting, until a thread of `b` sends.  With
  -- one GIL for both, b's thread could only run by taking it from a's
  -- spinner; with a GIL each, nobody ever takes a's GIL meanwhile.
  local a, b = tether.interp(), tether.interp()
  local begin, go = tether.channel(), tether.channel()
  local spinner = a:thread(function(begin, go)
    local tether = require "tether"
    begin:recv() -- the creator has let go of a's GIL by now
    local s0 = tether.gil_stats()
    while go:count() == 0 do end
    local s1 = tether.gil_stats()
    return s1.acquisitions - s0.acquisitions, s1.forced_drops - s0.forced_drops
  end, begin, go)
  assert(begin:send(true))
  assert(b:thread(function(go) go:send(1) end, go):join(L))
  local ok, taken, forced = spinner:join(L)
  assert(ok and taken == 0 and forced == 0,
         string.format("a's GIL was taken %s times, forced %s times", taken, forced))
  assert(a:close(L) and b:close(L))
end)

T.done()
