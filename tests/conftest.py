"""Shared pytest fixtures: one throwaway PostgreSQL cluster per session (tests/lib/pgcluster.sh),
autocommit connections to it, and slots of the breakwater plugin read through the SQL interface
and decoded by the reference reader (tests/lib/bwproto.py).

BW_PG_ENV=/path/to/env runs the suite against a cluster started elsewhere (an env file as
pgcluster.sh writes it) instead of starting one.
"""

import itertools
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

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

