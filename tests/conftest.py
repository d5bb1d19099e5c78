"""Shared pytest fixtures: one throwaway PostgreSQL cluster per session (tests/lib/pgcluster.sh),
autocommit connections to it, and slots of the breakwater plugin read through the SQL interface
and decoded by the reference reader (tests/lib/bwproto.py); one throwaway Kafka broker per session
(tests/lib/kafka.sh), started only when a test asks for the `kafka` fixture.

BW_PG_ENV=/path/to/env runs the suite against a cluster started elsewhere (an env file as
pgcluster.sh writes it) instead of starting one; BW_KAFKA_ENV=/path/to/env does the same for the
broker (an env file as kafka.sh writes it).
"""

import collections
import itertools
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

import psycopg
import psycopg.conninfo
import pytest

TOP = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "tests" / "lib"))

import bwproto  # noqa: E402

# the settings the plugin pins while it decodes: text values compared with ::text casts match
PINNED = "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=1"


def _read_env(path):
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


class Cluster:
    def __init__(self, env):
        self.env = env
        pgdata = env.get("BW_PGDATA")
        self.log = pathlib.Path(pgdata).parent / "server.log" if pgdata else None

    def conninfo(self, **extra):
        e = self.env
        params = dict(host=e["PGHOST"], port=e["PGPORT"], user=e.get("PGUSER", "postgres"),
                      dbname=e.get("PGDATABASE", "postgres"))
        params.update(extra)
        return psycopg.conninfo.make_conninfo(**params)

    def connect(self, **extra):
        return psycopg.connect(self.conninfo(**extra), autocommit=True)

    def client_env(self):
        """os.environ plus the libpq variables, for client programs such as pg_recvlogical."""
        env = dict(os.environ)
        env.update(self.env)
        return env

    def restart(self):
        """Fast shutdown and start again on the same port and data (walsenders are cut)."""
        pgdir = pathlib.Path(self.env["BW_PGDATA"]).parent
        script = str(TOP / "tests" / "lib" / "pgcluster.sh")
        done = subprocess.run([script, "restart", str(pgdir)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"pgcluster.sh restart failed:\n{done.stderr}")

    def log_tail(self, lines=60):
        if self.log is None or not self.log.exists():
            return "(no server log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def cluster(request):
    if os.environ.get("BW_PG_ENV"):
        yield Cluster(_read_env(os.environ["BW_PG_ENV"]))
        return
    work = tempfile.mkdtemp(prefix="bw-pytest.", dir="/tmp")
    os.chmod(work, 0o755)
    script = str(TOP / "tests" / "lib" / "pgcluster.sh")
    done = subprocess.run([script, "start", os.path.join(work, "pg")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"pgcluster.sh start failed:\n{done.stderr}")
    c = Cluster(_read_env(done.stdout.strip().splitlines()[-1]))
    yield c
    subprocess.run([script, "stop", os.path.join(work, "pg")], check=False)
    log = c.log.read_text(errors="replace") if c.log.exists() else ""
    crashed = any(s in log for s in ("TRAP", "terminated by signal", "PANIC"))
    if request.session.testsfailed or crashed:
        print(f"\n==== server log tail ({c.log}) ====\n{c.log_tail()}", file=sys.stderr)
        if crashed:
            pytest.fail("the server log shows a crash (tail above)")
    else:
        subprocess.run(["rm", "-rf", work], check=False)


@pytest.fixture
def conn(cluster):
    """Autocommit connection with the plugin's pinned output settings."""
    with cluster.connect(options=PINNED) as c:
        yield c


class Slot:
    """A logical slot of the breakwater plugin read with the SQL interface."""

    def __init__(self, conn, name):
        self.conn, self.name = conn, name
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'breakwater')", (name,))

    def chunks(self, peek=False, conn=None, **options):
        """Raw chunks (bytes); options as keyword arguments, '_' standing for '-'; `conn` reads
        from another session."""
        opts = {"format": "binary"}
        opts.update({k.replace("_", "-"): str(v) for k, v in options.items()})
        flat = [x for kv in opts.items() for x in kv]
        fn = "pg_logical_slot_peek_binary_changes" if peek else "pg_logical_slot_get_binary_changes"
        rows = (conn or self.conn).execute(f"SELECT data FROM {fn}(%s, NULL, NULL, VARIADIC %s::text[])",
                                 (self.name, flat)).fetchall()
        return [bytes(r[0]) for r in rows]

    def get(self, peek=False, conn=None, **options):
        """Decoded records of one decoding session."""
        return bwproto.decode_chunks(self.chunks(peek=peek, conn=conn, **options))

    def peek(self, **options):
        return self.get(peek=True, **options)

    def drop(self):
        self.conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                          "WHERE slot_name = %s", (self.name,))


_slot_ids = itertools.count()


@pytest.fixture
def make_slot(cluster):
    """make_slot() -> Slot, created now (it sees what is committed after); dropped at teardown."""
    slots = []
    c = cluster.connect(options=PINNED)

    def make():
        s = Slot(c, f"bw_test_{os.getpid()}_{next(_slot_ids)}")
        slots.append(s)
        return s

    yield make
    for s in slots:
        s.drop()
    c.close()



# ---- Kafka -------------------------------------------------------------------------------------

KAFKA_SH = str(TOP / "tests" / "lib" / "kafka.sh")

Record = collections.namedtuple("Record", "key value headers partition offset timestamp")
Record.__doc__ = """One consumed message: key and value as bytes (or None), headers as a list of
(name, bytes) pairs in wire order ([] when none), timestamp in milliseconds."""

_topic_ids = itertools.count()


class Kafka:
    """A broker started by tests/lib/kafka.sh in `dir` (or one started elsewhere, named by an env
    file). restart() keeps the ports and the data, so clients reconnect to the same bootstrap."""

    def __init__(self, env_file):
        self.env_file = env_file
        self._load(env_file)

    def _load(self, env_file):
        env = _read_env(env_file)
        self.env = env
        self.bootstrap = env["BW_KAFKA_BOOTSTRAP"]
        self.dir = env.get("BW_KAFKA_DIR")
        self.log = pathlib.Path(env["BW_KAFKA_LOG"]) if env.get("BW_KAFKA_LOG") else None

    def _run(self, *args):
        if not self.dir:
            pytest.fail(f"the broker of {self.env_file} has no BW_KAFKA_DIR: cannot {args[0]} it")
        done = subprocess.run([KAFKA_SH, *args, self.dir], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"kafka.sh {args[0]} failed:\n{done.stderr}")
        return done.stdout

    def start(self):
        out = self._run("start")
        self._load(out.strip().splitlines()[-1])

    def stop(self):
        self._run("stop")

    def restart(self):
        out = self._run("restart")
        self._load(out.strip().splitlines()[-1])

    def running(self):
        pid = self.env.get("BW_KAFKA_PID")
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"kafka.Kafka" in f.read()
        except (OSError, TypeError):
            return False

    def config(self, **extra):
        """librdkafka configuration for a client of this broker; extra keys with '_' for '.'."""
        conf = {"bootstrap.servers": self.bootstrap}
        conf.update({k.replace("_", "."): v for k, v in extra.items()})
        return conf

    def admin(self):
        from confluent_kafka.admin import AdminClient
        return AdminClient(self.config())

    def create_topic(self, name=None, partitions=1, config=None, timeout=30):
        """Creates a topic (a fresh unique name when none is given) and returns its name once its
        partitions have leaders."""
        from confluent_kafka.admin import NewTopic
        name = name or f"bw-test-{os.getpid()}-{next(_topic_ids)}"
        admin = self.admin()
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                config=dict(config or {}))],
                                      operation_timeout=timeout, request_timeout=timeout)
        futures[name].result()
        deadline = time.monotonic() + timeout
        while True:
            md = admin.list_topics(name, timeout=timeout).topics.get(name)
            if md and md.error is None and len(md.partitions) == partitions and \
                    all(p.leader >= 0 for p in md.partitions.values()):
                return name
            if time.monotonic() > deadline:
                pytest.fail(f"topic {name} has no leader for every partition after {timeout}s")
            time.sleep(0.05)

    def consume_all(self, topic, idle_ms=1000, timeout=60, **conf):
        """Every message of `topic` from the beginning of each partition, read until no message
        arrived for idle_ms (or `timeout` seconds passed: a failure). Records are in offset order
        within a partition, partitions in the order their messages arrived. Reads committed
        messages only (librdkafka's default isolation)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
        c = Consumer(self.config(**{"group.id": f"bw-test-{os.getpid()}-{next(_topic_ids)}",
                                    "enable.auto.commit": False, "enable.partition.eof": False,
                                    **conf}))
        try:
            md = c.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None:
                pytest.fail(f"topic {topic} is not there: {md.error if md else 'no metadata'}")
            # assign, not subscribe: no group rebalance to wait for
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)])
            out = []
            start = last = time.monotonic()
            while (time.monotonic() - last) * 1000 < idle_ms:
                if time.monotonic() - start > timeout:
                    pytest.fail(f"topic {topic} still delivering after {timeout}s ({len(out)} read)")
                msgs = c.consume(num_messages=1000, timeout=min(0.1, idle_ms / 1000))
                for m in msgs:
                    if m.error():
                        raise KafkaException(m.error())
                    out.append(Record(m.key(), m.value(), list(m.headers() or []), m.partition(),
                                      m.offset(), m.timestamp()[1]))
                if msgs:
                    last = time.monotonic()
            return out
        finally:
            c.close()

    def log_tail(self, lines=60):
        if self.log is None or not self.log.exists():
            return "(no broker log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def kafka(request):
    """A real single-node broker for the session; started on first use."""
    if os.environ.get("BW_KAFKA_ENV"):
        yield Kafka(os.environ["BW_KAFKA_ENV"])
        return
    work = tempfile.mkdtemp(prefix="bw-kafka.", dir="/tmp")
    dir_ = os.path.join(work, "kafka")
    done = subprocess.run([KAFKA_SH, "start", dir_], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"kafka.sh start failed:\n{done.stderr}")
    k = Kafka(done.stdout.strip().splitlines()[-1])
    yield k
    # a broker that died under a test is a failure even if every test passed
    died = not k.running() and os.path.exists(os.path.join(dir_, "kafka.pid"))
    subprocess.run([KAFKA_SH, "stop", dir_], check=False)
    if request.session.testsfailed or died:
        print(f"\n==== broker log tail ({k.log}) ====\n{k.log_tail()}", file=sys.stderr)
        if died:
            pytest.fail("the broker exited during the session (log tail above)")
    else:
        subprocess.run(["rm", "-rf", work], check=False)
