-- The end of a script: non-daemon threads are joined, daemon threads are
-- stopped without touching the closed state.  Each case runs a child
-- lua5.4 and looks at what it printed and how it exited.
local T = require "testlib"

-- Runs `code` (after a require of tether) and returns its status and output.
local function child(code)
  return T.run_lua('local tether = require "tether"\n' .. code)
end

T.case("a script ending with running non-daemon threads waits for them", function()
  local status, out = child([[
    local go = tether.event()
    for i = 1, 3 do
      tether.thread(function() go:wait() tether.sleep(0.01 * i) print("worker " .. i .. " done") end)
    end
    print("main ends")
    go:set() -- the workers run on after the last line
  ]])
  assert(status == 0, out)
  local m = out:find("main ends", 1, true)
  for i = 1, 3 do
    local w = out:find("worker " .. i .. " done", 1, true)
    assert(m and w and w > m, out)
  end
end)

T.case("threads started while the script's threads are joined are joined too", function()
  local status, out = child([[
    tether.thread(function()
      tether.sleep(0.02)
      tether.thread(function() tether.sleep(0.02) print("grandchild done") end)
    end)
  ]])
  assert(status == 0 and out:find("grandchild done", 1, true), out)
end)

T.case("a busy daemon thread is stopped at exit", function()
  local status, out = child([[
    local go = tether.event()
    tether.thread({daemon = true}, function() go:set() while true do end end)
    go:wait()
    print("main ends")
  ]])
  assert(status == 0 and out:find("main ends", 1, true), out)
end)

T.case("daemon threads blocked in waits are stopped at exit", function()
  local status, out = child([[
    local e, l, q, c = tether.event(), tether.lock(), tether.queue(), tether.condition()
    l:acquire()
    local n = 0
    local function started() n = n + 1 end
    tether.thread({daemon = true}, function() started() e:wait() end)
    tether.thread({daemon = true}, function() started() l:acquire() end)
    tether.thread({daemon = true}, function() started() q:get() end)
    tether.thread({daemon = true}, function() started() tether.sleep(1e6) end)
    tether.thread({daemon = true}, function()
      started()
      local h <close> = c:held()
      c:wait()
    end)
    while n < 5 do tether.sleep(0.001) end
    print("main ends")
  ]])
  assert(status == 0 and out:find("main ends", 1, true), out)
end)

T.case("a daemon busy inside a coroutine is stopped at exit", function()
  local status, out = child([[
    local go = tether.event()
    tether.thread({daemon = true}, function()
      coroutine.wrap(function() go:set() while true do end end)()
    end)
    go:wait()
    print("main ends")
  ]])
  assert(status == 0 and out:find("main ends", 1, true), out)
end)

T.case("a non-daemon thread may use locks and queues while it is joined", function()
  local status, out = child([[
    local q, l = tether.queue(), tether.lock()
    tether.thread(function()
      for i = 1, 100 do local h <close> = l:held() q:put(i) end
      local sum = 0
      for i = 1, 100 do sum = sum + q:get() end
      print("sum " .. sum)
    end)
  ]])
  assert(status == 0 and out:find("sum 5050", 1, true), out)
end)

T.case("os.exit(code, true) joins too", function()
  local status, out = child([[
    tether.thread(function() tether.sleep(0.05) print("joined before exit") end)
    os.exit(3, true)
  ]])
  assert(status == 3 and out:find("joined before exit", 1, true), out)
end)

T.case("os.exit(code, true) from a thread, with daemon threads alive", function()
  -- a thread cannot finalize the runtime, so nothing tells the daemons to
  -- leave; closing once waited the whole reaping timeout (2 s) for them.
  -- (Only the time showed it: this checks that the exit stays clean.)
  local status, out = child([[
    local e = tether.event()
    tether.thread({daemon = true}, function() e:wait() end)
    tether.thread({daemon = true}, function() local n = 0 while true do n = n + 1 end end)
    tether.thread(function() tether.sleep(0.01) print("exiting") os.exit(3, true) end):join()
  ]])
  assert(status == 3 and out:find("exiting", 1, true), out)
  assert(not out:find("tether:", 1, true), out)
end)

T.case("an error in the main chunk still joins the threads", function()
  local status, out = child([[
    tether.thread(function() tether.sleep(0.05) print("worker finished") end)
    error("main failed")
  ]])
  assert(status == 1, out)
  assert(out:find("main failed", 1, true) and out:find("worker finished", 1, true), out)
end)

T.case("many daemon threads of every kind at exit", function()
  local status, out = child([[
    local e = tether.event()
    for i = 1, 6 do
      tether.thread({daemon = true}, function()
        if i % 2 == 0 then while true do end else e:wait() end
      end)
    end
    tether.sleep(0.01)
    print("main ends")
  ]])
  assert(status == 0 and out:find("main ends", 1, true), out)
end)

T.case("os.exit(code, true) from a thread stops the main thread's Lua", function()
  -- lua_close runs on the main Lua thread (the state's own), so the
  -- script's main chunk must not run on beside it: it once did whenever
  -- closing handed the GIL over (joining the non-daemon threads), and an
  -- error it raised then jumped into the closing thread's stack (glibc:
  -- "longjmp causes uninitialized stack frame"). Here the main chunk waits
  -- for the close to start (a finalizer of the closing thread's sets
  -- `closing`); a helper lets the last non-daemon thread end once the main
  -- chunk said it ran, or after a failsafe when it is stopped as it must be.
  local status, out = child([[
    local closing, main_ran, go = tether.event(), tether.event(), tether.event()
    local d = tether.thread({daemon = true}, function()
      closing:wait() main_ran:wait(2) go:set()
    end)
    -- Ends after the daemon thread: one still running when the close reaps
    -- the threads (without waiting: os.exit from a thread cannot finalize)
    -- keeps the state's memory for good, which LeakSanitizer reports.
    tether.thread(function() go:wait() d:join() end)
    tether.thread(function()
      setmetatable({}, {__gc = function() closing:set() end})
      os.exit(3, true)
    end)
    closing:wait()
    print("main chunk ran during the close")
    main_ran:set()
    error("an error in the main chunk while the state closes")
  ]])
  assert(status == 3, "status " .. tostring(status) .. ": " .. out)
  assert(not out:find("main chunk ran", 1, true), out)
end)

T.done()
