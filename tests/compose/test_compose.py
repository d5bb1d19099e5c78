"""docker-compose.yml and docker/: the containerised demo, checked without a Docker engine.

`docker-compose config` validates the file; its normalised output (YAML) is what the checks read,
so short and long port syntax look alike. Every published port must bind 127.0.0.1; the relay
configuration the compose file mounts must pass `breakwater-relay --check-config` and point at
the compose services; the Dockerfiles must exist and copy the source directories they build.
No container is started.
"""

import configparser
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

TOP = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = TOP / "docker-compose.yml"
RELAY = TOP / "relay" / "breakwater-relay"

# Dockerfile (relative to the top) -> the source directories it must COPY
DOCKERFILES = {
    "docker/postgres.Dockerfile": ["decoder/"],
    "docker/relay.Dockerfile": ["relay/"],
}


def compose(*args, env=None):
    """docker-compose on our file, with the caller's BREAKWATER_* variables left out (they would
    change the result) and env's added."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (tests/lib/deps.sh installs it): "
                    "docker-compose.yml not validated")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKWATER_")}
    run_env.update(env or {})
    return subprocess.run([exe, "-f", str(COMPOSE), *args], cwd=TOP, capture_output=True,
                          text=True, timeout=120, env=run_env)


@pytest.fixture(scope="module")
def config():
    """The compose file as docker-compose normalises it."""
    done = compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def published(port):
    """(host_ip, host_port, container_port) of one `ports` entry, in either syntax."""
    if isinstance(port, dict):  # long syntax (what Compose v2 prints)
        return (port.get("host_ip", ""), str(port.get("published", "")), str(port["target"]))
    spec = str(port).split("/", 1)[0]
    if spec.startswith("["):  # [ipv6]:host:container
        ip, _, rest = spec[1:].partition("]:")
        host, _, target = rest.partition(":")
        return (ip, host, target)
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        return tuple(parts)
    if len(parts) == 2:
        return ("", parts[0], parts[1])
    return ("", "", parts[0])


def relay_conf():
    """The relay configuration docker-compose.yml mounts, as {section.name: value}."""
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=None, strict=True)
    cp.optionxform = str
    cp.read(TOP / "docker" / "relay.conf")
    return {f"{s}.{k}": v for s in cp.sections() for k, v in cp.items(s)}


def test_config_is_valid():
    done = compose("config", "-q")
    assert done.returncode == 0, f"docker-compose config -q failed:\n{done.stderr}"


def test_services(config):
    assert set(config["services"]) == {"postgres", "kafka", "schema-registry", "relay"}
    assert config["services"]["kafka"]["image"] == "apache/kafka:3.9.1"


def test_every_published_port_binds_loopback(config):
    seen = []
    for name, svc in config["services"].items():
        assert svc.get("network_mode") != "host", f"{name}: network_mode host skips the bindings"
        for port in svc.get("ports", []):
            ip, host, target = published(port)
            where = ip or "every interface"
            assert ip == "127.0.0.1", f"{name}: port {port!r} is published on {where}"
            assert host, f"{name}: port {port!r} gets a random host port"
            seen.append((name, int(host), int(target)))
    expected = {("postgres", 5433), ("kafka", 9092), ("schema-registry", 8081), ("relay", 9187)}
    assert {(n, h) for n, h, _ in seen} >= expected, seen


def test_dockerfiles_exist_and_copy_what_they_build(config):
    built = {}
    for name, svc in config["services"].items():
        if "build" in svc:
            context = pathlib.Path(svc["build"]["context"]).resolve()
            assert context == TOP, f"{name}: build context {context}, expected the repository top"
            built[name] = svc["build"]["dockerfile"]
    assert sorted(built.values()) == sorted(DOCKERFILES), built
    for dockerfile, sources in DOCKERFILES.items():
        path = TOP / dockerfile
        assert path.is_file(), f"{dockerfile} is missing"
        copies = [line.split()[1:] for line in path.read_text().splitlines()
                  if re.match(r"^\s*COPY\s", line, re.I)]
        own = [args for args in copies if not any(a.startswith("--from") for a in args)]
        for src in sources:
            assert any(src in args[:-1] for args in own), f"{dockerfile} does not COPY {src}"
            assert (TOP / src).is_dir(), src


def test_dockerignore_keeps_host_builds_out():
    ignored = (TOP / ".dockerignore").read_text().split()
    for pattern in ("**/*.o", "**/*.so", "relay/build", "relay/breakwater-relay", "tests/.venv"):
        assert pattern in ignored, f".dockerignore lacks {pattern}"


def test_postgres_has_output_plugin_libraries(config):
    text = (TOP / "docker" / "postgres.Dockerfile").read_text()
    m = re.search(r"^FROM\s+postgres:15\.(\d+)(-bookworm)?\s*$", text, re.M)
    assert m, "docker/postgres.Dockerfile must start FROM a pinned postgres:15.N image"
    assert int(m.group(1)) >= 19, "output_plugin_libraries exists from PostgreSQL 15.19 on"
    command = config["services"]["postgres"]["command"]
    assert isinstance(command, list)
    assert "wal_level=logical" in command
    opl = [a for a in command if a.startswith("output_plugin_libraries=")]
    assert len(opl) == 1, command
    libs = opl[0].split("=", 1)[1]
    assert "'" not in libs and '"' not in libs, "a quoted list is read as one library name"
    assert [x.strip() for x in libs.split(",")] == ["pgoutput", "test_decoding", "breakwater"]
    mounts = config["services"]["postgres"].get("volumes", [])
    assert any(str(v).startswith(f"{TOP}/docker/init.sql:/docker-entrypoint-initdb.d/")
               for v in mounts), mounts


def test_relay_mounts_its_config(config):
    relay = config["services"]["relay"]
    flags = [a for a in relay["command"] if a.startswith("--config=")]
    assert len(flags) == 1, relay["command"]
    target = flags[0].split("=", 1)[1]
    mounts = [str(v) for v in relay.get("volumes", [])]
    assert f"{TOP}/docker/relay.conf:{target}:ro" in mounts, mounts
    deps = relay.get("depends_on", {})
    assert deps.get("postgres", {}).get("condition") == "service_healthy", deps
    assert deps.get("kafka", {}).get("condition") == "service_healthy", deps
    assert relay.get("restart") == "unless-stopped"
    for name in ("postgres", "kafka"):
        assert "healthcheck" in config["services"][name], f"{name} has no healthcheck"


def test_relay_config_passes_check_config():
    if not os.access(RELAY, os.X_OK):
        built = subprocess.run(["make", "-s", "-C", str(TOP / "relay")], capture_output=True,
                               text=True, timeout=600)
        assert built.returncode == 0, built.stdout + built.stderr
    # BREAKWATER_* variables of the caller's environment would change (or break) the result
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKWATER_")}
    done = subprocess.run([str(RELAY), "--check-config", "--config=docker/relay.conf"], cwd=TOP,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration OK" in done.stdout


def test_relay_config_points_at_the_compose_services(config):
    conf = relay_conf()
    services = config["services"]

    conninfo = dict(kv.split("=", 1) for kv in conf["pg.conninfo"].split())
    assert conninfo["host"] == "postgres" and conninfo.get("port", "5432") == "5432", conninfo
    assert conninfo["dbname"] == services["postgres"]["environment"]["POSTGRES_DB"]
    assert "password" not in conninfo, "the password comes from PGPASSWORD in docker-compose.yml"
    assert "PGPASSWORD" in services["relay"].get("environment", {})

    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = {a.split("://", 1)[1] for a in advertised}
    for server in conf["kafka.bootstrap.servers"].split(","):
        assert server in internal, f"{server} is not an advertised listener: {advertised}"
        assert server.split(":")[0] in services, f"{server} is not a compose service"

    host, _, port = conf["http.listen"].rpartition(":")
    assert host == "0.0.0.0", "inside the container, 127.0.0.1 cannot be reached from the host"
    targets = {published(p)[2] for p in services["relay"]["ports"]}
    assert port in targets, f"http.listen port {port} is not published: {targets}"
    assert conf["decoder.tables"] == "public.*" and conf["topic.prefix"] == "demo"


def test_relay_avro_switch_points_at_the_registry(config):
    """BREAKWATER_VALUE_FORMAT=avro switches the relay to Avro against the schema-registry
    service, which keeps its schemas in the compose broker; json stays the default."""
    services = config["services"]
    env = services["relay"]["environment"]
    assert env["BREAKWATER_VALUE_FORMAT"] == "json"  # the default when the shell sets nothing
    url = env["BREAKWATER_SCHEMA_REGISTRY_URL"]
    host, port = url.removeprefix("http://").split(":")
    assert host in services, f"{url}: {host} is not a compose service"
    registry = services[host]
    assert any(published(p)[2] == port for p in registry["ports"]), registry["ports"]
    assert registry["environment"]["SCHEMA_REGISTRY_LISTENERS"].endswith(f":{port}")
    store = registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert store.removeprefix("PLAINTEXT://") in advertised, (store, advertised)

    done = compose("config", env={"BREAKWATER_VALUE_FORMAT": "avro"})
    assert done.returncode == 0, done.stderr
    avro = yaml.safe_load(done.stdout)
    assert avro["services"]["relay"]["environment"]["BREAKWATER_VALUE_FORMAT"] == "avro"
