"""The measuring half of bench/storm/run.sh: one event storm through breakwater-relay.

  storm.py topics      --bootstrap B TOPIC...   create topics (1 partition, CreateTime)
  storm.py background  --dsn D ...              the steady background load (a child of `run`)
  storm.py run         ...                      one storm run; appends one JSON record to --out
  storm.py report      --runs FILE ...          the printed report from the records

One run: start the relay (it creates its slot), start the background load (one connection,
one-row UPDATE transactions at --rate per second, tenants round-robin-random over the background
tenants, synchronous_commit=on), after --lead seconds run the storm (one transaction updating every
row of the storm tenants), wait until the relay's /metrics show breakwater_confirmed_lsn at or
past the WAL insert position taken right after the storm's commit (the drain), keep the load for
--tail more seconds, stop it, wait for the relay to confirm the end, stop the relay (SIGTERM: it
sends pending signals first), then read the topics.

Signal latency of a background tenant (the method): the background load runs on one connection,
so its transactions are serial; for each it records, client-side, the time just before sending the
UPDATE (t_sent) and the time its commit was acknowledged (t_commit). A signal of tenant T carries
last_commit_time, PostgreSQL's commit time of the latest change it covers; a background
transaction of T is covered by the first signal of T (in CreateTime order) with t_sent <=
last_commit_time (PostgreSQL's commit time lies between t_sent and t_commit, and the next
transaction's t_sent is after this one's t_commit, so this matches exactly). The signal's latency
is its CreateTime (set by the relay's producer, ms) minus t_commit of the earliest background
commit it covers. Both clocks are this machine's.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from drive import (Broke, consume_all, record_run, lsn_int, metrics, percentile, pg_scalar, proc_cpu, proc_mem,  # noqa: E402
                   stop, tail, topic_count)


def cmd_topics(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    futs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in a.topics],
                               operation_timeout=30)
    for f in futs.values():
        f.result(timeout=60)


# ---- background load ---------------------------------------------------------------------------

def cmd_background(a):
    """One-row UPDATE transactions at a fixed rate until SIGTERM; writes 'tenant t_sent t_commit'
    lines (epoch seconds) to --out. Behind schedule it catches up without skipping."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    tenants = list(range(a.tenant_lo, a.tenant_hi + 1))
    rng = random.Random(7)
    period = 1.0 / a.rate
    out = []
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        sql = f"UPDATE {a.table} SET v = v + 1, updated_at = now() WHERE tenant_id = %s AND id = %s"
        next_t = time.monotonic()
        while not stopping:
            now = time.monotonic()
            if now < next_t:
                time.sleep(next_t - now)
                continue
            t = rng.choice(tenants)
            t_sent = time.time()
            conn.execute(sql, (t, rng.randint(1, a.ids)), prepare=True)
            out.append((t, t_sent, time.time()))
            next_t += period
    with open(a.out, "w") as f:
        for t, s, c in out:
            f.write(f"{t} {s:.6f} {c:.6f}\n")


# ---- one run -----------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Polls the relay's /metrics every 50 ms: remembers when confirmed_lsn first reached a
    target, and the largest inflight bytes seen."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.target, self.reached, self.max_inflight = port, None, None, 0
        self.last = {}
        self.halt = False

    def run(self):
        while not self.halt:
            m = metrics(self.port)
            if m:
                self.last = m
                self.max_inflight = max(self.max_inflight, m.get("breakwater_inflight_bytes", 0))
                if self.target is not None and self.reached is None \
                        and m.get("breakwater_confirmed_lsn", 0) >= self.target:
                    self.reached = time.time()
            time.sleep(0.05)


def stats(vals):
    vals = sorted(vals)
    return {"n": len(vals), "p50": percentile(vals, 50), "p99": percentile(vals, 99),
            "max": vals[-1] if vals else None}


def cmd_run(a):
    rec = {"mode": a.mode}
    log = open(a.log, "a")
    proc = subprocess.Popen([a.relay, f"--config={a.config}", f"--http.listen=127.0.0.1:{a.port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    bg = None
    sampler = Sampler(a.port)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise Broke(f"the relay exited with status {proc.returncode} at start: {tail(a.log)}")
            m = metrics(a.port)
            if m and m.get("breakwater_up") == 1 and pg_scalar(
                    a.dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active",
                    (a.slot,)) == 1:
                break
            if time.monotonic() > deadline:
                raise Broke(f"the relay was not up after 60 s: {tail(a.log)}")
            time.sleep(0.05)
        sampler.start()
        cpu0, w0 = proc_cpu(proc.pid), time.monotonic()
        bg = subprocess.Popen([sys.executable, os.path.abspath(__file__), "background", "--dsn", a.dsn,
                               "--table", a.table, "--tenant-lo", str(a.bg_lo), "--tenant-hi", str(a.bg_hi),
                               "--ids", str(a.bg_ids), "--rate", str(a.rate), "--out", a.bg_out])
        time.sleep(a.lead)
        # the storm: one transaction, every row of the storm tenants
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            t_storm0 = time.time()
            conn.execute("BEGIN")
            n = conn.execute(f"UPDATE {a.table} SET v = v + 1, updated_at = now() "
                             f"WHERE tenant_id BETWEEN %s AND %s", (a.storm_lo, a.storm_hi)).rowcount
            conn.execute("COMMIT")
            t_storm1 = time.time()
            end = lsn_int(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
        rec.update(storm_rows=n, storm_tx_s=t_storm1 - t_storm0, storm_start=t_storm0, storm_commit=t_storm1)
        sampler.target = end
        deadline = time.monotonic() + a.timeout
        while sampler.reached is None:
            if proc.poll() is not None:
                raise Broke(f"the relay exited with status {proc.returncode} during the storm: {tail(a.log)}")
            if time.monotonic() > deadline:
                raise Broke(f"the relay did not confirm the storm's end in {a.timeout} s: {tail(a.log)}")
            time.sleep(0.05)
        t_drained = sampler.reached
        cpu_drain, wall_drain = proc_cpu(proc.pid) - cpu0, time.monotonic() - w0
        rec.update(drain_s=t_drained - t_storm1, drain_from_start_s=t_drained - t_storm0,
                   cpu_to_drain_s=cpu_drain, cpu_to_drain_pct=100 * cpu_drain / wall_drain)
        time.sleep(a.tail)
        bg.send_signal(signal.SIGTERM)
        if bg.wait(60) != 0:
            raise Broke(f"the background load exited with status {bg.returncode}")
        t_bg_end = time.time()
        # everything confirmed, then the final signals (at most one interval later)
        end2 = lsn_int(pg_scalar(a.dsn, "SELECT pg_current_wal_insert_lsn()::text"))
        deadline = time.monotonic() + 60
        while sampler.last.get("breakwater_confirmed_lsn", 0) < end2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Broke(f"the relay did not confirm the end: {tail(a.log)}")
            time.sleep(0.05)
        time.sleep(a.interval_ms / 1000 + 0.5)
        rec["cpu_s"] = proc_cpu(proc.pid) - cpu0
        rec["cpu_pct"] = 100 * rec["cpu_s"] / (time.monotonic() - w0)
        rec["peak_rss_mb"], rec["rss_mb"] = proc_mem(proc.pid)
        rec["max_inflight_mb"] = sampler.max_inflight / 2**20
        rec["delivery_errors"] = sampler.last.get("breakwater_delivery_errors_total", 0)
    finally:
        sampler.halt = True
        if bg is not None and bg.poll() is None:
            stop(bg)
        rc = stop(proc)
    if rc != 0:
        raise Broke(f"the relay exited with status {rc} after SIGTERM: {tail(a.log)}", rec)

    # ---- the topics
    rec["row_messages"] = topic_count(a.bootstrap, a.row_topic)
    rec["signal_messages"] = topic_count(a.bootstrap, a.signal_topic)
    commits = defaultdict(list)   # tenant -> [(t_sent, t_commit)]
    n_bg = 0
    with open(a.bg_out) as f:
        for line in f:
            t, s, c = line.split()
            commits[int(t)].append((float(s), float(c)))
            n_bg += 1
    rec["bg_transactions"] = n_bg
    rec["bg_rate"] = n_bg / (t_bg_end - (t_storm0 - a.lead))
    sigs = defaultdict(list)      # (tenant, table) -> [(ts_s, value)]
    for m in consume_all(a.bootstrap, a.signal_topic):
        h = {k: v.decode() for k, v in (m.headers() or [])}
        if h.get("op") != "signal":
            continue
        sigs[(int(h["tenant"]), h["table"])].append((m.timestamp()[1] / 1000, json.loads(m.value())))
    storm_t = set(range(a.storm_lo, a.storm_hi + 1))
    per_sec_max, min_gap, storm_sig, storm_counted = 0, None, 0, 0
    for (t, tbl), lst in sigs.items():
        lst.sort(key=lambda x: x[0])
        if t not in storm_t:
            continue
        storm_sig += len(lst)
        storm_counted += sum(v["counts"]["update"] for _, v in lst)
        buckets = defaultdict(int)
        for ts, _ in lst:
            buckets[int(ts)] += 1
        per_sec_max = max(per_sec_max, max(buckets.values()))
        for (x, _), (y, _) in zip(lst, lst[1:]):
            g = (y - x) * 1000
            min_gap = g if min_gap is None else min(min_gap, g)
    rec.update(storm_signals=storm_sig, storm_signals_per_s_max=per_sec_max,
               storm_signal_min_gap_ms=min_gap, storm_updates_counted=storm_counted)
    # background tenants: match signals to commits (see the docstring)
    lat_all, lat_storm, lat_before, excess_storm = [], [], [], []
    uncovered, bg_counted = 0, 0
    window = (t_storm0, t_drained)
    for t, cl in commits.items():
        lst = sigs.get((t, f"public.{a.table}"), [])
        i, prev_ts = 0, None
        for ts, v in lst:
            bg_counted += v["counts"]["update"]
            lct = v["last_commit_time"]
            import datetime
            lct_s = datetime.datetime.fromisoformat(lct).timestamp()
            first = None
            while i < len(cl) and cl[i][0] <= lct_s + 1e-6:
                if first is None:
                    first = cl[i]
                i += 1
            if first is not None:
                lat = (ts - first[1]) * 1000
                lat_all.append(lat)
                earliest = first[1] if prev_ts is None else max(first[1], prev_ts + a.interval_ms / 1000)
                if window[0] <= first[1] <= window[1]:
                    lat_storm.append(lat)
                    excess_storm.append((ts - earliest) * 1000)
                elif first[1] < window[0]:
                    lat_before.append(lat)
            prev_ts = ts
        uncovered += len(cl) - i
    rec.update(bg_latency_ms=stats(lat_all), bg_latency_storm_ms=stats(lat_storm),
               bg_latency_before_ms=stats(lat_before), bg_excess_storm_ms=stats(excess_storm),
               bg_uncovered=uncovered, bg_updates_counted=bg_counted)
    return rec


# ---- report ------------------------------------------------------------------------------------

def fmt(v, f="%.0f"):
    return "-" if v is None else f % v


def cmd_report(a):
    recs = [json.loads(line) for line in open(a.runs) if line.strip()]
    p = print
    p(f"bench/storm: {a.storm_rows} storm rows over {a.storm_tenants} storm tenants in one transaction, "
      f"~{a.rate} one-row tx/s over {a.bg_tenants} background tenants; signals.interval_ms={a.interval_ms}; "
      f"{'--quick' if a.quick == '1' else 'full'} run, {a.elapsed} s")
    p("")
    broke = False
    for r in recs:
        p(f"== coalescing {r['mode']} ==")
        if "error" in r:
            broke = True
            p(f"  BROKE: {r['error']}")
        if "storm_rows" not in r:
            continue
        p(f"  storm transaction      {r['storm_rows']} rows, {r['storm_tx_s']:.1f} s from BEGIN to COMMIT")
        if "drain_s" in r:
            p(f"  drain                  {r['drain_s']:.1f} s from the storm's COMMIT to confirmed_lsn >= its end "
              f"({r['drain_from_start_s']:.1f} s from BEGIN)")
            p(f"  relay CPU              {r['cpu_to_drain_s']:.1f} s to the drain ({r['cpu_to_drain_pct']:.0f}% of a core); "
              f"{fmt(r.get('cpu_s'), '%.1f')} s in all ({fmt(r.get('cpu_pct'))}%)")
        if "peak_rss_mb" in r:
            p(f"  relay memory           peak RSS (VmHWM) {r['peak_rss_mb']:.0f} MB; max inflight seen "
              f"{r['max_inflight_mb']:.1f} MB; delivery errors {r['delivery_errors']:.0f}")
        if "row_messages" not in r:
            continue
        p(f"  messages               rows {r['row_messages']}  signals {r['signal_messages']}  "
          f"(background: {r['bg_transactions']} tx, {r['bg_rate']:.0f} tx/s achieved)")
        p(f"  storm signals          {r['storm_signals']} in all; max per (tenant, table) per second "
          f"{r['storm_signals_per_s_max']}; min gap {fmt(r['storm_signal_min_gap_ms'])} ms; "
          f"updates counted {r['storm_updates_counted']} of {r['storm_rows']}")
        for name, key in (("all", "bg_latency_ms"), ("before the storm", "bg_latency_before_ms"),
                          ("during the storm", "bg_latency_storm_ms")):
            s = r[key]
            p(f"  bg signal latency      {name:18s} n={s['n']:5d}  P50 {fmt(s['p50'])}  P99 {fmt(s['p99'])}  "
              f"max {fmt(s['max'])} ms")
        s = r["bg_excess_storm_ms"]
        p(f"  bg beyond the interval during the storm n={s['n']}  P50 {fmt(s['p50'])}  P99 {fmt(s['p99'])}  "
          f"max {fmt(s['max'])} ms  (CreateTime - max(commit, previous signal + interval))")
        p(f"  bg commits uncovered   {r['bg_uncovered']}; updates counted {r['bg_updates_counted']} "
          f"of {r['bg_transactions']}")
        p("")
    p("Goals (information only, never enforced):")
    for r in recs:
        if "storm_signals_per_s_max" not in r:
            continue
        g1 = r["storm_signals_per_s_max"] <= 1 and (r["storm_signal_min_gap_ms"] or 1e9) >= a.interval_ms - 2
        g2 = r["bg_excess_storm_ms"]["p99"]
        raw = r["bg_latency_storm_ms"]["p99"]
        p(f"  [{r['mode']:3s}] storm: at most one signal per (tenant, table) per interval: "
          f"{'met' if g1 else 'NOT met'} (max {r['storm_signals_per_s_max']}/s, min gap "
          f"{fmt(r['storm_signal_min_gap_ms'])} ms; CreateTime is in whole ms, so a gap 1-2 ms under "
          f"the interval counts as met)")
        p(f"  [{r['mode']:3s}] background P99 during the storm < 100 ms, beyond the pacing interval: "
          f"{'met' if g2 is not None and g2 < 100 else 'NOT met'} ({fmt(g2)} ms; "
          f"commit to signal, pacing included: {fmt(raw)} ms)")
        bound = a.inflight_mb + (a.held_mb if r["mode"] == "on" else 0)
        p(f"  [{r['mode']:3s}] relay memory within its bound: peak RSS {fmt(r.get('peak_rss_mb'))} MB vs "
          f"relay.max_inflight_bytes {a.inflight_mb} MB"
          + (f" + coalesce.max_held_bytes {a.held_mb} MB" if r["mode"] == "on" else "")
          + f" (+ the process itself); max inflight seen {fmt(r.get('max_inflight_mb'), '%.1f')} MB"
          + f": {'met' if r.get('max_inflight_mb', 1e9) <= bound else 'NOT met'}")
    p("  Note: at ~4 tx/s per background tenant a background tenant is never quiet for an interval, so")
    p("  its signals are paced by signals.interval_ms by design (P50 near 3/4 of an interval): the")
    p("  100 ms goal can only hold for a tenant's first change after a quiet interval. The line")
    p("  'bg beyond the interval' is the delay the storm adds on top of that pacing.")
    return 1 if broke else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("topics")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("topics", nargs="+")
    p = sub.add_parser("background")
    for k in ("--dsn", "--table", "--out"):
        p.add_argument(k, required=True)
    for k in ("--tenant-lo", "--tenant-hi", "--ids", "--rate"):
        p.add_argument(k, type=int, required=True)
    p = sub.add_parser("run")
    for k in ("--out", "--mode", "--bootstrap", "--dsn", "--relay", "--config", "--log", "--slot",
              "--table", "--row-topic", "--signal-topic", "--bg-out"):
        p.add_argument(k, required=True)
    for k in ("--port", "--storm-lo", "--storm-hi", "--bg-lo", "--bg-hi", "--bg-ids", "--rate",
              "--interval-ms"):
        p.add_argument(k, type=int, required=True)
    p.add_argument("--lead", type=float, default=5)
    p.add_argument("--tail", type=float, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    for k in ("--quick", "--storm-rows", "--storm-tenants", "--bg-tenants", "--rate", "--elapsed"):
        p.add_argument(k, required=True)
    for k in ("--interval-ms", "--inflight-mb", "--held-mb"):
        p.add_argument(k, type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "topics":
        cmd_topics(a)
        return 0
    if a.cmd == "background":
        cmd_background(a)
        return 0
    if a.cmd == "report":
        return cmd_report(a)
    return record_run({"mode": a.mode}, cmd_run, a)

if __name__ == "__main__":
    sys.exit(main())
