"""The measuring half of bench/e2e/run.sh: runs one pipeline (breakwater-relay, pg_recvlogical
piped to kcat, or pg_recvlogical alone), times it and appends one JSON record to --out.

  drive.py topics    --bootstrap B [--registry URL] TOPIC...
                                                       create topics (LogAppendTime), warm up the
                                                       broker (and the schema registry)
  drive.py drain-relay   ...                           drain a backlog through breakwater-relay
  drive.py drain-kcat    ...                           drain it through pg_recvlogical | kcat
  drive.py drain-floor   ...                           drain it through pg_recvlogical > /dev/null
  drive.py steady-relay  ...                           pgbench at a fixed rate, relay streaming
  drive.py steady-kcat   ...                           pgbench at a fixed rate, pipeline streaming

Every run subcommand writes a record, also when the run broke: then it carries "error" and the
exit status is 1. run.sh collects the records and report.py turns them into the report.

CPU is user + system time of the pipeline's own processes (all their threads) from
/proc/<pid>/stat, or from wait4() for processes that exit by themselves; peak RSS is VmHWM from
/proc/<pid>/status, or ru_maxrss. Latency is the message's LogAppendTime (Kafka's clock, in
milliseconds) minus the transaction's commit time (PostgreSQL's clock, in microseconds); both
clocks are this machine's. A drain's bytes in Kafka are the sizes of its topic's log segments in
the broker's data directory (--kafka-data), read once the watermarks show every message.
"""
import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Broke(Exception):
    """A run that broke: the record carries the message and the exit status is 1."""


# ---- small helpers -----------------------------------------------------------------------------

def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def proc_cpu(pid):
    """User + system seconds of a live process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK   # fields 14 and 15 of stat(5)


def proc_mem(pid):
    """(VmHWM, VmRSS) of a live process, in MB."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, kb = line.split()[:2]
                vals[name[:-1]] = int(kb) / 1024
    return vals.get("VmHWM", 0.0), vals.get("VmRSS", 0.0)


def reap(proc):
    """Waits for a child with wait4(): (exit code, CPU seconds, peak RSS MB)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def metrics(port):
    """The relay's /metrics as {name: value}, labels dropped; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{", 1)[0]] = float(value)
    return out


def topic_count(bootstrap, topic):
    """Messages in a topic: the sum over its partitions of high minus low watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-e2e-count",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return 0
        n = 0
        for p in t.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            n += hi - lo
        return n
    finally:
        c.close()


def topic_log_bytes(data_dir, topic):
    """Bytes of a topic's log segments on the broker's disk (every partition's *.log files, so
    record batches, keys, values and headers as Kafka stores them); None without a data
    directory. The admin API of confluent-kafka has no DescribeLogDirs, and the broker is local."""
    if not data_dir:
        return None
    total = 0
    for d in os.listdir(data_dir):
        if d.rpartition("-")[0] == topic and d.rpartition("-")[2].isdigit():
            part = os.path.join(data_dir, d)
            total += sum(os.path.getsize(os.path.join(part, f)) for f in os.listdir(part) if f.endswith(".log"))
    return total


def wait_count(bootstrap, topic, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        n = topic_count(bootstrap, topic)
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def consume_all(bootstrap, topic):
    """Every message of a one-partition topic, from the beginning to the high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-e2e-read",
                  "enable.auto.commit": False, "fetch.max.bytes": 64 << 20,
                  "max.partition.fetch.bytes": 16 << 20})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, lo)])
        out, last = [], lo - 1
        deadline = time.monotonic() + 120
        while last < hi - 1:
            if time.monotonic() > deadline:
                raise Broke(f"topic {topic}: read up to offset {last} of {hi} in 120 s")
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error():
                    raise Broke(f"topic {topic}: consumer error: {m.error()}")
                out.append(m)
                last = m.offset()
        return out
    finally:
        c.close()


def percentile(sorted_vals, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def latency_stats(lat_ms):
    lat_ms.sort()
    return {"n": len(lat_ms),
            "p50": percentile(lat_ms, 50), "p95": percentile(lat_ms, 95),
            "p99": percentile(lat_ms, 99), "max": lat_ms[-1] if lat_ms else None,
            "mean": sum(lat_ms) / len(lat_ms) if lat_ms else None}


def pg_scalar(dsn, sql, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()[0]


def slot_confirmed(dsn, slot):
    v = pg_scalar(dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                  (slot,))
    return lsn_int(v) if v else 0


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """Signals a child and waits for it; SIGKILL after the timeout. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ---- topics ------------------------------------------------------------------------------------

def cmd_topics(a):
    """Creates the topics with message.timestamp.type=LogAppendTime, then warms the broker up with
    an idempotent producer: a fresh broker answers the first producer-id request with
    "coordinator load in progress" and a retry, and its JIT is cold; neither must land inside a
    timed run. With --registry, the schema registry is warmed up too."""
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    futs = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1,
                                         config={"message.timestamp.type": "LogAppendTime"})
                                for t in a.topics + ["bench.e2e.warmup"]], operation_timeout=30)
    for t, f in futs.items():
        f.result(timeout=60)
    # log_level 3: the expected "coordinator load in progress" retry is not worth a warning
    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "linger.ms": 1,
                  "log_level": 3})
    # enough messages to get the broker's JIT going before the first timed drain
    for i in range(100_000):
        while True:
            try:
                p.produce("bench.e2e.warmup", value=b"x" * 300, key=str(i).encode())
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(60) != 0:
        raise Broke("warm-up messages were not acknowledged within 60 s")
    if a.registry:
        warm_up_registry(a.registry)
    return {"topics": len(a.topics)}


def warm_up_registry(url):
    """Registers schemas under throwaway subjects, the way the relay does (POST
    /subjects/{subject}/versions): a fresh registry's JVM takes a quarter of a second over its
    first registrations, which would otherwise land in the first Avro drain."""
    for i in range(100):
        schema = {"type": "record", "name": "Warmup", "namespace": "bench.e2e",
                  "fields": [{"name": f"f{j}", "type": ["null", "long"], "default": None} for j in range(i % 10 + 1)]}
        body = json.dumps({"schema": json.dumps(schema)}).encode()
        req = urllib.request.Request(f"{url}/subjects/bench.e2e.warmup-{i}-value/versions", data=body,
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            if "id" not in json.loads(r.read()):
                raise Broke(f"the schema registry at {url} answered a registration without an id")


# ---- drains ------------------------------------------------------------------------------------

def cmd_drain_relay(a):
    """Starts the relay on a slot that holds the backlog; the drain ends when /metrics shows every
    change delivered and the confirmed position at or past the end of the backlog."""
    end = lsn_int(a.end)
    log = open(a.log, "a")
    t0 = time.monotonic()
    proc = subprocess.Popen([a.relay, f"--config={a.config}", f"--http.listen=127.0.0.1:{a.port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    rec = {}
    try:
        t_first = t_deliv = t_conf = None
        deadline = t0 + a.timeout
        while t_conf is None:
            time.sleep(0.01)
            if proc.poll() is not None:
                raise Broke(f"the relay exited with status {proc.returncode} during the drain: {tail(a.log)}")
            m = metrics(a.port)
            now = time.monotonic()
            if m is None:
                if now > deadline:
                    raise Broke("the relay's /metrics never answered")
                continue
            delivered = m.get("breakwater_messages_delivered_total", 0)
            if t_first is None and delivered > 0:
                t_first = now
            if t_deliv is None and delivered >= a.messages:
                t_deliv = now
            if delivered >= a.messages and m.get("breakwater_confirmed_lsn", 0) >= end:
                t_conf = now
                rec.update(cpu_s=proc_cpu(proc.pid), peak_rss_mb=proc_mem(proc.pid)[0])
                rec.update(delivered=int(delivered), errors=int(m.get("breakwater_delivery_errors_total", 0)),
                           produced=int(m.get("breakwater_messages_produced_total", 0)))
            elif now > deadline:
                raise Broke(f"not done after {a.timeout} s: {int(delivered)} of {a.messages} delivered, "
                            f"confirmed {int(m.get('breakwater_confirmed_lsn', 0)):X} < end {end:X}")
        rec.update(wall_s=t_conf - t0, wall_ack_s=t_deliv - t0, first_ack_s=t_first - t0)
    finally:
        rc = stop(proc)
    if rc != 0:
        raise Broke(f"the relay exited with status {rc} after SIGTERM: {tail(a.log)}")
    rec["in_kafka"] = wait_count(a.bootstrap, a.topic, a.messages, 10)
    rec["kafka_bytes"] = topic_log_bytes(a.kafka_data, a.topic)
    if rec["in_kafka"] != a.messages:
        raise Broke(f"topic {a.topic} holds {rec['in_kafka']} messages, expected {a.messages}", rec)
    if rec.get("errors"):
        raise Broke(f"{rec['errors']} delivery errors", rec)
    return rec


def cmd_drain_kcat(a):
    """pg_recvlogical (wal2json) | kcat -P: ends when both have exited (kcat flushes at EOF);
    then every line must be in the topic."""
    err1, err2 = open(a.log + ".recvlogical", "a"), open(a.log + ".kcat", "a")
    t0 = time.monotonic()
    rl = subprocess.Popen([a.pg_recvlogical, "-d", a.dsn, "--slot", a.slot, "--start", "-E", a.end,
                           "--no-loop", "-f", "-"] + sum((["-o", o] for o in a.option), []),
                          stdout=subprocess.PIPE, stderr=err1)
    kc = subprocess.Popen(["kcat", "-P", "-b", a.bootstrap, "-t", a.topic], stdin=rl.stdout, stderr=err2)
    rl.stdout.close()
    rc1, cpu1, rss1 = reap(rl)
    t_rl = time.monotonic()
    rc2, cpu2, rss2 = reap(kc)
    t1 = time.monotonic()
    if rc1 != 0:
        raise Broke(f"pg_recvlogical exited with status {rc1}: {tail(a.log + '.recvlogical')}")
    if rc2 != 0:
        raise Broke(f"kcat exited with status {rc2}: {tail(a.log + '.kcat')}")
    rec = {"wall_s": t1 - t0, "wall_recvlogical_s": t_rl - t0, "cpu_s": cpu1 + cpu2,
           "cpu_recvlogical_s": cpu1, "cpu_kcat_s": cpu2, "peak_rss_mb": rss1 + rss2}
    rec["in_kafka"] = wait_count(a.bootstrap, a.topic, a.messages, 10)
    rec["kafka_bytes"] = topic_log_bytes(a.kafka_data, a.topic)
    if rec["in_kafka"] != a.messages:
        raise Broke(f"topic {a.topic} holds {rec['in_kafka']} messages, expected {a.messages}", rec)
    if slot_confirmed(a.dsn, a.slot) < lsn_int(a.end):
        raise Broke(f"slot {a.slot} stopped short of {a.end}", rec)
    return rec


def cmd_drain_floor(a):
    """pg_recvlogical with breakwater's binary format into /dev/null: what decoding and the
    replication connection cost for our plugin, with no Kafka at all."""
    err = open(a.log, "a")
    t0 = time.monotonic()
    rl = subprocess.Popen([a.pg_recvlogical, "-d", a.dsn, "--slot", a.slot, "--start", "-E", a.end,
                           "--no-loop", "-f", "/dev/null"] + sum((["-o", o] for o in a.option), []),
                          stderr=err)
    rc, cpu, rss = reap(rl)
    t1 = time.monotonic()
    if rc != 0:
        raise Broke(f"pg_recvlogical exited with status {rc}: {tail(a.log)}")
    if slot_confirmed(a.dsn, a.slot) < lsn_int(a.end):
        raise Broke(f"slot {a.slot} stopped short of {a.end}")
    return {"wall_s": t1 - t0, "cpu_s": cpu, "peak_rss_mb": rss}


# ---- steady load -------------------------------------------------------------------------------

def run_pgbench(a):
    """pgbench at a fixed rate; returns (transactions, seconds, its summary lines)."""
    cmd = [a.pgbench, "-n", "-M", "prepared", "-f", a.script, "-R", str(a.rate), "-T", str(a.duration),
           "-c", str(a.clients), "-j", str(a.jobs), a.dbname]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    t1 = time.monotonic()
    if done.returncode != 0:
        raise Broke(f"pgbench exited with status {done.returncode}: {done.stderr.strip()[-300:]}")
    m = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    if not m:
        raise Broke(f"pgbench printed no transaction count: {done.stdout[-300:]}")
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if failed and int(failed.group(1)) != 0:
        raise Broke(f"pgbench: {failed.group(1)} failed transactions")
    lag = re.search(r"rate limit schedule lag: avg ([\d.]+) \(max ([\d.]+)\) ms", done.stdout)
    return int(m.group(1)), t1 - t0, (float(lag.group(1)), float(lag.group(2))) if lag else None


def steady_record(a, tx, secs, lag, cpu, secs_cpu, mem):
    return {"rate": a.rate, "duration_s": a.duration, "transactions": tx,
            "achieved_tps": tx / a.duration, "pgbench_wall_s": secs,
            "schedule_lag_ms": lag, "cpu_s": cpu, "cpu_pct": 100 * cpu / secs_cpu,
            "peak_rss_mb": mem[0], "rss_mb": mem[1]}


WARMUP_SQL = ("BEGIN; UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 1 AND id = 1; "
              "INSERT INTO pad VALUES (repeat('w', 1000)); COMMIT")


def warm_up(a, conn, lines):
    """One transaction through the pipeline before the load: an update of accounts (the table
    measured) and a 1 kB row in pad (which pushes the update's line through kcat's 128-byte
    reads). It absorbs the pipeline's start-up costs, such as a producer's first metadata request
    for a topic, which are not steady-state latency; its own latency is reported apart. Waits
    until `lines` messages are in the topic."""
    conn.execute(WARMUP_SQL)
    got = wait_count(a.bootstrap, a.topic, lines, 30)
    if got < lines:
        raise Broke(f"topic {a.topic}: the warm-up transaction did not arrive within 30 s")


def cmd_steady_relay(a):
    """The relay streams a fresh slot; pgbench runs; every message must then be delivered and
    confirmed. Latency per message: LogAppendTime minus the commit_time_us header."""
    log = open(a.log, "a")
    proc = subprocess.Popen([a.relay, f"--config={a.config}", f"--http.listen=127.0.0.1:{a.port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise Broke(f"the relay exited with status {proc.returncode} at start: {tail(a.log)}")
            m = metrics(a.port)
            if m and m.get("breakwater_up") == 1:
                break
            if time.monotonic() > deadline:
                raise Broke(f"the relay was not up after 60 s: {tail(a.log)}")
            time.sleep(0.05)
        with psycopg.connect(a.dsn, autocommit=True) as conn:
            warm_up(a, conn, 1)
        time.sleep(0.5)
        cpu0, t0 = proc_cpu(proc.pid), time.monotonic()
        tx, secs, lag = run_pgbench(a)
        cpu1, t1 = proc_cpu(proc.pid), time.monotonic()
        mem = proc_mem(proc.pid)
        end = lsn_int(pg_scalar(a.dsn, "SELECT pg_current_wal_insert_lsn()::text"))
        deadline = time.monotonic() + 60
        while True:
            m = metrics(a.port) or {}
            if m.get("breakwater_messages_delivered_total", 0) >= tx and m.get("breakwater_confirmed_lsn", 0) >= end:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Broke(f"after the load: {int(m.get('breakwater_messages_delivered_total', 0))} of {tx} "
                            f"delivered, or the relay exited: {tail(a.log)}")
            time.sleep(0.02)
    finally:
        rc = stop(proc)
    if rc != 0:
        raise Broke(f"the relay exited with status {rc} after SIGTERM: {tail(a.log)}")
    rec = steady_record(a, tx, secs, lag, cpu1 - cpu0, t1 - t0, mem)
    lat = []
    for msg in consume_all(a.bootstrap, a.topic):
        ts_type, ts_ms = msg.timestamp()
        if ts_type != TIMESTAMP_LOG_APPEND_TIME:
            raise Broke(f"topic {a.topic} has no LogAppendTime (timestamp type {ts_type})")
        commit_us = int(dict(msg.headers() or [])["commit_time_us"])
        lat.append(ts_ms - commit_us / 1000)
    return finish_steady(a, rec, lat, tx)


def finish_steady(a, rec, lat, tx):
    """The first message is the warm-up's; the rest must be pgbench's transactions, all of them."""
    rec["in_kafka"] = len(lat)
    rec["warmup_latency_ms"] = lat[0] if lat else None
    rec["latency_ms"] = latency_stats(lat[1:])
    if len(lat) != tx + 1:
        raise Broke(f"topic {a.topic} holds {len(lat)} updates, expected {tx + 1} "
                    f"(the warm-up and pgbench's {tx})", rec)
    return rec


def parse_w2j_time(s):
    """wal2json's timestamp, '2026-11-24 08:12:21.401388+00', as microseconds since the epoch."""
    d = datetime.datetime.fromisoformat(s)   # Python 3.11 reads "+00" and a missing fraction
    return (d - EPOCH) // datetime.timedelta(microseconds=1)


def cmd_steady_kcat(a):
    """pg_recvlogical (wal2json v2, include-timestamp) | kcat -P streams a fresh slot; pgbench
    runs. kcat reads its input 128 bytes at a time, so the end of the last line would wait for more
    input that never comes: one padding transaction on another table, committed right after the
    load, pushes it through (and is left out of the statistics)."""
    pg_scalar(a.dsn, "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'wal2json')", (a.slot,))
    err1, err2 = open(a.log + ".recvlogical", "a"), open(a.log + ".kcat", "a")
    rl = subprocess.Popen([a.pg_recvlogical, "-d", a.dsn, "--slot", a.slot, "--start", "-f", "-"]
                          + sum((["-o", o] for o in a.option), []), stdout=subprocess.PIPE, stderr=err1)
    kc = subprocess.Popen(["kcat", "-P", "-b", a.bootstrap, "-t", a.topic] + a.kcat_arg,
                          stdin=rl.stdout, stderr=err2)
    rl.stdout.close()
    pad = psycopg.connect(a.dsn, autocommit=True)
    try:
        deadline = time.monotonic() + 60
        while not pg_scalar(a.dsn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (a.slot,)):
            if rl.poll() is not None or kc.poll() is not None or time.monotonic() > deadline:
                raise Broke(f"the pipeline did not start: {tail(a.log + '.recvlogical')} {tail(a.log + '.kcat')}")
            time.sleep(0.05)
        warm_up(a, pad, 2)   # its B and U lines
        time.sleep(0.5)
        cpu0, t0 = proc_cpu(rl.pid) + proc_cpu(kc.pid), time.monotonic()
        tx, secs, lag = run_pgbench(a)
        cpu1, t1 = proc_cpu(rl.pid) + proc_cpu(kc.pid), time.monotonic()
        pad.execute("INSERT INTO pad VALUES (repeat('x', 1000))")
        mem = [x + y for x, y in zip(proc_mem(rl.pid), proc_mem(kc.pid))]
        # B, U, C per transaction, then the padding's B: its 1 kB line pushed every earlier
        # line through; the padding's own last lines wait for EOF
        want = 4 + 3 * tx + 1   # (the warm-up's B, U, I, C first)
        got = wait_count(a.bootstrap, a.topic, want, 60)
        if got < want:
            raise Broke(f"topic {a.topic}: {got} of {want} lines after 60 s")
    finally:
        pad.close()
        stop(rl, signal.SIGINT)
        try:
            kc.wait(30)   # EOF ends it, after it has flushed the rest
        except subprocess.TimeoutExpired:
            stop(kc)
    if rl.returncode not in (0, -signal.SIGINT) or kc.returncode != 0:
        raise Broke(f"pg_recvlogical exited with {rl.returncode}, kcat with {kc.returncode}: "
                    f"{tail(a.log + '.recvlogical')} {tail(a.log + '.kcat')}")
    rec = steady_record(a, tx, secs, lag, cpu1 - cpu0, t1 - t0, mem)
    lat = []
    for msg in consume_all(a.bootstrap, a.topic):
        ts_type, ts_ms = msg.timestamp()
        if ts_type != TIMESTAMP_LOG_APPEND_TIME:
            raise Broke(f"topic {a.topic} has no LogAppendTime (timestamp type {ts_type})")
        row = json.loads(msg.value())
        if row.get("action") == "U" and row.get("table") == a.table:
            lat.append(ts_ms - parse_w2j_time(row["timestamp"]) / 1000)
    return finish_steady(a, rec, lat, tx)


# ---- main --------------------------------------------------------------------------------------

def record_run(rec, run, a):
    """Runs run(a), appends rec with its results (or its error) to a.out; returns the exit status:
    1 when the run broke, so the benchmark reports it."""
    status = 0
    try:
        rec.update(run(a))
    except Broke as e:
        rec["error"] = e.args[0]
        if len(e.args) > 1:
            rec.update(e.args[1])
        status = 1
    except Exception as e:  # noqa: BLE001 - anything else is a broken run too
        rec["error"] = f"{type(e).__name__}: {e}"
        status = 1
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--out", required=True, help="JSON-lines file to append the record to")
        p.add_argument("--label", required=True, help="what the record is, for the report")
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--topic", default="")
        p.add_argument("--log", required=True)
        p.add_argument("--dsn", default="")
        return p

    p = sub.add_parser("topics")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", default="", help="schema registry base URL (Confluent API) to warm up")
    p.add_argument("topics", nargs="+")

    for name in ("drain-relay", "drain-kcat", "drain-floor"):
        p = common(sub.add_parser(name))
        p.add_argument("--end", required=True)
        p.add_argument("--messages", type=int, default=0)
        p.add_argument("--slot", default="")
        p.add_argument("--option", action="append", default=[])
        p.add_argument("--relay", default="")
        p.add_argument("--config", default="")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--kafka-data", default="", help="the broker's log.dirs, to size the topic")
        p.add_argument("--pg-recvlogical", default="pg_recvlogical")

    for name in ("steady-relay", "steady-kcat"):
        p = common(sub.add_parser(name))
        p.add_argument("--rate", type=int, required=True)
        p.add_argument("--duration", type=int, required=True)
        p.add_argument("--clients", type=int, default=4)
        p.add_argument("--jobs", type=int, default=2)
        p.add_argument("--script", required=True)
        p.add_argument("--dbname", required=True)
        p.add_argument("--table", default="accounts")
        p.add_argument("--pgbench", default="pgbench")
        p.add_argument("--slot", default="")
        p.add_argument("--option", action="append", default=[])
        p.add_argument("--kcat-arg", action="append", default=[])
        p.add_argument("--relay", default="")
        p.add_argument("--config", default="")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--pg-recvlogical", default="pg_recvlogical")

    a = ap.parse_args()
    if a.cmd == "topics":
        try:
            cmd_topics(a)
        except Exception as e:  # noqa: BLE001 - reported, and the run stops
            print(f"bench/e2e: creating topics: {e}", file=sys.stderr)
            return 1
        return 0

    run = {"drain-relay": cmd_drain_relay, "drain-kcat": cmd_drain_kcat, "drain-floor": cmd_drain_floor,
           "steady-relay": cmd_steady_relay, "steady-kcat": cmd_steady_kcat}[a.cmd]
    rec = {"kind": a.cmd, "label": a.label, "topic": a.topic}
    if hasattr(a, "rate"):
        rec["rate"] = a.rate
    return record_run(rec, run, a)


if __name__ == "__main__":
    sys.exit(main())
