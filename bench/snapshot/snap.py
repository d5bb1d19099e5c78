"""The measuring half of bench/snapshot/run.sh: times one read of a table, by psql's COPY (the read
floor) or by breakwater-relay's initial snapshot into Kafka, and appends one JSON record to --out.

  snap.py topics  --bootstrap B TOPIC...        create topics (1 partition), warm the broker up
  snap.py floor   --label L --sql SQL ...       psql -c SQL > /dev/null, timed
  snap.py peer    --label L --sql SQL ...       psql -c SQL | kcat -P: the same rows into Kafka, unsafe
  snap.py relay   --label L --config FILE ...   breakwater-relay with snapshot.mode=initial-only
  snap.py report  --runs FILE ...               the printed report from the records

Every run subcommand writes a record, also when the run broke: then it carries "error" and the exit
status is 1.

Wall time is from just before the process starts until it has exited. Its CPU comes from wait4()
(user + system seconds of all its threads); its peak RSS is VmHWM in /proc/<pid>/status, read every
10 ms while it runs (not ru_maxrss: a child forked from this Python process and then exec'd keeps
the parent's ~40 MB as its ru_maxrss, so every small process would read ~40 MB). The server's CPU
is the backend that served the run: the growth of the postmaster's reaped-children time (cutime +
cstime in /proc/<postmaster>/stat, 10 ms ticks), read once every backend the run started has exited
and been reaped (the way bench/decode counts the walsender). The broker's CPU is its JVM's growth
in /proc/<pid>/stat over the run. A relay or peer run must leave exactly --rows messages in its
topic (high minus low watermark of every partition: no full consume).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from drive import Broke, cmd_topics as e2e_topics, proc_cpu, reap, tail, topic_count, topic_log_bytes  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DONE_RE = re.compile(r"snapshot: done: (\d+) rows from (\d+) table\(s\) in ([0-9.]+) s \((\d+) rows/s\)")


# ---- the server's side -------------------------------------------------------------------------

def postmaster_pid(pgdata):
    with open(os.path.join(pgdata, "postmaster.pid")) as f:
        return int(f.readline())


def children(pid):
    """Pids whose parent is pid (the postmaster's backends and auxiliary processes)."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:
            out.add(int(d))
    return out


def reaped_s(pid):
    """CPU seconds of the children the postmaster has waited for (cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[13]) + int(rest[14])) / CLK_TCK   # fields 16 and 17 of stat(5)


def server_cpu_after(pm, before, ticks0, timeout=10.0):
    """Waits until the backends started since `before` have exited and been reaped; their CPU
    seconds, or None when one is still there after the timeout."""
    deadline = time.monotonic() + timeout
    while children(pm) - before:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return reaped_s(pm) - ticks0


class PeakRSS(threading.Thread):
    """VmHWM of a running process, read every 10 ms until it exits; .mb is the last value read."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.mb = pid, None

    def run(self):
        path = f"/proc/{self.pid}/status"
        while True:
            try:
                with open(path) as f:
                    hwm = [line for line in f if line.startswith("VmHWM:")]
            except OSError:
                return
            if not hwm:   # a zombie has no memory left to report
                return
            self.mb = int(hwm[0].split()[1]) / 1024
            time.sleep(0.01)


def record(a, rec):
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---- runs --------------------------------------------------------------------------------------

def cmd_floor(a):
    """psql -c 'COPY ... TO STDOUT' into /dev/null: PostgreSQL reading and sending the rows, and a
    client that receives them and throws them away."""
    rec = {"kind": "floor", "label": a.label, "rep": a.rep, "rows": a.rows}
    pm = postmaster_pid(a.pgdata)
    before = children(pm)
    ticks0 = reaped_s(pm)
    t0 = time.monotonic()
    with open(os.devnull, "wb") as null, open(a.log, "ab") as log:
        proc = subprocess.Popen([a.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", a.dsn, "-c", a.sql],
                                stdout=null, stderr=log)
        code, cpu, _ = reap(proc)
    rec["wall_s"] = time.monotonic() - t0
    rec.update(client_cpu_s=cpu, exit=code)
    rec["server_cpu_s"] = server_cpu_after(pm, before, ticks0)
    if code != 0:
        rec["error"] = f"psql exited with {code}: {tail(a.log, 3)}"
    record(a, rec)
    return 0 if "error" not in rec else 1


def check_topic(a, rec):
    rec["messages"] = topic_count(a.bootstrap, a.topic)
    rec["kafka_bytes"] = topic_log_bytes(a.kafka_data, a.topic)
    if rec["messages"] != a.rows:
        raise Broke(f"topic {a.topic} holds {rec['messages']} messages, not {a.rows}")


def cmd_peer(a):
    """psql -c 'COPY (SELECT key, value ...) TO STDOUT' | kcat -P -K<tab>: the same rows read the same
    way and published with the relay's producer settings (acks=all, idempotence, linger.ms=1), as
    what a hand-made pipeline costs. Nothing checks what Kafka acknowledged against what was read;
    kcat flushes at EOF and exits."""
    rec = {"kind": "peer", "label": a.label, "rep": a.rep, "rows": a.rows, "topic": a.topic}
    pm = postmaster_pid(a.pgdata)
    before = children(pm)
    ticks0 = reaped_s(pm)
    broker0 = proc_cpu(a.broker_pid)
    with open(a.log, "ab") as log:
        t0 = time.monotonic()
        psql = subprocess.Popen([a.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", a.dsn, "-c", a.sql],
                                stdout=subprocess.PIPE, stderr=log)
        kcat = subprocess.Popen([a.kcat, "-P", "-b", a.bootstrap, "-t", a.topic, "-K", "\t",
                                 "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=1"],
                                stdin=psql.stdout, stdout=log, stderr=log)
        psql.stdout.close()
        peak = PeakRSS(kcat.pid)
        peak.start()
        code_p, cpu_p, _ = reap(psql)
        code_k, cpu_k, _ = reap(kcat)
    rec["wall_s"] = time.monotonic() - t0
    peak.join()
    rec["broker_cpu_s"] = proc_cpu(a.broker_pid) - broker0
    rec.update(cpu_s=cpu_p + cpu_k, kcat_cpu_s=cpu_k, rss_mb=peak.mb, exit=code_p or code_k)
    rec["server_cpu_s"] = server_cpu_after(pm, before, ticks0)
    try:
        if code_p != 0 or code_k != 0:
            raise Broke(f"psql exited with {code_p}, kcat with {code_k}: {tail(a.log, 3)}")
        check_topic(a, rec)
    except Broke as e:
        rec["error"] = str(e)
    record(a, rec)
    return 0 if "error" not in rec else 1


def cmd_relay(a):
    """breakwater-relay with snapshot.mode=initial-only: it reads the table, publishes every row,
    waits for Kafka's acknowledgements and exits."""
    rec = {"kind": "relay", "label": a.label, "rep": a.rep, "rows": a.rows, "chunk_rows": a.chunk_rows,
           "topic": a.topic}
    pm = postmaster_pid(a.pgdata)
    before = children(pm)
    ticks0 = reaped_s(pm)
    broker0 = proc_cpu(a.broker_pid)
    with open(a.log, "ab") as log:
        log_start = log.tell()
        t0 = time.monotonic()
        proc = subprocess.Popen([a.relay, f"--config={a.config}"], stdout=log, stderr=subprocess.STDOUT)
        peak = PeakRSS(proc.pid)
        peak.start()
        try:
            code, cpu, _ = reap(proc)
        except KeyboardInterrupt:
            proc.kill()
            raise
    rec["wall_s"] = time.monotonic() - t0
    peak.join()
    rec["broker_cpu_s"] = proc_cpu(a.broker_pid) - broker0
    rec.update(cpu_s=cpu, rss_mb=peak.mb, exit=code)
    rec["server_cpu_s"] = server_cpu_after(pm, before, ticks0)
    try:
        with open(a.log, errors="replace") as f:
            f.seek(log_start)
            m = None
            for line in f:
                m = DONE_RE.search(line) or m
        if m:
            rec["relay_rows"] = int(m.group(1))
            # its rate has more digits than its seconds (%.1f)
            rec["relay_rate"] = int(m.group(4))
            rec["relay_s"] = int(m.group(1)) / int(m.group(4)) if int(m.group(4)) else float(m.group(3))
        if code != 0:
            raise Broke(f"the relay exited with {code}: {tail(a.log, 3)}")
        if m is None:
            raise Broke(f"the relay's log has no 'snapshot: done' line: {tail(a.log, 3)}")
        check_topic(a, rec)
        if rec["relay_rows"] != a.rows:
            raise Broke(f"the relay says it sent {rec['relay_rows']} rows, not {a.rows}")
    except Broke as e:
        rec["error"] = str(e)
    record(a, rec)
    return 0 if "error" not in rec else 1


# ---- report ------------------------------------------------------------------------------------

def med(recs, key):
    vals = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def rng(recs, key, fmt):
    vals = [r[key] for r in recs if r.get(key) is not None]
    if len(vals) < 2:
        return ""
    return f" ({fmt % min(vals)}-{fmt % max(vals)})"


def f(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def per_row(secs, rows):
    return None if secs is None else secs * 1e6 / rows


def ratio(a, b, fmt="%.2fx"):
    return "-" if a is None or b is None or b == 0 else fmt % (a / b)


def cmd_report(a):
    recs = [json.loads(line) for line in open(a.runs) if line.strip()]
    broken = [r for r in recs if "error" in r]
    by = {}
    for r in recs:
        if "error" not in r:
            by.setdefault(r["label"], []).append(r)
    order = list(dict.fromkeys(r["label"] for r in recs))

    def rows_of(lab):
        return by[lab][0]["rows"] if by.get(lab) else None

    def rate(lab, key="wall_s"):
        v = med(by.get(lab, []), key)
        return rows_of(lab) / v if v else None

    out = []
    w = out.append
    w(f"breakwater snapshot benchmark{' (--quick: not for quoting)' if a.quick else ''}")
    w(f"  {a.pg}; Kafka {a.kafka}; relay {a.relay_version}; {a.cpus} CPUs; {a.elapsed} s in all")
    w(f"  public.{a.big}: {a.big_rows} rows, {a.big_mb} MB heap; public.{a.small}: {a.small_rows} rows, "
      f"{a.small_mb} MB heap. Columns tenant_id text ({a.tenants} tenants), id bigint, customer_id int,")
    w("  status text, total numeric(12,2), created_at timestamptz, note text (40 B); PRIMARY KEY (tenant_id, id);")
    w("  inserted in id order (tenants interleaved in the heap); VACUUM ANALYZE")
    w(f"  plan of the ordered COPY: {a.plan}")
    w(f"  {a.reps} round(s); medians, min-max in brackets")
    w("")

    w(f"Read floor: psql -c 'COPY ... TO STDOUT' > /dev/null, public.{a.big}")
    w(f"  {'run':<20} {'wall s':>16} {'rows/s':>9} {'server us/row':>13} {'psql us/row':>11}")
    for lab in order:
        rs = by.get(lab, [])
        if not rs or rs[0]["kind"] != "floor":
            continue
        rows = rows_of(lab)
        w(f"  {lab:<20} {f(med(rs, 'wall_s'), '%.2f') + rng(rs, 'wall_s', '%.2f'):>16} {f(rate(lab)):>9} "
          f"{f(per_row(med(rs, 'server_cpu_s'), rows), '%.2f'):>13} {f(per_row(med(rs, 'client_cpu_s'), rows), '%.2f'):>11}")
    w("  floor-ordered: COPY (SELECT * ... ORDER BY tenant_id, id); floor-plain: COPY table (heap order)")
    w("")

    w("Into Kafka: the relay (snapshot.mode=initial-only, value.format=json, signals off, its defaults:")
    w("acks=all, idempotent, linger.ms=1) and a hand-made pipeline; one-partition topics")
    w(f"  {'run':<20} {'rows':>8} {'wall s':>16} {'rows/s':>8} {'own rows/s':>10} {'CPU us/row':>10} "
      f"{'server us/row':>13} {'broker us/row':>13} {'peak RSS MB':>16} {'B/msg':>5}")
    for lab in order:
        rs = by.get(lab, [])
        if not rs or rs[0]["kind"] not in ("relay", "peer"):
            continue
        rows = rows_of(lab)
        kb = med(rs, "kafka_bytes")
        w(f"  {lab:<20} {rows:>8} {f(med(rs, 'wall_s'), '%.2f') + rng(rs, 'wall_s', '%.2f'):>16} {f(rate(lab)):>8} "
          f"{f(rate(lab, 'relay_s')):>10} {f(per_row(med(rs, 'cpu_s'), rows), '%.2f'):>10} "
          f"{f(per_row(med(rs, 'server_cpu_s'), rows), '%.2f'):>13} {f(per_row(med(rs, 'broker_cpu_s'), rows), '%.2f'):>13} "
          f"{f(med(rs, 'rss_mb'), '%.1f') + rng(rs, 'rss_mb', '%.1f'):>16} {f(kb / rows if kb else None):>5}")
    w("  wall: from start to exit (connections, topic lookup, every row acknowledged by Kafka)")
    w("  own rows/s: the rate of the relay's 'snapshot: done' line (its own clock, without process start-up)")
    w("  CPU: the relay's (all threads), or psql + kcat for the pipeline; server: the PostgreSQL backend(s);")
    w("  broker: the Kafka JVM during the run; B/msg: the topic's log segment bytes per message")
    w("  peer-copy-kcat: psql COPY (key json, row_to_json) ORDER BY key | kcat -P with the relay's producer")
    w("  settings: no envelope, no headers, nothing ties what was read to what Kafka acknowledged")
    w("")

    fo, fp, peer = rate("floor-ordered"), rate("floor-plain"), rate("peer-copy-kcat")
    w("Ratios (goal: >= 0.50x the read floor, memory flat in table size; printed, never enforced)")
    for lab in order:
        rs = by.get(lab, [])
        if not rs or rs[0]["kind"] != "relay" or rows_of(lab) != a.big_rows:
            continue
        r = rate(lab)
        goal = "-" if r is None or fo is None else ("met" if r / fo >= 0.5 else "not met")
        w(f"  {lab} rows/s: {ratio(r, fo)} the ordered floor (goal >= 0.50x: {goal}; "
          f"{ratio(rate(lab, 'relay_s'), fo)} on the relay's own clock), {ratio(r, fp)} the plain floor, "
          f"{ratio(r, peer)} the kcat pipeline")
        w(f"  {lab} CPU: {f(per_row(med(rs, 'cpu_s'), rows_of(lab)), '%.2f')} us/row in the relay, "
          f"{f(per_row(med(rs, 'server_cpu_s'), rows_of(lab)), '%.2f')} us/row in PostgreSQL "
          f"(the ordered floor: {f(per_row(med(by.get('floor-ordered', []), 'server_cpu_s'), a.big_rows), '%.2f')})")
    big, small = by.get(a.mem_big, []), by.get(a.mem_small, [])
    if big and small:
        rb, rsm = med(big, "rss_mb"), med(small, "rss_mb")
        w(f"  peak RSS, chunk_rows {big[0]['chunk_rows']}: {f(rsm, '%.1f')} MB at {small[0]['rows']} rows, "
          f"{f(rb, '%.1f')} MB at {big[0]['rows']} rows: {ratio(rb, rsm)} for {ratio(big[0]['rows'], small[0]['rows'], '%.0fx')} "
          f"the rows (flat: 1.00x)")
        w(f"  CPU per row, {small[0]['rows']} vs {big[0]['rows']} rows: "
          f"{f(per_row(med(small, 'cpu_s'), small[0]['rows']), '%.2f')} vs {f(per_row(med(big, 'cpu_s'), big[0]['rows']), '%.2f')} us")
    w("")
    w("Reading the numbers: the floor is PostgreSQL alone; the relay and the pipeline add JSON encoding")
    w("and Kafka (the broker's JVM, its acknowledgements) on the same cores as PostgreSQL. Compare ratios")
    w("within one run. See bench/README.md.")
    if broken:
        w("")
        w("errors:")
        for r in broken:
            w(f"  {r['label']} round {r.get('rep')}: {r['error']}")
    print("\n".join(out))
    return 1 if broken else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("topics")
    t.add_argument("--bootstrap", required=True)
    t.add_argument("topics", nargs="+")

    def run_common(s):
        s.add_argument("--out", required=True)
        s.add_argument("--label", required=True)
        s.add_argument("--rep", type=int, required=True)
        s.add_argument("--rows", type=int, required=True)
        s.add_argument("--pgdata", required=True)
        s.add_argument("--log", required=True)

    fl = sub.add_parser("floor")
    run_common(fl)
    fl.add_argument("--psql", required=True)
    fl.add_argument("--dsn", required=True)
    fl.add_argument("--sql", required=True)

    def kafka_common(s):
        s.add_argument("--bootstrap", required=True)
        s.add_argument("--topic", required=True)
        s.add_argument("--broker-pid", type=int, required=True)
        s.add_argument("--kafka-data")

    pe = sub.add_parser("peer")
    run_common(pe)
    kafka_common(pe)
    pe.add_argument("--psql", required=True)
    pe.add_argument("--dsn", required=True)
    pe.add_argument("--sql", required=True)
    pe.add_argument("--kcat", required=True)

    r = sub.add_parser("relay")
    run_common(r)
    kafka_common(r)
    r.add_argument("--relay", required=True)
    r.add_argument("--config", required=True)
    r.add_argument("--chunk-rows", type=int, required=True)

    rp = sub.add_parser("report")
    for name in ("--runs", "--quick", "--reps", "--big", "--big-rows", "--big-mb", "--small", "--small-rows",
                 "--small-mb", "--tenants", "--plan", "--mem-big", "--mem-small", "--pg", "--kafka",
                 "--relay-version", "--cpus", "--elapsed"):
        rp.add_argument(name, required=True)

    a = p.parse_args()
    if a.cmd == "topics":
        e2e_topics(argparse.Namespace(bootstrap=a.bootstrap, topics=a.topics, registry=None))
        return 0
    if a.cmd == "report":
        a.quick = a.quick == "1"
        a.big_rows, a.small_rows = int(a.big_rows), int(a.small_rows)
        return cmd_report(a)
    return {"floor": cmd_floor, "peer": cmd_peer, "relay": cmd_relay}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
