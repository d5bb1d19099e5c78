"""Shared pytest fixtures: one throwaway PostgreSQL cluster per session (tests/lib/pgcluster.sh),
autocommit connections to it, and slots of the breakwater plugin read through the SQL interface
and decoded by the reference reader (tests/lib/bwproto.py); one throwaway Kafka broker per session
(tests/lib/kafka.sh), started only when a test asks for the `kafka` fixture; one throwaway schema
registry with the Confluent API (tests/lib/registry.sh), started only when a test asks for the
`registry` fixture.

BW_PG_ENV=/path/to/env runs the suite against a cluster started elsewhere (an env file as
pgcluster.sh writes it) instead of starting one; BW_KAFKA_ENV=/path/to/env does the same for the
broker (an env file as kafka.sh writes it), BW_REGISTRY_ENV=/path/to/env for the registry (an env
file as registry.sh writes it).
"""

import collections
import itertools
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

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


class _ScriptedServer:
    """A server started by a tests/lib script (`SCRIPT start|stop|restart DIR`) that writes an env
    file of BW_<PREFIX>_* variables, or one started elsewhere and named by its env file.
    Subclasses set SCRIPT, PREFIX (e.g. "KAFKA"), WHAT (for messages) and MARK (bytes of the
    server's command line, to tell it is still the process its pid names), and read their own
    variables in _loaded()."""

    def __init__(self, env_file):
        self.env_file = env_file
        self._load(env_file)

    def _load(self, env_file):
        env = _read_env(env_file)
        self.env = env
        self.dir = env.get(f"BW_{self.PREFIX}_DIR")
        log = env.get(f"BW_{self.PREFIX}_LOG")
        self.log = pathlib.Path(log) if log else None
        self._loaded(env)

    def _run(self, cmd):
        script = os.path.basename(self.SCRIPT)
        if not self.dir:
            pytest.fail(f"the {self.WHAT} of {self.env_file} has no BW_{self.PREFIX}_DIR: "
                        f"cannot {cmd} it")
        done = subprocess.run([self.SCRIPT, cmd, self.dir], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"{script} {cmd} failed:\n{done.stderr}")
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
        pid = self.env.get(f"BW_{self.PREFIX}_PID")
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.MARK in f.read()
        except (OSError, TypeError):
            return False

    def log_tail(self, lines=60):
        if self.log is None or not self.log.exists():
            return f"(no {self.WHAT} log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Kafka(_ScriptedServer):
    """A broker started by tests/lib/kafka.sh in `dir` (or one started elsewhere, named by an env
    file). restart() keeps the ports and the data, so clients reconnect to the same bootstrap."""

    SCRIPT, PREFIX, WHAT, MARK = KAFKA_SH, "KAFKA", "broker", b"kafka.Kafka"

    def _loaded(self, env):
        self.bootstrap = env["BW_KAFKA_BOOTSTRAP"]

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



def _session_server(request, script, what, env_var, make):
    """Starts a throwaway server with `script start DIR` (or reuses the one named by env_var),
    yields make(env file), then stops it; its log tail is printed when a test failed, and a
    server that died during the session fails it."""
    if os.environ.get(env_var):
        yield make(os.environ[env_var])
        return
    name = os.path.basename(script).removesuffix(".sh")
    work = tempfile.mkdtemp(prefix=f"bw-{name}.", dir="/tmp")
    dir_ = os.path.join(work, name)
    done = subprocess.run([script, "start", dir_], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{name}.sh start failed:\n{done.stderr}")
    server = make(done.stdout.strip().splitlines()[-1])
    yield server
    died = not server.running() and os.path.exists(os.path.join(dir_, f"{name}.pid"))
    subprocess.run([script, "stop", dir_], check=False)
    if request.session.testsfailed or died:
        print(f"\n==== {what} log tail ({server.log}) ====\n{server.log_tail()}", file=sys.stderr)
        if died:
            pytest.fail(f"the {what} exited during the session (log tail above)")
    else:
        subprocess.run(["rm", "-rf", work], check=False)


@pytest.fixture(scope="session")
def kafka(request):
    """A real single-node broker for the session; started on first use."""
    yield from _session_server(request, KAFKA_SH, "broker", "BW_KAFKA_ENV", Kafka)


# ---- Schema registry ---------------------------------------------------------------------------

REGISTRY_SH = str(TOP / "tests" / "lib" / "registry.sh")

# the Confluent Schema Registry API's media type (Apicurio answers with application/json)
REGISTRY_CT = "application/vnd.schemaregistry.v1+json"


def _quote(name):
    return urllib.parse.quote(name, safe="")


class RegistryError(Exception):
    """A registry answer other than 2xx: `status` (HTTP), `body` (parsed JSON, or the text when it
    is not JSON), `error_code` (the Confluent error code from the body, or None)."""

    def __init__(self, method, url, status, body):
        self.status, self.body = status, body
        self.error_code = body.get("error_code") if isinstance(body, dict) else None
        super().__init__(f"{method} {url}: HTTP {status}: {body!r}")


class Registry(_ScriptedServer):
    """An Apicurio Registry started by tests/lib/registry.sh in `dir` (or one started elsewhere,
    named by an env file), spoken to through its Confluent-compatible API at `url`.

    Storage is in memory: stop() (or restart()) loses every subject, schema id and compatibility
    setting, and ids start again from the beginning. start() after stop() comes back on the same
    port, so a client configured with `url` finds it again ("registry down, then back"); only if
    another process took the port meanwhile does it move (url changes then, with a warning).

    Deviations from Confluent to code around: the global default compatibility is NONE (set it
    with set_compatibility); ids are content ids with gaps; schema text comes back re-serialised;
    409/422 codes match Confluent but the messages differ."""

    # what request() raises for a non-2xx answer, reachable from a test without importing conftest
    Error = RegistryError

    SCRIPT, PREFIX, WHAT, MARK = REGISTRY_SH, "REGISTRY", "registry", b"-Dbw.registry.dir="

    def _loaded(self, env):
        self.url = env["BW_REGISTRY_URL"]

    def request(self, method, path, body=None, timeout=10):
        """Sends `body` (JSON-encoded unless None) to url + path; returns the parsed JSON answer
        of a 2xx, raises RegistryError for any other status."""
        url = self.url + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": REGISTRY_CT, "Accept": REGISTRY_CT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as e:
            text, status = e.read().decode(errors="replace"), e.code
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        if not 200 <= status < 300:
            raise RegistryError(method, url, status, parsed)
        return parsed

    def subjects(self):
        return self.request("GET", "/subjects")

    def set_compatibility(self, subject, level):
        """Sets the compatibility level of `subject` (None: the global default), e.g. "BACKWARD"."""
        path = "/config" if subject is None else f"/config/{_quote(subject)}"
        return self.request("PUT", path, {"compatibility": level})

    def register(self, subject, schema, schema_type=None):
        """Registers `schema` (text, or a dict/list dumped to JSON) under `subject`; returns its id."""
        body = {"schema": schema if isinstance(schema, str) else json.dumps(schema)}
        if schema_type:
            body["schemaType"] = schema_type
        return self.request("POST", f"/subjects/{_quote(subject)}/versions", body)["id"]

    def schema(self, schema_id):
        """The schema text registered under `schema_id` (as the registry re-serialised it)."""
        return self.request("GET", f"/schemas/ids/{int(schema_id)}")["schema"]



@pytest.fixture(scope="session")
def registry(request):
    """A real schema registry (Confluent API) for the session; started on first use."""
    yield from _session_server(request, REGISTRY_SH, "registry", "BW_REGISTRY_ENV", Registry)
