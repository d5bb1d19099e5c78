"""Fixtures for the relay's end-to-end tests: the relay binary (built once per session), and a
runner that starts breakwater-relay against the session's PostgreSQL and Kafka with a config
file, captures its log, and stops it (SIGTERM, or kill -9 on request)."""

import itertools
import os
import pathlib
import signal
import subprocess
import threading
import time

import psycopg
import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
RELAY = TOP / "relay" / "breakwater-relay"

_ids = itertools.count()


# BW_RELAY_SANITIZER=both runs the end-to-end tests against the AddressSanitizer +
# UndefinedBehaviorSanitizer build: any report, leaks included, makes the relay exit non-zero,
# which the tests see.
SANITIZER = os.environ.get("BW_RELAY_SANITIZER", "")
if SANITIZER:
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=87")


@pytest.fixture(scope="session")
def relay_bin():
    cmd = ["make", "-s", "-C", str(TOP / "relay")]
    if SANITIZER:
        cmd.append(f"SANITIZER={SANITIZER}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"building the relay failed:\n{done.stdout}\n{done.stderr}")
    if SANITIZER:
        return str(TOP / "relay" / "build" / SANITIZER / "breakwater-relay")
    return str(RELAY)


def wait_for(what, check, timeout=60, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Relay:
    def __init__(self, binary, workdir, settings):
        self.binary = binary
        self.workdir = workdir
        self.settings = settings
        self.proc = None
        self.log_path = workdir / "relay.log"
        self.config_path = workdir / "relay.conf"

    def write_config(self):
        sections = {}
        for key, value in self.settings.items():
            section, _, name = key.partition(".")
            sections.setdefault(section, []).append((name, value))
        with open(self.config_path, "w") as f:
            for section, items in sections.items():
                f.write(f"[{section}]\n")
                for name, value in items:
                    f.write(f"{name} = {value}\n")
                f.write("\n")

    def start(self, *args, env=None):
        self.write_config()
        self.logfile = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary, f"--config={self.config_path}", *args],
                                     stdout=self.logfile, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        return self

    def run(self, *args, timeout=30, env=None):
        """Runs to completion (for --check-config and bad configurations); returns (rc, output)."""
        self.write_config()
        done = subprocess.run([self.binary, f"--config={self.config_path}", *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return done.returncode, done.stdout + done.stderr

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text, timeout=60):
        def check():
            if text in self.log():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"relay exited with {self.proc.returncode} before logging {text!r}:\n"
                            f"{self.log()[-3000:]}")
            return False
        wait_for(f"relay log line {text!r}", check, timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=60):
        """SIGTERM; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            pytest.fail(f"relay did not stop within {timeout}s after SIGTERM:\n{self.log()[-3000:]}")
        self.logfile.close()
        self.proc = None
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.logfile.close()
        self.proc = None

    def wait_exit(self, timeout=60):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"relay still running after {timeout}s:\n{self.log()[-3000:]}")
        self.logfile.close()
        self.proc = None
        return rc


@pytest.fixture
def make_relay(relay_bin, cluster, kafka, tmp_path, request):
    """make_relay(**settings) -> Relay (not started). Defaults: a fresh slot and topic prefix per
    test, the session's PostgreSQL and broker, no HTTP endpoint, snapshot.mode=never, a state
    directory shared by the test's relays. Dropped at teardown: the
    relay (SIGTERM) and its slot."""
    relays = []
    n = next(_ids)
    slot = f"bw_relay_{os.getpid()}_{n}"
    prefix = f"t{os.getpid()}_{n}"

    def make(**settings):
        e = cluster.env
        base = {
            "pg.conninfo": f"host={e['PGHOST']} port={e['PGPORT']} user=postgres dbname=postgres",
            "slot.name": slot,
            "topic.prefix": prefix,
            "kafka.bootstrap.servers": kafka.bootstrap,
            "http.listen": "",
            "log.level": "info",
            "relay.status_interval_ms": "200",
            # most tests start from an empty table: no initial snapshot unless a test asks
            "snapshot.mode": "never",
            "relay.state_dir": str(tmp_path / "state"),
        }
        base.update({k.replace("__", "."): v for k, v in settings.items()})
        r = Relay(relay_bin, tmp_path / f"relay{len(relays)}", base)
        r.workdir.mkdir()
        r.slot, r.prefix = slot, prefix
        relays.append(r)
        return r

    yield make
    for r in relays:
        if r.alive():
            r.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"\n==== relay log ({r.log_path}) ====\n{r.log()[-5000:]}")
    with psycopg.connect(cluster.conninfo(), autocommit=True) as c:
        wait_for("the slot to be released", lambda: c.execute(
            "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = %s AND active", (slot,)
        ).fetchone()[0], timeout=30)
        c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                  "WHERE slot_name = %s", (slot,))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Writer:
    """A thread that writes to the database until stop(), a transaction per turn (subclasses
    define turn(conn)), pause seconds apart; stop() joins it and re-raises what it raised."""

    pause = 0.002

    def __init__(self, cluster):
        self.cluster = cluster
        self.error = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()

    def stop(self):
        self._stop.set()
        self._t.join(timeout=30)
        if self.error is not None:
            raise self.error

    def _run(self):
        try:
            with self.cluster.connect() as c:
                while not self._stop.is_set():
                    self.turn(c)
                    time.sleep(self.pause)
        except Exception as e:         # noqa: BLE001 - re-raised in the test's thread by stop()
            self.error = e


def insert_lsn(conn):
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def confirmed_at_least(conn, slot, lsn):
    """The slot's confirmed_flush_lsn >= lsn (compared as pg_lsn, not as text)."""
    return conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                        "WHERE slot_name = %s", (lsn, slot)).fetchone()[0]
