-- lt_executor.lua - tether.executor, tether.wait and tether.as_completed,
-- compiled into tether.so (embed.cmake) and run once by lt_open_future
-- with the module table and a private table of lt_future.c's functions:
-- new(fn, ...) a pending future, run(f [, runner]) runs one on the
-- calling thread, first_done(futures [, timeout]) (lt_select.c),
-- check_copy(v), dump(fn), remote_mt (an error from another interpreter:
-- {err, traceback}) and future_mt.
--
-- An executor is a queue of futures and its workers.  A worker of a
-- thread executor is a tether.thread that gets futures from the queue and
-- runs each with run(f).  A worker of an interp executor (interp = true)
-- is a tether.thread of this state too, which owns an isolated
-- interpreter running a loop (remote_loop) and is its proxy: it sends the
-- task's bytecode and arguments there over a channel and waits for the
-- reply, so that futures, callbacks and cancellation stay in this state.
-- Shutdown puts one STOP per worker after the tasks, so queued tasks run
-- first unless cancelled.

-- Runs in the isolated interpreter: bytecode and arguments in, one reply
-- out per task.  No upvalues but _ENV (it is copied as bytecode): it comes before every
-- local of this chunk.
local function remote_loop(req, rep)
  local tether = require "tether"
  while true do
    local job = req:recv()
    if job == nil then return end
    local tb
    local function handler(e)
      tb = debug.traceback(nil, 2)
      return e
    end
    local fn = load(job.code, "=task", "b")
    local res = table.pack(xpcall(fn, handler, table.unpack(job.args, 1, job.args.n)))
    local reply
    if res[1] then
      reply = {ok = true, n = res.n - 1, table.unpack(res, 2, res.n)}
    elseif rawequal(res[2], tether.Cancelled) then
      reply = {cancelled = true}
    else
      reply = {ok = false, err = res[2], tb = tb or ""}
    end
    local ok, why = pcall(rep.send, rep, reply)
    if not ok and not res[1] and not rawequal(why, tether.Cancelled) then
      -- An error value the codec cannot copy arrives as its tostring, as
      -- from an I:thread's join; one whose __tostring fails as a
      -- placeholder (an error here would end this loop: the worker would
      -- wait for a reply forever).
      local sok, s = pcall(tostring, reply.err)
      reply.err = sok and type(s) == "string" and s
                  or "(error object is a " .. type(reply.err) .. " value)"
      ok, why = pcall(rep.send, rep, reply)
    end
    if not ok then
      if rawequal(why, tether.Cancelled) then error(why, 0) end
      rep:send({ok = false, err = "results: " .. tostring(why), tb = tb or ""})
    end
  end
end

local tether, P = ...

local new_future, run, first_done = P.new, P.run, P.first_done
local future_mt, remote_mt = P.future_mt, P.remote_mt
local clock = tether.clock
local error, type, select, setmetatable, getmetatable = error, type, select, setmetatable, getmetatable
local pack, unpack = table.pack, table.unpack

local STOP = setmetatable({}, {__name = "tether.executor STOP"})

local function is_future(f)
  return getmetatable(f) == future_mt
end

-- ---------------------------------------------------------------------
-- Workers

-- Puts the STOPs owed to the executor's control block `ctl` that its
-- bounded queue has room for now.  The count goes down only after a put:
-- two threads paying at once may put one STOP too many (harmless: every
-- worker stops at its first), never one too few.
local function pay(ctl)
  while ctl.owed > 0 and ctl.q:put(STOP, 0) do
    ctl.owed = ctl.owed - 1
  end
end

-- The next task of the executor's control block `ctl` (its queue and the
-- STOPs it owes), or nil once a STOP comes.  A shutdown or finalizer that
-- found the bounded queue full owes the STOPs it could not put: the room
-- every take makes (a take of a STOP too) pays them, so the last task
-- queued is followed by one STOP per worker.
local function take(ctl)
  local f = ctl.q:get()
  pay(ctl)
  if f == STOP then return nil end
  return f
end

-- Tells every worker of `ex` to stop after the tasks queued, without
-- waiting for room in a bounded queue: what does not fit now is owed.
local function post_stops(ex)
  ex._ctl.owed = ex._ctl.owed + ex.workers
  pay(ex._ctl)
end

local function thread_worker(ctl)
  while true do
    local f = take(ctl)
    if f == nil then return end
    run(f)
  end
end

local function interp_worker(ctl)
  local I = tether.interp()
  local req, rep, t
  local function spawn()
    req, rep = tether.channel(), tether.channel()
    t = I:thread({daemon = true}, remote_loop, req, rep)
  end
  spawn()
  -- runner(job): one task in the interpreter.
  local function runner(job)
    req:send(job)
    local r = rep:recv()
    if r.ok then return unpack(r, 1, r.n) end
    if r.cancelled then error(tether.Cancelled, 0) end
    error(setmetatable({r.err, r.tb}, remote_mt), 0)
  end
  -- After a cancel of the running task (run calls it with asynchronous
  -- exceptions held back): the remote thread is cancelled too and a fresh
  -- one, with fresh channels, takes its place.
  local function on_cancel()
    t:cancel()
    t:join()
    spawn()
  end
  while true do
    local f = take(ctl)
    if f == nil then break end
    run(f, runner, on_cancel)
  end
  req:close()
  t:join()
  I:close()
end

-- ---------------------------------------------------------------------
-- The executor

local Executor = {}
Executor.__index = Executor
Executor.__name = "tether.executor"

local function check(ex, what)
  if getmetatable(ex) ~= Executor then
    error(what .. ": bad self (a tether.executor expected, got " .. type(ex) .. ")", 3)
  end
  return ex
end

local function option_error(msg)
  error("tether.executor: " .. msg, 3)
end

function tether.executor(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    option_error("options must be a table (workers, interp, name, queue)")
  end
  for k in pairs(opts) do
    if k ~= "workers" and k ~= "interp" and k ~= "name" and k ~= "queue" then
      option_error("unknown option '" .. tostring(k) .. "' (workers, interp, name, queue)")
    end
  end
  local n = opts.workers or 4
  if math.type(n) ~= "integer" or n < 1 or n > 1024 then
    option_error("option 'workers' must be an integer in [1, 1024]")
  end
  local cap = opts.queue or 0
  if math.type(cap) ~= "integer" or cap < 0 then
    option_error("option 'queue' must be an integer >= 0 (0: no bound)")
  end
  local name = opts.name or "executor"
  if type(name) ~= "string" then option_error("option 'name' must be a string") end
  local interp = opts.interp
  if interp ~= nil and type(interp) ~= "boolean" then
    option_error("option 'interp' must be a boolean")
  end
  local ex = setmetatable({
    name = name, workers = n, interp = interp or false,
    -- (the queue and the STOPs owed: all that the workers hold of the
    -- executor, so that it can still be collected; see __gc)
    _ctl = {q = tether.queue(cap), owed = 0},
    _threads = {}, _shut = false, _waiting = {},
  }, Executor)
  local body = interp and interp_worker or thread_worker
  for i = 1, n do
    local ok, t = pcall(tether.thread, {name = name .. "-" .. i, daemon = true}, body, ex._ctl)
    if not ok then
      -- Nothing of an executor that could not start whole keeps running
      -- (the workers started would wait on the queue for ever).
      ex._shut = true
      for _ = 1, i - 1 do ex._ctl.q:put(STOP) end
      for j = 1, i - 1 do ex._threads[j]:join() end
      local why = tostring(t):gsub("^bad argument #1 to '[^']*' %((.*)%)$", "%1")
      option_error("worker " .. i .. " could not start: " .. why)
    end
    ex._threads[i] = t
  end
  return ex
end

-- ex:submit(fn, ...) --> a future of fn(...)
function Executor:submit(fn, ...)
  check(self, "submit")
  if self._shut then error("submit: the executor is shut down", 2) end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("submit: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  local f
  if self.interp then
    local ok, code = pcall(P.dump, fn)
    if not ok then error("submit: " .. tostring(code), 2) end
    local args = pack(...)
    local ok2, why = pcall(P.check_copy, args)
    if not ok2 then error("submit: " .. tostring(why), 2) end
    f = new_future({code = code, args = args})
  else
    f = new_future(fn, ...)
  end
  self._ctl.q:put(f)
  if self._shut and f:status() == "pending" then
    -- shutdown came in while this submit checked or waited for room: f
    -- may be queued behind the workers' STOPs, where nobody would run it
    f:cancel()
    error("submit: the executor is shut down", 2)
  end
  return f
end

-- A timeout option: nil or a number >= 0.
local function check_timeout(v, what)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
    error(what .. " must be a non-negative number of seconds", 3)
  end
  return v
end

-- Options: nil or a table with only the keys of `known` (a set).
local function check_options(opts, argn, known, what)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(what .. ": bad argument #" .. argn .. " (options table expected, got "
          .. type(opts) .. ")", 3)
  end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      error(what .. ": unknown option '" .. tostring(k) .. "' ("
            .. table.concat(names, ", ") .. ")", 3)
    end
  end
  return opts
end

local MAP_OPTIONS = {timeout = true, chunks = true}

-- ex:map(fn, list [, {timeout = s, chunks = n}]) --> the results in order
-- (a nil result keeps its place: out[i] is fn(list[i]) for i in 1..#list)
function Executor:map(fn, list, opts)
  check(self, "map")
  if self._shut then error("map: the executor is shut down", 2) end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("map: bad argument #1 (function expected, got " .. type(fn) .. ")", 2)
  end
  if type(list) ~= "table" then
    error("map: bad argument #2 (table expected, got " .. type(list) .. ")", 2)
  end
  opts = check_options(opts, 3, MAP_OPTIONS, "map")
  local timeout = check_timeout(opts.timeout, "map: option 'timeout'")
  local chunks = opts.chunks or 1
  if math.type(chunks) ~= "integer" or chunks < 1 then
    error("map: option 'chunks' must be an integer >= 1", 2)
  end
  local code
  if self.interp then
    local ok, c = pcall(P.dump, fn)
    if not ok then error("map: " .. tostring(c), 2) end
    code = c
  end
  local deadline = timeout and clock() + timeout
  local futures = {}
  local n = #list
  local ok, why = pcall(function()
    if chunks == 1 then
      for i = 1, n do futures[i] = self:submit(fn, list[i]) end
      return
    end
    -- a chunk's results: {n = count, r1, r2, ...} (nil results kept)
    local runner = self.interp and function(c, part)
      local f = load(c, "=task", "b")
      local out = {n = part.n}
      for i = 1, part.n do out[i] = f(part[i]) end
      return out
    end or function(f, part)
      local out = {n = part.n}
      for i = 1, part.n do out[i] = f(part[i]) end
      return out
    end
    for i = 1, n, chunks do
      local part = {n = 0}
      for j = i, math.min(n, i + chunks - 1) do
        part.n = part.n + 1
        part[part.n] = list[j]
      end
      futures[#futures + 1] = self:submit(runner, code or fn, part)
    end
  end)
  if not ok then
    -- nothing of a map that could not be submitted whole runs
    for j = 1, #futures do futures[j]:cancel() end
    -- (submit's error raised in the closure above: its position goes)
    if type(why) == "string" then why = why:gsub("^[^\n]-submit: ", "map: ", 1) end
    error(why, 2)
  end
  local out = {}
  for i, f in ipairs(futures) do
    local left = deadline and math.max(0, deadline - clock())
    local fine, r = pcall(f.result, f, left)
    if not fine then
      -- (result's own timeout, not an error of the task nor a cancel of
      -- this thread: then f is still not done)
      local timed_out = type(r) == "string" and not f:done()
                        and r:find("not done (timeout)", 1, true)
      for j = i, #futures do futures[j]:cancel() end
      if timed_out then
        error(string.format("map: timeout (%d of %d %s not done)", #futures - i + 1,
                            #futures, chunks == 1 and "tasks" or "chunks"), 2)
      end
      error(r, 0)
    end
    if chunks == 1 then
      out[i] = r
    else
      local base = (i - 1) * chunks
      for k = 1, r.n do out[base + k] = r[k] end
    end
  end
  return out
end

local SHUTDOWN_OPTIONS = {wait = true, cancel = true}

-- ex:shutdown{wait = true, cancel = false}
function Executor:shutdown(opts)
  check(self, "shutdown")
  opts = check_options(opts, 1, SHUTDOWN_OPTIONS, "shutdown")
  for _, k in ipairs({"wait", "cancel"}) do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      error("shutdown: option '" .. k .. "' must be a boolean", 2)
    end
  end
  local wait = opts.wait ~= false
  if not self._shut then
    self._shut = true
    if opts.cancel then
      while true do
        local f = self._ctl.q:get(0)
        if f == nil then break end
        f:cancel()
      end
    end
    -- (the queue may be full and the caller the worker that would make
    -- room: it must not wait for it)
    post_stops(self)
  end
  if wait then
    -- From inside one of its own tasks: every worker but the caller, which
    -- stops once its task returns (joining itself would be an error), and
    -- but the workers waiting here too (each would wait for the other).
    -- A worker says it waits before it looks at the others: of two that
    -- come together, at least the second sees the first.
    local me = tether.current()
    local mine = false
    for _, t in ipairs(self._threads) do
      if t == me then mine = true end
    end
    local waiting = self._waiting
    if mine then waiting[#waiting + 1] = me end
    for _, t in ipairs(self._threads) do
      local skip = t == me
      if mine then
        for _, w in ipairs(waiting) do
          if w == t then skip = true end
        end
      end
      if not skip then t:join() end
    end
  end
end

Executor.__close = function(self) self:shutdown{wait = true} end

-- Collected (or the state closing) without a shutdown: the workers are
-- told to stop after the queued tasks, without waiting for them (a
-- finalizer must not block: the STOPs a full bounded queue cannot take
-- now are owed, and the workers put them as they empty it; see take).
Executor.__gc = function(self)
  -- (at lua_close, once the module's sentinel has stopped the daemon
  -- workers, there is nobody left to tell)
  if self._shut or P.closing() then return end
  self._shut = true
  post_stops(self)
end

function Executor:__tostring()
  return string.format("tether.executor '%s' (%d %s workers%s)", self.name,
    self.workers, self.interp and "interp" or "thread", self._shut and ", shut down" or "")
end

-- ---------------------------------------------------------------------
-- wait and as_completed

local function check_futures(fs, what)
  if type(fs) ~= "table" then
    error(what .. ": bad argument #1 (an array of futures expected, got " .. type(fs) .. ")", 3)
  end
  for i = 1, #fs do
    if not is_future(fs[i]) then
      error(what .. ": element " .. i .. " is not a future", 3)
    end
  end
end

local function failed(f)
  return f:status() == "error"
end

-- Every future of fs tells `q` (a tether.queue) once it is done: a
-- done-callback puts it there (at once if it is done already).  No limit
-- on the number of futures, and nothing is missed between a look at the
-- futures and the wait.
local function notify_into(fs, q)
  local function put(f) q:put(f) end
  for i = 1, #fs do fs[i]:add_done_callback(put) end
end

local SELECT_MAX = 4096 -- LT_SELECT_MAX (lt_select.c)
local WAIT_OPTIONS = {timeout = true, return_when = true}

-- tether.wait(futures, {timeout = s, return_when = "all"|"first"|"first_error"})
--   --> done, not_done (arrays, in the order of `futures`)
function tether.wait(fs, opts)
  check_futures(fs, "wait")
  opts = check_options(opts, 2, WAIT_OPTIONS, "wait")
  local when = opts.return_when or "all"
  if when ~= "all" and when ~= "first" and when ~= "first_error" then
    error("wait: return_when must be \"all\", \"first\" or \"first_error\"", 2)
  end
  local timeout = check_timeout(opts.timeout, "wait: option 'timeout'")
  local deadline = timeout and clock() + timeout
  local function enough()
    local ndone, nerr = 0, 0
    for i = 1, #fs do
      if fs[i]:done() then
        ndone = ndone + 1
        if failed(fs[i]) then nerr = nerr + 1 end
      end
    end
    if ndone == #fs then return true end
    if when == "first" then return ndone > 0 end
    if when == "first_error" then return nerr > 0 end
    return false
  end
  -- Up to SELECT_MAX futures not done: one select over them (nothing
  -- left behind on the futures); more: done-callbacks into a queue.
  local q
  while not enough() do
    local rest = {}
    for i = 1, #fs do
      if not fs[i]:done() then rest[#rest + 1] = fs[i] end
    end
    local left = deadline and math.max(0, deadline - clock())
    if #rest == 0 then
      -- they finished while enough() looked: look again
    elseif q == nil and #rest <= SELECT_MAX then
      if first_done(rest, left) == nil then break end
    else
      if q == nil then
        q = tether.queue()
        notify_into(rest, q)
      end
      local _, why = q:get(left)
      if why == "timeout" then break end
    end
  end
  local done, not_done = {}, {}
  for i = 1, #fs do
    local t = fs[i]:done() and done or not_done
    t[#t + 1] = fs[i]
  end
  return done, not_done
end

-- for f in tether.as_completed(futures [, timeout]) do ... end
-- (each future once, in the order they complete)
function tether.as_completed(fs, timeout)
  check_futures(fs, "as_completed")
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("as_completed: bad argument #2 (timeout must be a non-negative number of seconds)", 2)
  end
  -- A future listed twice is yielded once (its done-callback would put
  -- it into the queue twice).
  local seen, distinct = {}, {}
  for i = 1, #fs do
    if not seen[fs[i]] then
      seen[fs[i]] = true
      distinct[#distinct + 1] = fs[i]
    end
  end
  fs = distinct
  local left_n = #fs
  local q = tether.queue()
  notify_into(fs, q)
  local deadline = timeout and clock() + timeout
  return function()
    if left_n == 0 then return nil end
    local left = deadline and math.max(0, deadline - clock())
    local f, why = q:get(left)
    if f == nil and why == "timeout" then
      error("as_completed: timeout (" .. left_n .. " of " .. #fs .. " futures not done)", 2)
    end
    left_n = left_n - 1
    return f
  end
end
