#!/usr/bin/env python3
"""Runs `cairn node --check-config` on every node configuration that deploy/ sets up.

Usage: check_configs.py PATH/TO/cairn   (needs PyYAML; validate.sh runs it from its venv)

A node's configuration is what its container would run: the Dockerfile's ENTRYPOINT and
CMD (or what compose.yaml or the manifest puts in their place) with the Dockerfile's ENV
overlaid by the service's or container's environment. compose.yaml gives one configuration
per service; the StatefulSet one per pod ordinal, with the downward API's metadata.name set
to the pod's name and ConfigMap references resolved from deploy/k8s.

Besides `--check-config` passing, it checks what would break a cluster while every file is
valid on its own: the node's id (a StatefulSet's pod N must be node N+1), its own entry in
CAIRN_PEERS naming the host it is reached at, the ports the container exposes and the
probes use, Services and PodDisruptionBudgets selecting the pods, and CAIRN_* variables
that `cairn node` does not know (a typo would be silently ignored).

The data directory is a volume mounted at /data in the container; here it is replaced by a
temporary directory. The TLS files are mounted at /etc/cairn/tls (a Secret, or a host
directory in compose); here they are made by deploy/certs.sh (openssl) for the names the node
is reached at, and the container must mount something at that path. Exit status 0 when every
check passes, 1 otherwise.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
VOLUME = "/data"
TLS_DIR = "/etc/cairn/tls"
ADMIN_DIR = "/etc/cairn/admin"
CHECK_TIMEOUT_S = 30


class Failure(Exception):
    pass


def dockerfile_runtime():
    """ENV, ENTRYPOINT and CMD of the Dockerfile's last stage."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    stages = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((instruction.upper(), rest.strip()))
    if not stages:
        raise Failure("Dockerfile: no FROM")
    env, entrypoint, cmd = {}, None, None
    for instruction, rest in stages[-1]:
        if instruction == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                if not sep:
                    raise Failure(f"Dockerfile: ENV {rest!r}: write KEY=VALUE")
                env[key] = value
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif instruction == "CMD":
            cmd = json.loads(rest)
    if entrypoint != ["cairn"]:
        raise Failure(f"Dockerfile: ENTRYPOINT is {entrypoint}, expected [\"cairn\"]")
    return env, entrypoint, cmd


def known_variables(cairn):
    """The CAIRN_* variables `cairn node` reads, from its --help."""
    help_text = subprocess.run(
        [cairn, "node", "--help"], capture_output=True, text=True, check=True
    ).stdout
    names = set(re.findall(r"env: (CAIRN_[A-Z0-9_]+)", help_text))
    if "CAIRN_PEERS" not in names:
        raise Failure(f"`cairn node --help` names no CAIRN_PEERS: {help_text!r}")
    return names


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_node(cairn, known, scratch, label, argv, env, expect_id=None, reached_at=None):
    """Runs `cairn ARGV --check-config` with ENV only; returns the node id it reports."""
    if not argv or argv[0] != "node":
        raise Failure(f"{label}: the command is {argv}, not `cairn node ...`")
    unknown = sorted(k for k in env if k.startswith("CAIRN_") and k not in known)
    if unknown:
        raise Failure(f"{label}: `cairn node` does not read {', '.join(unknown)}")
    data = os.path.join(scratch, label.replace("/", "_"))
    tls_name = label.replace("/", "_")
    names = sorted(reached_at or {"localhost"})
    made = subprocess.run(
        ["bash", str(DEPLOY / "certs.sh"), os.path.join(scratch, "tls"), tls_name, *names],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise Failure(f"{label}: deploy/certs.sh failed: {made.stderr.strip()}")
    tls = os.path.join(scratch, "tls", tls_name)
    admin = os.path.join(scratch, "admin")
    os.makedirs(admin, exist_ok=True)
    with open(os.path.join(admin, "admin-token"), "w") as secret:
        secret.write(os.urandom(16).hex() + "\n")

    def local(value):
        if value == VOLUME or value.startswith(VOLUME + "/"):
            return data + value[len(VOLUME):]
        if value.startswith(TLS_DIR + "/"):
            return tls + value[len(TLS_DIR):]
        if value.startswith(ADMIN_DIR + "/"):
            return admin + value[len(ADMIN_DIR):]
        return value

    env = {
        key: local(value)
        if key in ("CAIRN_DATA_DIR", "CAIRN_ADMIN_TOKEN_FILE") or key.startswith("CAIRN_TLS_")
        else value
        for key, value in env.items()
    }
    argv = [local(a) for a in argv]
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    result = subprocess.run(
        [cairn, *argv, "--check-config"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
    )
    summary = result.stdout.strip()
    if result.returncode != 0:
        raise Failure(
            f"{label}: `cairn node --check-config` exited {result.returncode}: "
            f"{result.stderr.strip()}"
        )
    match = re.match(r"config ok: node (\d+) ", summary)
    if not match:
        raise Failure(f"{label}: unexpected summary {summary!r}")
    node_id = int(match.group(1))
    if expect_id is not None and node_id != expect_id:
        raise Failure(f"{label}: is node {node_id}, expected node {expect_id}")
    peers = dict(
        part.split("=", 1) for part in env.get("CAIRN_PEERS", "").split(",") if part.strip()
    )
    own = peers.get(str(node_id))
    if reached_at is not None and own is not None:
        host = own.rsplit(":", 1)[0]
        if host not in reached_at:
            raise Failure(
                f"{label}: CAIRN_PEERS lists node {node_id} at {own}, "
                f"but it is reached at {' or '.join(sorted(reached_at))}"
            )
        listen = env.get("CAIRN_LISTEN")
        if listen is not None and port_of(listen) != port_of(own):
            raise Failure(f"{label}: listens on {listen} but CAIRN_PEERS says {own}")
    print(f"ok {label}: {summary}")
    return node_id


def compose_configs(docker):
    docker_env, entrypoint, cmd = docker
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    configs = []
    for name, service in compose["services"].items():
        env = dict(docker_env)
        declared = service.get("environment") or {}
        if isinstance(declared, list):
            declared = dict(item.split("=", 1) for item in declared)
        env.update({k: str(v) for k, v in declared.items()})
        if service.get("entrypoint") not in (None, entrypoint):
            raise Failure(f"compose {name}: entrypoint {service['entrypoint']} is not cairn")
        command = service.get("command", cmd)
        if isinstance(command, str):
            command = shlex.split(command)
        mounts = [str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)]
        if TLS_DIR not in mounts:
            raise Failure(f"compose {name}: nothing is mounted at {TLS_DIR} (the TLS files)")
        if ADMIN_DIR not in mounts:
            raise Failure(f"compose {name}: nothing is mounted at {ADMIN_DIR} (the admin secret)")
        reached_at = {name, service.get("hostname", name)}
        configs.append((f"compose/{name}", command, env, None, reached_at))
    return configs


def k8s_documents():
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def k8s_configs(docker):
    docker_env, entrypoint, cmd = docker
    documents = k8s_documents()
    by_kind = {}
    for d in documents:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    config_maps = by_kind.get("ConfigMap", {})
    services = by_kind.get("Service", {})
    configs = []
    for name, sts in by_kind.get("StatefulSet", {}).items():
        spec = sts["spec"]
        labels = spec["template"]["metadata"]["labels"]
        if not selects(spec["selector"]["matchLabels"], labels):
            raise Failure(f"StatefulSet {name}: its selector does not select its pods")
        headless = services.get(spec["serviceName"])
        if headless is None:
            raise Failure(f"StatefulSet {name}: no Service {spec['serviceName']}")
        if headless["spec"].get("clusterIP") != "None":
            raise Failure(f"Service {spec['serviceName']}: peers need a headless Service")
        if not headless["spec"].get("publishNotReadyAddresses"):
            raise Failure(
                f"Service {spec['serviceName']}: must publish not-ready pods "
                "(a node is ready only after it reached its peers)"
            )
        if spec.get("podManagementPolicy") != "Parallel":
            raise Failure(
                f"StatefulSet {name}: podManagementPolicy must be Parallel "
                "(no pod is ready before a majority runs)"
            )
        for service in services.values():
            if not selects(service["spec"].get("selector", {}), labels):
                raise Failure(f"Service {service['metadata']['name']} does not select the pods")
        for pdb in by_kind.get("PodDisruptionBudget", {}).values():
            if not selects(pdb["spec"]["selector"]["matchLabels"], labels):
                raise Failure(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
            if pdb["spec"].get("minAvailable", 0) <= spec["replicas"] // 2:
                raise Failure(f"PodDisruptionBudget {pdb['metadata']['name']}: below a majority")
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for container in spec["template"]["spec"]["containers"]:
            if container.get("command") not in (None, entrypoint):
                raise Failure(f"{name}/{container['name']}: command is not cairn")
            argv = container.get("args", cmd)
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container.get(probe, {}).get("httpGet")
                if get is None:
                    raise Failure(f"{name}/{container['name']}: no HTTP {probe}")
                if get["port"] not in ports and get["port"] not in ports.values():
                    raise Failure(f"{name}/{container['name']}: {probe} port {get['port']}?")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if mounts.get(VOLUME) not in claims:
                raise Failure(f"{name}/{container['name']}: {VOLUME} is not a claimed volume")
            secrets = {
                v["name"]
                for v in spec["template"]["spec"].get("volumes", [])
                if "secret" in v
            }
            if mounts.get(TLS_DIR) not in secrets:
                raise Failure(
                    f"{name}/{container['name']}: {TLS_DIR} (the TLS files) is not a Secret volume"
                )
            if mounts.get(ADMIN_DIR) not in secrets:
                raise Failure(
                    f"{name}/{container['name']}: {ADMIN_DIR} (the admin secret) is not a Secret"
                )
            for ordinal in range(spec["replicas"]):
                pod = f"{name}-{ordinal}"
                env = dict(docker_env)
                for source in container.get("envFrom", []):
                    ref = source.get("configMapRef")
                    if ref is None or ref["name"] not in config_maps:
                        raise Failure(f"{pod}: envFrom {source} is not a ConfigMap here")
                    env.update(config_maps[ref["name"]]["data"])
                for var in container.get("env", []):
                    if "value" in var:
                        env[var["name"]] = str(var["value"])
                        continue
                    source = var.get("valueFrom", {})
                    if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                        env[var["name"]] = pod
                    elif "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        data = config_maps.get(ref["name"], {}).get("data", {})
                        if ref["key"] not in data:
                            raise Failure(f"{pod}: no ConfigMap key {ref['name']}/{ref['key']}")
                        env[var["name"]] = data[ref["key"]]
                    else:
                        raise Failure(f"{pod}: cannot resolve {var['name']} from {source}")
                for variable, port_name in (("CAIRN_LISTEN", "grpc"), ("CAIRN_HTTP", "http")):
                    if variable not in env or port_of(env[variable]) != ports.get(port_name):
                        raise Failure(
                            f"{pod}: {variable}={env.get(variable)} is not the "
                            f"{port_name} containerPort {ports.get(port_name)}"
                        )
                reached_at = {f"{pod}.{spec['serviceName']}"}
                configs.append((f"k8s/{pod}", argv, env, ordinal + 1, reached_at))
    if not configs:
        raise Failure("k8s: no StatefulSet found")
    return configs


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    cairn = os.path.abspath(sys.argv[1])
    try:
        known = known_variables(cairn)
        docker = dockerfile_runtime()
        configs = compose_configs(docker) + k8s_configs(docker)
        ids = {}
        with tempfile.TemporaryDirectory() as scratch:
            for label, argv, env, expect_id, reached_at in configs:
                node_id = check_node(cairn, known, scratch, label, argv, env, expect_id, reached_at)
                group = label.split("/")[0]
                if node_id in ids.setdefault(group, set()):
                    raise Failure(f"{label}: node id {node_id} is used twice in {group}")
                ids[group].add(node_id)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(f"checked {len(configs)} node configurations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
