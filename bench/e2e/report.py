"""Turns the records of bench/e2e/run.sh (one JSON object per run, written by drive.py) into its
report: drain medians, rates and ratios; steady-load latency percentiles; the targets, for
information. The exit status never depends on speed."""
import argparse
import json
import re
import statistics
import sys

DRAIN_LABELS = {
    "relay": "breakwater-relay -> Kafka (acks=all)",
    "relay-avro": "breakwater-relay, value.format=avro",
    "kcat": "pg_recvlogical wal2json v2 | kcat -P",
    "floor": "pg_recvlogical breakwater > /dev/null",
}
STEADY_LABELS = {
    "relay": "breakwater-relay",
    "kcat": "pg_recvlogical | kcat",
}
TARGET_DRAIN_RATE = 70_000
TARGET_P99_RATE, TARGET_P99_MS = 5000, 10.0


def fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def table(head, widths, rows):
    def row(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [row(head), row(tuple("-" * w for w in widths))]
    out += [row(r) for r in rows]
    return out


def main():
    ap = argparse.ArgumentParser()
    for name in ("runs", "errors", "pg", "kafka", "relay-version", "kcat", "elapsed", "wal-mb",
                 "workload-s", "cpus"):
        ap.add_argument("--" + name, default="?")
    for name in ("quick", "reps", "steady-reps", "rows", "changes", "txns", "duration", "tenants", "ids"):
        ap.add_argument("--" + name, type=int, default=0)
    a = ap.parse_args()

    runs = []
    with open(a.runs) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    other_errors = []
    try:
        with open(a.errors) as f:
            other_errors = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        pass

    drains = {}
    for r in runs:
        if r["kind"].startswith("drain-"):
            drains.setdefault(r["label"], []).append(r)
    steady = [r for r in runs if r["kind"].startswith("steady-")]
    seen = {}
    for r in steady:   # run number per (rate, pipeline), in the order they ran
        seen[(r.get("rate"), r["label"])] = seen.get((r.get("rate"), r["label"]), 0) + 1
        r["run"] = seen[(r.get("rate"), r["label"])]
    steady.sort(key=lambda r: (r.get("rate") or 0, r["label"] != "relay", r["run"]))

    out = []
    out.append("Breakwater end-to-end benchmark (bench/e2e/run.sh%s)" % (" --quick" if a.quick else ""))
    kcat = re.match(r"Version (\S+).*?(librdkafka \S+)", a.kcat)
    kafka = a.kafka.replace("kafka_", "").split("-")[-1]
    out.append(f"{a.pg.strip()}; Kafka {kafka} (one local broker, KRaft); {a.relay_version.strip()}; "
               f"kcat {kcat.group(1) + ' (' + kcat.group(2) + ')' if kcat else a.kcat}")
    out.append(f"{a.cpus} CPUs, everything on this machine; whole run {a.elapsed} s")
    out.append("")

    # ---- drain
    ok = {k: [r for r in v if "error" not in r] for k, v in drains.items()}
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in ok.items() if v}
    med_cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in ok.items() if v}
    max_rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in ok.items() if v}
    # the topic's log segments on the broker's disk (records without it: an older drive.py)
    med_bytes = {k: statistics.median(r["kafka_bytes"] for r in v) for k, v in ok.items()
                 if v and all(r.get("kafka_bytes") is not None for r in v)}
    out.append(f"1. Backlog drain: public.main, {a.rows} inserts in 1000-row transactions, then {a.rows} "
               f"updates in 10k-row transactions")
    out.append(f"   ({a.changes} changes in {a.txns} transactions, {a.wal_mb} MB of WAL, written in "
               f"{a.workload_s} s while no slot was read); {a.reps} drain(s) per pipeline, median shown")
    out.append("   wall: start of the pipeline until the relay's /metrics show every change delivered and the")
    out.append("   confirmed LSN >= the end of the backlog (relay), kcat has exited after pg_recvlogical reached")
    out.append("   the end (kcat), pg_recvlogical has exited (floor). CPU and peak RSS: the pipeline's own")
    out.append("   processes (relay; pg_recvlogical + kcat), not PostgreSQL's walsender nor the broker.")
    out.append("   value.format=avro: the same relay writing Confluent-framed Avro, schemas registered in a local")
    out.append("   schema registry (Apicurio, Confluent API). CPU us/chg: CPU s per change (kcat's BEGIN/COMMIT")
    out.append("   lines not counted). Kafka MB: the topic's log segments on the broker's disk.")
    rows = []
    for k in ("relay", "relay-avro", "kcat", "floor"):
        if k not in drains:
            continue
        if k not in med:
            rows.append((DRAIN_LABELS[k], "error") + ("",) * 8)
            continue
        walls = [r["wall_s"] for r in ok[k]]
        rows.append((
            DRAIN_LABELS[k], f"{med[k]:.2f}", f"{min(walls):.2f}-{max(walls):.2f}",
            f"{a.changes / med[k]:,.0f}", f"{med_cpu[k]:.2f}", f"{1e6 * med_cpu[k] / a.changes:.1f}",
            f"{max_rss[k]:.0f}", f"{med_bytes[k] / 1e6:.1f}" if k in med_bytes else "-",
            f"{med[k] / med['kcat']:.2f}x" if "kcat" in med else "-",
            f"{med[k] / med['floor']:.2f}x" if "floor" in med else "-",
        ))
    out += ["   " + line for line in table(
        ("pipeline", "median s", "min-max s", "changes/s", "CPU s", "CPU us/chg", "peak RSS MB", "Kafka MB",
         "x kcat", "x floor"),
        (37, 8, 11, 9, 6, 10, 11, 8, 6, 7), rows)]
    ack_rate = {}   # changes/s from the first acknowledgement to the last, median
    for k, name in (("relay", "relay"), ("relay-avro", "relay, avro")):
        if not ok.get(k):
            continue
        first = statistics.median(r["first_ack_s"] for r in ok[k])
        ack = statistics.median(r["wall_ack_s"] for r in ok[k])
        after = ack_rate[k] = statistics.median(a.changes / (r["wall_ack_s"] - r["first_ack_s"]) for r in ok[k])
        out.append(f"   {name} (medians): first message acknowledged after {first:.2f} s, last after {ack:.2f} s, "
                   f"confirmed LSN past the end after {med[k]:.2f} s;")
        out.append(f"   {after:,.0f} changes/s from the first acknowledgement to the last")
        if first > 0.5:
            out.append("   (the relay names its topic first in a produce call; librdkafka 2.0 looks such a topic up")
            out.append("   only on its 1-second topic scan, so the first message waits up to 1 s: see bench/README.md)")
    if "relay" in med and "relay-avro" in med:
        # throughput: changes/s, avro over json; CPU and bytes: per message, avro over json. The
        # drain ends at a status update (the confirmed LSN moves once per relay.status_interval_ms),
        # so the wall-time ratio is coarse: the ratio between acknowledgements goes beside it.
        line = (f"   avro/json: {med['relay'] / med['relay-avro']:.2f}x throughput "
                f"({ack_rate['relay-avro'] / ack_rate['relay']:.2f}x from first to last acknowledgement), "
                f"{med_cpu['relay-avro'] / med_cpu['relay']:.2f}x CPU per message, "
                f"{max_rss['relay-avro'] / max_rss['relay']:.2f}x peak RSS")
        if "relay" in med_bytes and "relay-avro" in med_bytes:
            line += f", {med_bytes['relay-avro'] / med_bytes['relay']:.2f}x bytes in Kafka"
        out.append(line)
    elif "relay" in drains and "relay-avro" in drains:
        out.append("   avro/json: not measured (a drain broke: see errors)")
    per = [f"{name} {med_bytes[k] / a.changes:.0f}" for k, name in
           (("relay", "relay json"), ("relay-avro", "relay avro"), ("kcat", "kcat (wal2json v2)"))
           if k in med_bytes]
    if per:
        out.append("   bytes in Kafka per change (log segments: record batches, keys, values, headers): " + ", ".join(per))
    if "kcat" in ok and ok["kcat"]:
        rl = statistics.median(r["wall_recvlogical_s"] for r in ok["kcat"])
        cpu_rl = statistics.median(r["cpu_recvlogical_s"] for r in ok["kcat"])
        cpu_kc = statistics.median(r["cpu_kcat_s"] for r in ok["kcat"])
        out.append(f"   kcat pipeline: pg_recvlogical reached the end after {rl:.2f} s; CPU {cpu_rl:.2f} s "
                   f"pg_recvlogical + {cpu_kc:.2f} s kcat")
    out.append("   messages in Kafka (topic watermarks after each drain), and the topic's log on disk:")
    for k in ("relay", "relay-avro", "kcat"):
        for r in drains.get(k, []):
            if "in_kafka" in r:
                size = f" {r['kafka_bytes'] / 1e6:8.1f} MB" if r.get("kafka_bytes") is not None else ""
                extra = (f" ({a.changes} changes + {2 * a.txns} BEGIN/COMMIT lines)" if k == "kcat" else "")
                out.append(f"     {r['topic']:28} {r['in_kafka']:>8}{size}{extra}")
    out.append("")

    # ---- steady
    out.append(f"2. Steady load: pgbench -R RATE -T {a.duration} -c 4 -j 2 -M prepared, one-row UPDATE per "
               f"transaction on public.accounts")
    out.append(f"   keyed by (tenant_id, id), {a.tenants} tenants x {a.ids} ids, random tenant and id; "
               f"synchronous_commit=on; each pipeline alone on a fresh slot;")
    out.append(f"   {a.steady_reps} run(s) per rate and pipeline, one row each")
    out.append("   latency = the message's LogAppendTime (ms resolution) - its transaction's commit time "
               "(relay: header commit_time_us;")
    out.append("   kcat: wal2json's \"timestamp\"), over every message of the run. CPU % and RSS: the "
               "pipeline's own processes during the load.")
    rows = []
    for r in steady:
        lat = r.get("latency_ms") or {}
        if "error" in r and not lat:
            rows.append((str(r.get("rate", "?")), STEADY_LABELS[r["label"]], str(r["run"]), "error") + ("",) * 9)
            continue
        rows.append((
            str(r["rate"]), STEADY_LABELS[r["label"]], str(r["run"]), f"{r['achieved_tps']:.0f}", str(r["in_kafka"] - 1 if "in_kafka" in r else "-"),
            fmt(lat.get("p50")), fmt(lat.get("p95")), fmt(lat.get("p99")), fmt(lat.get("max")),
            fmt(lat.get("mean")), f"{r['cpu_pct']:.0f}", f"{r['peak_rss_mb']:.0f}",
            fmt(r.get("warmup_latency_ms"), ".0f"),
        ))
    out += ["   " + line for line in table(
        ("tx/s", "pipeline", "run", "achieved", "messages", "P50 ms", "P95 ms", "P99 ms", "max ms", "mean ms",
         "CPU %", "peak RSS MB", "first ms"),
        (5, 22, 3, 8, 8, 6, 6, 6, 6, 7, 5, 11, 8), rows)]
    out.append("   kcat produces with librdkafka's default linger.ms=5, the relay with its own default linger.ms=1.")
    out.append("   messages: pgbench's transactions in the topic (the warm-up's left out). first ms: latency of")
    out.append("   one warm-up transaction committed before the load, once the pipeline was connected: start-up")
    out.append("   costs such as a producer's first metadata request for a topic land there, not in the percentiles.")
    lags = [r for r in steady if r.get("schedule_lag_ms")]
    if lags:
        out.append("   pgbench's schedule lag, avg/max ms (how late pgbench itself started transactions: a max of")
        out.append("   tens of ms means the whole machine stalled, and every pipeline's tail shows it):")
        out.append("     " + "; ".join(f"{r['rate']} {r['label']} #{r['run']} {r['schedule_lag_ms'][0]:.1f}/"
                                       f"{r['schedule_lag_ms'][1]:.0f}" for r in lags))
    out.append("")

    # ---- targets
    out.append("targets (information only: the exit status never depends on speed)")
    if "relay" in med:
        rate = a.changes / med["relay"]
        out.append(f"  drain >= {TARGET_DRAIN_RATE:,} changes/s: relay {rate:,.0f} changes/s: "
                   f"{'met' if rate >= TARGET_DRAIN_RATE else 'not met'}")
    else:
        out.append(f"  drain >= {TARGET_DRAIN_RATE:,} changes/s: not measured")
    if "relay" in med and "kcat" in med:
        out.append(f"  drain close to the unsafe pipeline: the relay takes {med['relay'] / med['kcat']:.2f}x "
                   f"its time ({med['kcat'] / med['relay']:.0%} of its rate), "
                   f"{med_cpu['relay'] / med_cpu['kcat']:.2f}x its CPU")
    def p99s(label):
        return [r["latency_ms"]["p99"] for r in steady
                if r["label"] == label and r.get("rate") == TARGET_P99_RATE and r.get("latency_ms", {}).get("p99") is not None]
    if p99s("relay"):
        v = statistics.median(p99s("relay"))
        each = lambda vals: ", ".join(f"{x:.1f}" for x in vals)
        ref = f" (kcat pipeline: {each(p99s('kcat'))} ms)" if p99s("kcat") else ""
        out.append(f"  at {TARGET_P99_RATE} tx/s commit->Kafka P99 < {TARGET_P99_MS:.0f} ms: relay {each(p99s('relay'))} ms"
                   f"{ref}; median {v:.1f} ms: {'met' if v < TARGET_P99_MS else 'not met'}")
    else:
        out.append(f"  at {TARGET_P99_RATE} tx/s commit->Kafka P99 < {TARGET_P99_MS:.0f} ms: not measured")

    errs = [r for r in runs if "error" in r]
    if errs or other_errors:
        out.append("")
        out.append("errors (exit status 1)")
        for r in errs:
            out.append(f"  {r['kind']} {r['label']}{' ' + str(r['rate']) + ' #' + str(r['run']) if 'rate' in r else ''}: {r['error']}")
        for e in other_errors:
            out.append("  " + e)
    if a.quick:
        out.append("")
        out.append("--quick: a smoke test; fixed costs (connections, start-up) weigh on every figure. Do not quote.")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
