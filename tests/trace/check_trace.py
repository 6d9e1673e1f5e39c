#!/usr/bin/env python3
"""check_trace.py - validates a tether trace (tests/trace, labels unit, trace).

  check_trace.py TRACE.json [--expect KIND...]
  check_trace.py --run WORKLOAD SCENARIO [--expect KIND...]
  check_trace.py --self-test WORKLOAD
  check_trace.py --timeline GIL_TIMELINE WORKLOAD
  check_trace.py --timeline-bad GIL_TIMELINE WORKLOAD

Parses the Chrome/Perfetto trace-event JSON that tether_trace_stop writes
(with the json module, numbers as exact decimals) and checks:

  format      "traceEvents" is a list; every event has a known "ph", an
              integer pid and tid, a "ts" >= 0 (not metadata), "X" a
              "dur" >= 0; every tid with events has a "thread_name";
              "otherData" counts events and dropped events
  holds       per GIL, the "holds GIL" slices never overlap
  waits       every "waits for GIL" slice ends in a take (a "holds GIL"
              slice of the same thread and GIL begins when it ends) or in
              a finalize (a "GIL refused: finalizing" instant there)
  flows       every flow start ("s") has one end ("f") with its id, on the
              "holds GIL" slice of the thread that dropped, which says a
              drop request was pending ("requested": true)

--expect names things the trace must contain: holds, waits, flows,
forced, blocking, wait, finalize-wait, async, join, ensure, thread-start,
finalize-phase, dropped, two-gils.  --run runs `WORKLOAD SCENARIO OUT` first.
--self-test runs the "mixed" workload, then breaks a copy of its trace in
each way above and fails unless every break is caught (so this check can
fail).  --timeline runs scripts/gil-timeline on the "mixed" workload's
trace and checks its picture (a PNG) and its table (a row per thread,
with the thread's name).  --timeline-bad feeds scripts/gil-timeline
broken input (empty, cut short, not JSON, not a trace, events of the
wrong shape) and checks each gets exit status 1 and a one-line
"gil-timeline:" sentence, never a Python traceback; and that a trace
without events still draws.  Exit status 0 when valid, 1 when not, 2 on bad
usage.
"""

import copy
import decimal
import json
import os
import subprocess
import sys
import tempfile

D = decimal.Decimal
PHASES = {"X", "B", "E", "i", "I", "s", "t", "f", "M", "C"}


class Invalid(Exception):
    pass


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_float=D)


def num(ev, key):
    v = ev.get(key)
    if not isinstance(v, (int, D)) or isinstance(v, bool):
        raise Invalid("event %r: %s is not a number" % (ev, key))
    return D(v)


def check_format(doc):
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise Invalid("no traceEvents list")
    named, used = set(), set()
    for ev in doc["traceEvents"]:
        ph = ev.get("ph")
        if ph not in PHASES:
            raise Invalid("unknown ph %r in %r" % (ph, ev))
        for k in ("pid", "tid"):
            if not isinstance(ev.get(k), int) or isinstance(ev.get(k), bool):
                raise Invalid("event %r: %s is not an integer" % (ev, k))
        if not isinstance(ev.get("name"), str):
            raise Invalid("event %r has no name" % (ev,))
        if ph == "M":
            if ev["name"] == "thread_name":
                if not isinstance(ev.get("args", {}).get("name"), str):
                    raise Invalid("thread_name without a name: %r" % (ev,))
                named.add(ev["tid"])
            continue
        if num(ev, "ts") < 0:
            raise Invalid("negative ts in %r" % (ev,))
        if ph == "X" and num(ev, "dur") < 0:
            raise Invalid("negative dur in %r" % (ev,))
        used.add(ev["tid"])
    if used - named:
        raise Invalid("threads without a thread_name: %s" % sorted(used - named))
    other = doc.get("otherData")
    if not isinstance(other, dict):
        raise Invalid("no otherData")
    for k in ("events", "dropped_events", "bytes_per_event"):
        if not isinstance(other.get(k), int):
            raise Invalid("otherData.%s is not an integer" % k)


def slices(doc, name):
    return [e for e in doc["traceEvents"] if e.get("ph") == "X" and e["name"] == name]


def check_holds(doc):
    by_gil = {}
    for e in slices(doc, "holds GIL"):
        by_gil.setdefault(e["args"]["gil"], []).append(e)
    for gil, v in by_gil.items():
        v.sort(key=lambda e: (num(e, "ts"), num(e, "dur")))
        for a, b in zip(v, v[1:]):
            if num(a, "ts") + num(a, "dur") > num(b, "ts"):
                raise Invalid("GIL %s held by two threads at once: tid %d "
                              "[%s +%s] and tid %d [%s +%s]"
                              % (gil, a["tid"], a["ts"], a["dur"], b["tid"],
                                 b["ts"], b["dur"]))


def check_waits(doc):
    takes = {(e["tid"], e["args"]["gil"], num(e, "ts")) for e in slices(doc, "holds GIL")}
    refusals = {(e["tid"], num(e, "ts")) for e in doc["traceEvents"]
                if e.get("ph") == "i" and e["name"] == "GIL refused: finalizing"}
    for w in slices(doc, "waits for GIL"):
        end = num(w, "ts") + num(w, "dur")
        how = w.get("args", {}).get("ended")
        if how == "take":
            if (w["tid"], w["args"]["gil"], end) not in takes:
                raise Invalid("a wait of tid %d ending at %s ends in no take"
                              % (w["tid"], end))
        elif how == "finalize":
            if (w["tid"], end) not in refusals:
                raise Invalid("a wait of tid %d ending at %s in finalize has "
                              "no refusal" % (w["tid"], end))
        else:
            raise Invalid("a wait ends in %r" % (how,))


def check_flows(doc):
    starts, ends = {}, {}
    for e in doc["traceEvents"]:
        if e.get("ph") == "s":
            if e.get("id") in starts:
                raise Invalid("flow id %r starts twice" % (e.get("id"),))
            starts[e.get("id")] = e
        elif e.get("ph") == "f":
            if e.get("id") in ends:
                raise Invalid("flow id %r ends twice" % (e.get("id"),))
            ends[e.get("id")] = e
    if set(starts) != set(ends):
        raise Invalid("flows without both ends: %s"
                      % sorted(set(starts) ^ set(ends), key=str))
    holds = {}
    for h in slices(doc, "holds GIL"):
        holds.setdefault(h["tid"], []).append(h)
    for fid, f in ends.items():
        t = num(f, "ts")
        inside = [h for h in holds.get(f["tid"], [])
                  if num(h, "ts") <= t <= num(h, "ts") + num(h, "dur")]
        if not inside:
            raise Invalid("flow %r ends outside any holds GIL slice of tid %d"
                          % (fid, f["tid"]))
        if not any(h["args"].get("requested") for h in inside):
            raise Invalid("flow %r ends on a drop with no request pending" % (fid,))
        if num(starts[fid], "ts") > t:
            raise Invalid("flow %r goes back in time" % (fid,))


def has(doc, kind):
    evs = doc["traceEvents"]
    holds = slices(doc, "holds GIL")
    if kind == "holds":
        return bool(holds)
    if kind == "waits":
        return bool(slices(doc, "waits for GIL"))
    if kind == "flows":
        return any(e.get("ph") == "s" for e in evs)
    if kind in ("forced", "blocking", "wait"):
        want = {"forced": "forced switch", "blocking": "blocking call", "wait": "wait"}[kind]
        return any(h["args"]["drop"] == want for h in holds)
    if kind == "finalize-wait":
        return any(w["args"].get("ended") == "finalize" for w in slices(doc, "waits for GIL"))
    if kind == "async":
        names = {e["name"] for e in evs}
        return {"async exception posted", "async exception delivered"} <= names
    if kind == "join":
        return any(e["name"].startswith("join ") for e in evs)
    if kind == "ensure":
        names = {e["name"] for e in evs}
        return {"ensure", "release"} <= names
    if kind == "thread-start":
        names = {e["name"] for e in evs}
        return {"thread start", "thread exit"} <= names
    if kind == "finalize-phase":
        return any(e["name"].startswith("finalize: ") for e in evs)
    if kind == "two-gils":
        return len({h["args"]["gil"] for h in holds}) >= 2
    if kind == "dropped":
        return doc["otherData"]["dropped_events"] > 0
    raise SystemExit("check_trace.py: unknown --expect %r" % kind)


def validate(doc, expect=()):
    check_format(doc)
    check_holds(doc)
    check_waits(doc)
    check_flows(doc)
    missing = [k for k in expect if not has(doc, k)]
    if missing:
        raise Invalid("the trace has no %s" % ", ".join(missing))


def run(workload, scenario, out, env=None):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([workload, scenario, out], env=e)
    if r.returncode != 0:
        raise SystemExit("check_trace.py: %s %s failed (%d)"
                         % (workload, scenario, r.returncode))


def summary(doc):
    holds = slices(doc, "holds GIL")
    return ("%d events, %d holds, %d waits, %d flows, %d threads, %d dropped"
            % (len(doc["traceEvents"]), len(holds), len(slices(doc, "waits for GIL")),
               sum(1 for e in doc["traceEvents"] if e.get("ph") == "s"),
               len({e["tid"] for e in doc["traceEvents"] if e.get("ph") == "M"
                    and e["name"] == "thread_name"}),
               doc["otherData"]["dropped_events"]))


def breaks(doc):
    """Copies of doc, each broken in one way the checks must catch."""
    out = []
    holds = sorted(slices(doc, "holds GIL"), key=lambda e: num(e, "ts"))
    a, b = next((x, y) for x, y in zip(holds, holds[1:])
                if x["tid"] != y["tid"] and x["args"]["gil"] == y["args"]["gil"])

    def mutate(name, fn):
        d = copy.deepcopy(doc)
        fn(d)
        out.append((name, d))

    def overlap(d):
        for e in d["traceEvents"]:
            if e == a:
                e["dur"] = num(b, "ts") - num(a, "ts") + D("0.001")
    mutate("overlapping holds", overlap)

    def lost_take(d):
        w = slices(d, "waits for GIL")[0]
        w["dur"] = num(w, "dur") + D("0.5")
    mutate("a wait that ends in no take", lost_take)

    def unnamed(d):
        d["traceEvents"] = [e for e in d["traceEvents"]
                            if not (e.get("ph") == "M" and e["name"] == "thread_name")]
    mutate("a thread without a name", unnamed)

    def one_ended_flow(d):
        f = next(e for e in d["traceEvents"] if e.get("ph") == "f")
        d["traceEvents"].remove(f)
    mutate("a flow without its end", one_ended_flow)

    def unrequested(d):
        f = next(e for e in d["traceEvents"] if e.get("ph") == "f")
        for h in slices(d, "holds GIL"):
            if h["tid"] == f["tid"] and num(h, "ts") <= num(f, "ts") <= num(h, "ts") + num(h, "dur"):
                h["args"]["requested"] = False
    mutate("a flow to a drop nobody requested", unrequested)

    def bad_phase(d):
        d["traceEvents"][-1]["ph"] = "Q"
    mutate("an unknown phase", bad_phase)

    def negative(d):
        next(e for e in d["traceEvents"] if e.get("ph") == "X")["dur"] = D("-1")
    mutate("a negative duration", negative)
    return out


def timeline(script, workload):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "mixed.json")
        png = os.path.join(tmp, "t.png")
        run(workload, "mixed", out)
        names = [e["args"]["name"] for e in load(out)["traceEvents"]
                 if e.get("ph") == "M" and e["name"] == "thread_name"]
        r = subprocess.run([sys.executable, script, out, "-o", png],
                           capture_output=True, text=True)
        print(r.stdout + r.stderr)
        if r.returncode != 0:
            print("gil-timeline failed (%d)" % r.returncode)
            return 1
        with open(png, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                print("gil-timeline wrote no PNG")
                return 1
        lines = r.stdout.splitlines()
        if not lines or not lines[0].startswith("thread") or "p99 wait us" not in lines[0]:
            print("no table header")
            return 1
        for n in names:
            if not any(l.startswith(n + " ") for l in lines[1:]):
                print("no row for thread %r" % n)
                return 1
        bad = subprocess.run([sys.executable, script, os.path.join(tmp, "none.json")],
                             capture_output=True, text=True)
        if bad.returncode != 1 or "cannot read" not in bad.stderr:
            print("a missing trace was not refused: %r" % (bad,))
            return 1
    print("gil-timeline: a PNG and a row for each of %d threads" % len(names))
    return 0


def timeline_bad(script, workload):
    """gil-timeline on broken input: status 1 and a sentence, no traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "mixed.json")
        run(workload, "mixed", out)
        with open(out, "rb") as f:
            whole = f.read()
        ev = lambda *es: json.dumps({"traceEvents": list(es)}).encode()
        x = {"ph": "X", "name": "holds GIL", "tid": 1, "ts": 0, "dur": 1,
             "args": {}}
        cases = {
            "empty": b"",
            "cut short": whole[: len(whole) // 2],
            "cut at the last byte": whole[:-2],
            "not UTF-8": b"\xff\xfe" + whole[2:],
            "not JSON": b"hello",
            "a list": b"[]",
            "no traceEvents": b"{}",
            "traceEvents not a list": b'{"traceEvents":5}',
            "an event not an object": ev(1),
            "no ph": ev({"tid": 1}),
            "no tid": ev({"ph": "i", "ts": 0}),
            "metadata without a name": ev({"ph": "M", "tid": 1}),
            "thread_name without args": ev({"ph": "M", "name": "thread_name", "tid": 1}),
            "X without dur": ev(dict(x, dur=None)),
            "ts a string": ev(dict(x, ts="0")),
            "args a list": ev(dict(x, args=[])),
            "flow id a list": ev({"ph": "s", "tid": 1, "ts": 0, "id": [1]}),
            "otherData a list": b'{"traceEvents":[],"otherData":[]}',
        }
        failed = []
        for name, data in cases.items():
            path = os.path.join(tmp, "bad.json")
            with open(path, "wb") as f:
                f.write(data)
            r = subprocess.run([sys.executable, script, path, "-o",
                                os.path.join(tmp, "bad.png")],
                               capture_output=True, text=True)
            ok = (r.returncode == 1 and "Traceback" not in r.stderr
                  and r.stderr.startswith("gil-timeline:"))
            print("%-28s status %d: %s" % (name, r.returncode,
                                           r.stderr.strip().splitlines()[-1:]))
            if not ok:
                failed.append(name)
        # Without events (a trace stopped at once) it is a table and an
        # empty picture, not an error.
        path = os.path.join(tmp, "quiet.json")
        with open(path, "w") as f:
            json.dump({"traceEvents": [], "otherData": {}}, f)
        png = os.path.join(tmp, "quiet.png")
        r = subprocess.run([sys.executable, script, path, "-o", png],
                           capture_output=True, text=True)
        print("no events: status %d %s" % (r.returncode, r.stderr.strip()))
        if r.returncode != 0 or not os.path.exists(png):
            failed.append("a trace without events")
    if failed:
        print("NOT HANDLED: %s" % ", ".join(failed))
        return 1
    print("gil-timeline refused every broken input with a sentence")
    return 0


def main(argv):
    expect = []
    if "--expect" in argv:
        i = argv.index("--expect")
        expect = argv[i + 1:]
        argv = argv[:i]
    if len(argv) == 3 and argv[1] == "--self-test":
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "mixed.json")
            run(argv[2], "mixed", out)
            doc = load(out)
        validate(doc, ["holds", "waits", "flows"])
        missed = []
        for name, bad in breaks(doc):
            try:
                validate(bad)
                missed.append(name)
            except Invalid as e:
                print("caught %s: %s" % (name, e))
        if missed:
            print("NOT CAUGHT: %s" % ", ".join(missed))
            return 1
        print("every break was caught")
        return 0
    if len(argv) == 4 and argv[1] == "--timeline-bad":
        return timeline_bad(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "--timeline":
        return timeline(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "--run":
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, argv[3] + ".json")
            run(argv[2], argv[3], out)
            doc = load(out)
    elif len(argv) == 2:
        doc = load(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        validate(doc, expect)
    except Invalid as e:
        print("INVALID TRACE: %s" % e)
        print(summary(doc))
        return 1
    print("valid: " + summary(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
