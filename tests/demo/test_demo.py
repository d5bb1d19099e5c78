"""`make demo` is the README's main command: it must run start to finish on this machine and show
the workload's events as they arrive in Kafka."""

import pathlib
import subprocess

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [[], ["--avro"]], ids=["json", "avro"])
def test_demo_runs_and_shows_every_event(args):
    done = subprocess.run([str(TOP / "relay" / "demo.sh"), *args], capture_output=True, text=True,
                          timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "11 events in Kafka; per tenant: acme=5, globex=3, initech=3" in out, out[-4000:]
    assert "app event app.invoice" in out and "tenant signals" in out
    assert "[ globex] delete" in out
    assert "public.orders, tenant acme: done, 1 row(s) sent again as op read" in out, out[-4000:]
    assert "breakwater-relay exited with status 0" in out
    if args:
        # rows read with the registry's schemas: the decimal and the status of a new order
        assert 'avro {"customer_id": "1", "total": "99.50", "status": "new"}' \
            in out, out[-4000:]
