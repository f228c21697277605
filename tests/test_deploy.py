"""deploy/kubernetes/: valid Kubernetes objects, in agreement with the Dockerfile and the settings.

No cluster and no Docker engine here: the manifests are checked against the Kubernetes API's own
JSON schemas (PyPI `kubernetes-validate`, strict: an unknown or misspelt field fails), and against
what the image and the app really are, read from the Dockerfile, settings and the code.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from dashboard import cli
from queues.middleware import HealthEndpointMiddleware
from tests.conftest import BASE_DIR

MANIFESTS = BASE_DIR / "deploy" / "kubernetes"
# The oldest Kubernetes release the manifests promise to work on, and the newest schema bundled.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
SECRET_EXAMPLE = "secret.example.yaml"
# The Kubernetes objects every apply must create (the Secret comes from the operator's store).
EXPECTED_KINDS = {"ConfigMap", "Job", "Deployment", "Service"}
MB_PER_GUNICORN_PROCESS = 64  # README "Under load": a worker settles at 62-64 MB
DATABASE_ALIASES = 2  # README "Connections": `pgmq` and `default`, even when the same database


def load_documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def kustomization() -> dict:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def applied_objects() -> list[dict]:
    return [document for name in kustomization()["resources"] for document in load_documents(MANIFESTS / name)]


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def named(kind: str, component: str | None = None) -> dict:
    matches = [
        obj
        for obj in applied_objects()
        if obj["kind"] == kind
        and (component is None or obj["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]
    assert len(matches) == 1, f"expected one {kind} {component or ''}, found {len(matches)}"
    return matches[0]


def pod_specs() -> list[dict]:
    return [obj["spec"]["template"]["spec"] for obj in applied_objects() if obj["kind"] in ("Deployment", "Job")]


def containers() -> list[dict]:
    return [container for spec in pod_specs() for container in spec.get("containers", [])]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (BASE_DIR / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile(instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == instruction]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def image_port() -> int:
    (exposed,) = dockerfile("EXPOSE")
    return int(exposed.split("/")[0])


def image_user_id() -> int:
    run_lines = [arguments for name, arguments in final_stage() if name == "RUN" and "useradd" in arguments]
    (useradd,) = run_lines
    return int(re.search(r"--uid[ =](\d+)", useradd).group(1))


def image_command() -> list[str]:
    (command,) = dockerfile("CMD")
    return yaml.safe_load(command)  # the exec form is a JSON list


def image_env() -> dict[str, str]:
    env = {}
    for arguments in (arguments for name, arguments in final_stage() if name == "ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(arguments))
    return env


def variables_read_by(path: Path) -> set[str]:
    """Environment variable names a module reads: env.text("X"), env.integer("X", ...),
    os.environ.get("X"), os.environ["X"], "X" in os.environ."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        candidates = []
        if isinstance(node, ast.Call) and node.args:
            candidates.append(node.args[0])
        if isinstance(node, ast.Subscript):
            candidates.append(node.slice)
        if isinstance(node, ast.Compare):
            candidates.append(node.left)
        names.update(
            candidate.value
            for candidate in candidates
            if isinstance(candidate, ast.Constant)
            and isinstance(candidate.value, str)
            and re.fullmatch(r"[A-Z][A-Z0-9_]+", candidate.value)
        )
    return names


def variables_the_app_reads() -> set[str]:
    sources = ["dashboard/settings.py", "dashboard/env.py", "dashboard/gunicorn.conf.py"]
    return set().union(*(variables_read_by(BASE_DIR / source) for source in sources))


def variables_set_by(container: dict) -> set[str]:
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        (config_map,) = [
            obj
            for obj in applied_objects()
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        names |= set(config_map["data"])
    return names


def config_map_data() -> dict[str, str]:
    return named("ConfigMap")["data"]


def memory_mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity).groups()
    return float(number) * {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}[unit]


def run_settings(env: dict[str, str], code: str = "import django; django.setup()") -> subprocess.CompletedProcess:
    """Load the settings in a fresh Python with exactly this environment (and a PATH)."""
    environment = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "dashboard.settings", **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


# ---- valid Kubernetes objects


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_valid_against_the_kubernetes_schema(path, version):
    documents = load_documents(path)
    assert documents, f"{path.name} holds no object"
    for document in documents:
        # Raises ValidationError naming the field; strict: unknown fields are errors too.
        kubernetes_validate.validate(document, version, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_secret_template():
    spec = kustomization()
    assert spec["kind"] == "Kustomization"
    # Only what the tests above see as it is: a list of files, and the image to run.
    assert set(spec) <= {"apiVersion", "kind", "resources", "images"}
    assert sorted(spec["resources"]) == sorted(path.name for path in manifest_files() if path.name != SECRET_EXAMPLE)
    assert {obj["kind"] for obj in applied_objects()} == EXPECTED_KINDS
    assert [image["name"] for image in spec["images"]] == ["pgmq-dashboard"]
    assert {container["image"] for container in containers()} == {"pgmq-dashboard"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (apt: kubectl)")
def test_the_rendered_kustomization_is_valid():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    documents = [document for document in yaml.safe_load_all(rendered) if document]
    assert len(documents) == len(applied_objects())
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


# ---- in agreement with the Dockerfile


def test_the_web_server_runs_the_dockerfiles_command_on_its_port():
    (web,) = named("Deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert web["command"] == image_command()
    assert [port["containerPort"] for port in web["ports"]] == [image_port()]
    # gunicorn listens where the image says (GUNICORN_BIND), and the manifests do not move it.
    assert image_env()["GUNICORN_BIND"].rsplit(":", 1)[1] == str(image_port())
    assert "GUNICORN_BIND" not in variables_set_by(web)
    service = named("Service")
    assert [port["targetPort"] for port in service["spec"]["ports"]] == [web["ports"][0]["name"]]
    assert (
        service["spec"]["selector"].items()
        <= named("Deployment", "web")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_every_pod_runs_as_the_images_user_on_a_read_only_root():
    for spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == image_user_id()
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            # gunicorn writes its worker heartbeat files in the temporary directory.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]


def test_readiness_is_the_health_endpoint_and_liveness_does_not_need_the_database():
    (web,) = named("Deployment", "web")["spec"]["template"]["spec"]["containers"]
    readiness, liveness = web["readinessProbe"], web["livenessProbe"]
    assert readiness["httpGet"]["path"] == HealthEndpointMiddleware.path
    assert readiness["httpGet"]["port"] == web["ports"][0]["name"]
    # /healthz answers 503 while a database is away: a liveness probe on it would restart every pod.
    assert "httpGet" not in liveness or liveness["httpGet"]["path"] != HealthEndpointMiddleware.path
    assert liveness["tcpSocket"]["port"] == web["ports"][0]["name"]


def test_the_commands_exist_and_the_sampler_is_exactly_one():
    commands = {
        component: named(kind, component)["spec"]["template"]["spec"]["containers"][0]["command"]
        for kind, component in [("Job", "migrate"), ("Deployment", "sampler"), ("Deployment", "job-runner")]
    }
    assert commands == {
        "migrate": ["pgmq-dashboard", "migrate"],
        "sampler": ["pgmq-dashboard", "sample"],
        "job-runner": ["pgmq-dashboard", "run-jobs"],
    }
    for command in [*commands.values(), image_command()]:
        assert command[0] == "pgmq-dashboard"
        assert cli.parser().parse_args(command[1:]).subcommand == command[1]
    sampler = named("Deployment", "sampler")["spec"]
    assert sampler["replicas"] == 1
    assert sampler["strategy"] == {"type": "Recreate"}


# ---- in agreement with the settings


def test_every_variable_the_manifests_set_is_one_the_app_reads():
    known = variables_the_app_reads()
    assert {"PGMQ_DATABASE_URL", "DJANGO_SECRET_KEY", "WEB_CONCURRENCY"} <= known  # the parser works
    for container in containers():
        unknown = variables_set_by(container) - known
        assert not unknown, f"{container['name']} sets variables nothing reads: {sorted(unknown)}"


def test_secrets_come_from_the_secret_and_the_required_ones_are_not_optional():
    (secret,) = load_documents(MANIFESTS / SECRET_EXAMPLE)
    assert set(secret["stringData"]) == {"PGMQ_DATABASE_URL", "DJANGO_SECRET_KEY", "DASHBOARD_DATABASE_URL"}
    assert not set(config_map_data()) & set(secret["stringData"])
    for container in containers():
        references = {
            entry["name"]: entry["valueFrom"]["secretKeyRef"]
            for entry in container["env"]
            if "secretKeyRef" in entry.get("valueFrom", {})
        }
        assert set(references) == set(secret["stringData"]), container["name"]
        for name, reference in references.items():
            assert reference["name"] == secret["metadata"]["name"] and reference["key"] == name
            assert reference.get("optional", False) is (name == "DASHBOARD_DATABASE_URL")


def test_the_settings_accept_the_manifests_configuration_and_need_each_secret():
    strong = {
        "PGMQ_DATABASE_URL": "postgresql://dashboard:pw@db.internal:5432/app",
        "DJANGO_SECRET_KEY": "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz",
    }
    accepted = run_settings(
        {**config_map_data(), **strong},
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_PROXY_SSL_HEADER, s.ALLOWED_HOSTS)",
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("False ('HTTP_X_FORWARDED_PROTO', 'https')")
    for required in ("PGMQ_DATABASE_URL", "DJANGO_SECRET_KEY"):
        refused = run_settings({**config_map_data(), **{k: v for k, v in strong.items() if k != required}})
        assert refused.returncode != 0 and required in refused.stderr
    # The template's placeholder key fails closed: pods started with it as it is stop at once.
    (secret,) = load_documents(MANIFESTS / SECRET_EXAMPLE)
    placeholder = run_settings(
        {**config_map_data(), **strong, "DJANGO_SECRET_KEY": secret["stringData"]["DJANGO_SECRET_KEY"]}
    )
    assert placeholder.returncode != 0 and "DJANGO_SECRET_KEY" in placeholder.stderr


def test_web_memory_and_connections_follow_from_the_gunicorn_settings():
    gunicorn = {}
    environment = {**os.environ, **config_map_data()}
    code = (BASE_DIR / "dashboard" / "gunicorn.conf.py").read_text()
    saved = dict(os.environ)
    try:
        os.environ.update(environment)
        exec(compile(code, "gunicorn.conf.py", "exec"), gunicorn)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    (web,) = named("Deployment", "web")["spec"]["template"]["spec"]["containers"]
    # Every worker and the master (preload_app) hold the app.
    needed = (gunicorn["workers"] + 1) * MB_PER_GUNICORN_PROCESS
    assert memory_mib(web["resources"]["requests"]["memory"]) >= needed
    assert memory_mib(web["resources"]["limits"]["memory"]) >= 2 * needed
    # The figure web.yaml states per pod is the one gunicorn.conf.py's settings give.
    per_pod = gunicorn["workers"] * gunicorn["threads"] * DATABASE_ALIASES
    stated = re.search(
        r"database connections, (\d+) with configmap.yaml's values",
        " ".join((MANIFESTS / "web.yaml").read_text().replace("#", " ").split()),
    )
    assert stated and int(stated.group(1)) == per_pod


# ---- the Dockerfile itself (it cannot be built here)


def test_the_dockerfile_copies_files_that_exist_and_are_not_ignored():
    ignored = [line.strip() for line in (BASE_DIR / ".dockerignore").read_text().splitlines() if line.strip()]
    for arguments in dockerfile("COPY"):
        if arguments.startswith("--from="):
            continue
        *sources, _target = arguments.split()
        for source in sources:
            assert (BASE_DIR / source).exists(), f"COPY {source}: no such file"
            assert source == "." or not any(
                Path(source).match(pattern) or source.startswith(pattern + "/") for pattern in ignored
            ), f"COPY {source} is in .dockerignore"
    # What the image needs at run time is in the build context.
    for needed in ["manage.py", "dashboard", "queues", "templates", "static", "requirements.txt"]:
        assert needed not in ignored


def test_the_image_carries_neither_the_tests_nor_the_developer_tools_and_needs_neither():
    ignored = {line.strip() for line in (BASE_DIR / ".dockerignore").read_text().splitlines()}
    assert {"tests", "perf"} <= ignored
    # What the image runs imports neither, by name or as an app.
    from django.conf import settings

    assert not [app for app in settings.INSTALLED_APPS if app.split(".")[0] in ("perf", "tests")]
    for source in [
        BASE_DIR / "manage.py",
        *(BASE_DIR / "dashboard").rglob("*.py"),
        *(BASE_DIR / "queues").rglob("*.py"),
    ]:
        tree = ast.parse(source.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not [name for name in imported if name.split(".")[0] in ("perf", "tests")], source


def test_the_dockerfile_fetches_static_files_with_the_script_alone():
    # The build runs scripts/fetch_static.py with nothing else of the project copied yet.
    tree = ast.parse((BASE_DIR / "scripts" / "fetch_static.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names
    runs = " ".join(dockerfile("RUN"))
    assert "scripts/fetch_static.py" in runs and "collectstatic --noinput" in runs
    assert runs.index("fetch_static.py") < runs.index("collectstatic")


def test_the_dockerfile_healthcheck_asks_the_health_endpoint_on_the_exposed_port():
    (healthcheck,) = dockerfile("HEALTHCHECK")
    assert f"http://127.0.0.1:{image_port()}{HealthEndpointMiddleware.path}" in healthcheck
    assert image_command() == ["pgmq-dashboard", "serve"]  # gunicorn with dashboard/gunicorn.conf.py
    assert [arguments for name, arguments in final_stage() if name == "USER"] == ["dashboard"]
