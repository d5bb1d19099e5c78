"""`make demo` is the README's main command: it must run start to finish on this machine and show
the workload's events as they arrive in Kafka."""

import pathlib
import subprocess

TOP = pathlib.Path(__file__).resolve().parents[2]


def test_demo_runs_and_shows_every_event():
    done = subprocess.run([str(TOP / "relay" / "demo.sh")], capture_output=True, text=True,
                          timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "11 events in Kafka; per tenant: acme=5, globex=3, initech=3" in out, out[-4000:]
    assert "app event app.invoice" in out and "tenant signals" in out
    assert "[ globex] delete" in out
    assert "breakwater-relay exited with status 0" in out
