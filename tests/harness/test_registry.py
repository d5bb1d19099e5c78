"""The schema registry part of the harness works: a real registry (Apicurio, Confluent API) takes
an Avro schema and gives it back by id, refuses an incompatible one under BACKWARD with 409, comes
back on the same URL after a stop (empty: storage is in memory), and a second fetch is a no-op."""

import itertools
import json
import os
import pathlib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REGISTRY_SH = str(pathlib.Path(__file__).resolve().parent.parent / "lib" / "registry.sh")
_subject_ids = itertools.count()

V1 = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}
# a new field with a default: readers of V2 can read V1 data (BACKWARD holds)
V2 = {"type": "record", "name": "A",
      "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "string", "default": ""}]}
# a new field without a default: BACKWARD fails
BAD = {"type": "record", "name": "A",
       "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "string"}]}


def subject():
    return f"bw-test-{os.getpid()}-{next(_subject_ids)}-value"


def test_register_and_read_back(registry):
    s = subject()
    sid = registry.register(s, V1)
    assert isinstance(sid, int) and sid > 0
    # the registry re-serialises the text: compare parsed
    assert json.loads(registry.schema(sid)) == V1
    assert s in registry.subjects()
    assert registry.request("GET", f"/subjects/{s}/versions") == [1]
    # the same schema again is the same id and no new version
    assert registry.register(s, V1) == sid
    assert registry.request("GET", f"/subjects/{s}/versions") == [1]


def test_backward_refuses_incompatible_schema(registry):
    s = subject()
    registry.set_compatibility(s, "BACKWARD")
    assert registry.request("GET", f"/config/{s}")["compatibilityLevel"] == "BACKWARD"
    v1 = registry.register(s, V1)
    with pytest.raises(registry.Error) as e:
        registry.register(s, BAD)
    assert (e.value.status, e.value.error_code) == (409, 409)
    v2 = registry.register(s, V2)
    assert v2 != v1
    assert registry.request("GET", f"/subjects/{s}/versions") == [1, 2]


def test_errors_carry_confluent_codes(registry):
    for path, code in ((f"/subjects/{subject()}/versions", 40401),
                       ("/schemas/ids/999999999", 40403)):
        with pytest.raises(registry.Error) as e:
            registry.request("GET", path)
        assert (e.value.status, e.value.error_code) == (404, code)
    with pytest.raises(registry.Error) as e:
        registry.register(subject(), '{"type": "record", "name": "A"}')
    assert (e.value.status, e.value.error_code) == (422, 42201)


def test_down_then_back_on_the_same_url(registry):
    s = subject()
    registry.register(s, V1)
    url = registry.url
    registry.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/subjects", timeout=5)
    registry.start()
    assert registry.url == url
    # in-memory storage: everything registered before the stop is gone
    assert s not in registry.subjects()


def test_second_fetch_is_a_quick_no_op(registry):
    # the registry fixture fetched already; a stand-in mvn that fails proves no registry is asked
    with tempfile.TemporaryDirectory() as fake:
        mvn = os.path.join(fake, "mvn")
        with open(mvn, "w") as f:
            f.write("#!/bin/sh\necho 'mvn called' >&2\nexit 1\n")
        os.chmod(mvn, 0o755)
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
        start = time.monotonic()
        done = subprocess.run([REGISTRY_SH, "fetch"], env=env, capture_output=True, text=True)
        took = time.monotonic() - start
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert took < 2, f"a second fetch took {took:.1f}s"
