"""The demo's live view: consumes every demo.* topic and prints each event as it arrives in
Kafka: row changes and app events (tenant, table, operation, key) and tenant signals, with a
running count. Stops after --idle seconds without a message once --expect row/app events were
seen (or at --timeout). With --registry, row keys and values are Avro, read with the registry's
schemas as any Confluent consumer does; the view then shows the new row too."""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--expect", type=int, default=1)
ap.add_argument("--idle", type=float, default=2.0)
ap.add_argument("--timeout", type=float, default=60.0)
ap.add_argument("--registry", help="schema registry URL: rows are Avro")
args = ap.parse_args()

avro = None
if args.registry:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    avro = AvroDeserializer(SchemaRegistryClient({"url": args.registry, "timeout": 10}))

    def decode(m, field):
        data = m.key() if field == MessageField.KEY else m.value()
        return avro(data, SerializationContext(m.topic(), field)) if data else None

c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"demo-{time.time()}",
              "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 500})
c.subscribe(["^demo\\..*"])
n = 0
signals = 0
start = last = time.monotonic()
per_tenant = {}
try:
    while True:
        now = time.monotonic()
        if now - start > args.timeout or (n >= args.expect and now - last > args.idle):
            break
        m = c.poll(0.1)
        if m is None:
            continue
        if m.error():
            continue
        last = time.monotonic()
        h = {k: (v.decode() if v else "") for k, v in (m.headers() or [])}
        tenant = h.get("tenant", "-")
        if m.topic().endswith(".signals") and h.get("op") == "event":
            n += 1
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
            ev = json.loads(m.value())
            print(f"  #{n:<3} [{tenant:>7}] app event {ev['prefix']}: {json.dumps(ev['event'])}",
                  flush=True)
            continue
        if m.topic().endswith(".signals"):
            signals += 1
            sig = json.loads(m.value())
            counts = ", ".join(f"{k} {v}" for k, v in sig["counts"].items() if v)
            print(f"  signal [{tenant:>7}] {sig['schema']}.{sig['table']} changed ({counts}): refetch",
                  flush=True)
            continue
        if m.value() is None:  # a delete's tombstone: for log compaction, not an event
            print(f"        [{tenant:>7}] tombstone {h.get('table', '?'):<18} after the delete "
                  "(compacted topics keep only live rows)", flush=True)
            continue
        n += 1
        per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
        if m.topic().endswith(".messages"):
            what = f"app event {m.key().decode()}: {m.value().decode()}"
        else:
            if avro:
                key = decode(m, MessageField.KEY)
                row = (decode(m, MessageField.VALUE) or {}).get("new")
            else:
                key, row = (json.loads(m.key()) if m.key() else None), None
            keytxt = ",".join(f"{k}={v}" for k, v in key.items()) if key else "(no key)"
            what = f"{h.get('op', '?'):<8} {h.get('table', '?'):<18} key({keytxt})"
            if row:
                shown = {k: str(v) for k, v in row.items() if k not in key and v is not None}
                what += " avro " + json.dumps(shown)[:60]
        lag_ms = (m.timestamp()[1] * 1000 - int(h.get("commit_time_us", "0"))) / 1000 \
            if h.get("commit_time_us") else None
        lag = f"{lag_ms:6.1f} ms after commit" if lag_ms is not None and lag_ms >= 0 else ""
        print(f"  #{n:<3} [{tenant:>7}] {what:<52} {m.topic():<24} {lag}", flush=True)
finally:
    c.close()
print(f"\n  {n} events in Kafka; per tenant: "
      + ", ".join(f"{t}={k}" for t, k in sorted(per_tenant.items()))
      + f"; {signals} tenant signals", flush=True)
sys.exit(0 if n >= args.expect else 1)
