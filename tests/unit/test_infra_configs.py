"""Deployment files under infra/ against each other and the code (no network).

Parses every YAML/JSON file, the Terraform (python-hcl2), the compose stack, the
k8s manifests and the TF Serving model configs, and checks that they name the
same models, topics, stores, variables and flags as the code reads.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.components import optional_tool, require_binary, require_import

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TERRAFORM = INFRA / "terraform"
TEMPLATES = TERRAFORM / "templates"
HCL2_INSTALL = "pip install 'python-hcl2>=8,<9' (in the test extra)"
TERRAFORM_WHY = "not in Debian or on PyPI; the HCL checks above run without it"


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


checks = _load("infra_checks", INFRA / "checks.py")


def infra_files(*suffixes: str) -> list[Path]:
    return sorted(
        p
        for p in INFRA.rglob("*")
        if p.suffix in suffixes and p.is_file() and "generated" not in p.relative_to(INFRA).parts
    )


def placeholders(text: str) -> set[str]:
    """``${name}`` references of a Terraform template or a manifest (not ``$${``)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


# --- Every file parses -------------------------------------------------------------


@pytest.mark.parametrize("path", infra_files(".yml", ".yaml"), ids=lambda p: p.name)
def test_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no YAML document"


@pytest.mark.parametrize("path", infra_files(".json"), ids=lambda p: p.name)
def test_json_file_parses(path: Path) -> None:
    assert json.loads(path.read_text())


# --- Terraform ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def terraform() -> dict[str, Any]:
    """All .tf files merged: {"variable": {...}, "resource": {type: {name: body}}, ...}."""
    hcl2 = require_import("hcl2", HCL2_INSTALL)
    SerializationOptions = require_import("hcl2.utils", HCL2_INSTALL).SerializationOptions
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    merged: dict[str, Any] = {"variable": {}, "resource": {}, "output": {}, "locals": {}}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle, serialization_options=options)
        for block in parsed.get("variable", []):
            merged["variable"].update(block)
        for block in parsed.get("output", []):
            merged["output"].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
    return merged


def terraform_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")))


def default(terraform: dict[str, Any], name: str) -> Any:
    return terraform["variable"][name]["default"]


def test_terraform_parses_and_uses_exactly_its_variables(terraform) -> None:
    declared = set(terraform["variable"])
    used = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", terraform_text()))
    assert used - declared == set(), "used but not declared"
    assert declared - used == set(), "declared but never used"
    for name, body in terraform["variable"].items():
        assert body.get("description"), f"variable {name} has no description"
    assert {"google_pubsub_topic", "google_pubsub_subscription", "google_storage_bucket"} <= set(
        terraform["resource"]
    )


def test_terraform_is_formatted() -> None:
    binary = optional_tool("terraform", f"`terraform fmt` needs it ({TERRAFORM_WHY})")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_events_subscription_has_a_dead_letter_policy(terraform) -> None:
    subscription = terraform["resource"]["google_pubsub_subscription"]["events"]
    policy = subscription["dead_letter_policy"][0]
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.undeliverable.id}"
    assert 5 <= default(terraform, "max_delivery_attempts") <= 100
    # Every dead-letter topic has a subscription: a topic without one drops messages.
    topics = {s["topic"] for s in terraform["resource"]["google_pubsub_subscription"].values()}
    for name in ("events", "dead_letters", "undeliverable"):
        assert f"${{google_pubsub_topic.{name}.id}}" in topics


def test_online_store_is_selected_by_a_variable(terraform) -> None:
    condition = terraform["variable"]["online_store"]["validation"][0]["condition"]
    assert '"redis"' in condition and '"bigtable"' in condition
    resources = terraform["resource"]
    assert resources["google_redis_instance"]["store"]["count"] == "${local.redis ? 1 : 0}"
    assert resources["google_bigtable_instance"]["store"]["count"] == "${local.bigtable ? 1 : 0}"


def test_bigtable_tables_are_the_ones_feast_writes(terraform) -> None:
    from feature_repo.features import ITEM_ENTITY, USER_ENTITY

    tables = re.findall(
        r'"\$\{var\.feast_project\}\.(\w+)"', terraform["locals"]["bigtable_tables"]
    )
    assert sorted(tables) == sorted([USER_ENTITY, ITEM_ENTITY])
    table = terraform["resource"]["google_bigtable_table"]["features"]
    assert table["column_family"][0]["family"] == "features"  # Feast's column family
    policy = terraform["resource"]["google_bigtable_gc_policy"]["features"]
    assert policy["max_version"][0]["number"] == 2  # Feast's default max_versions


def test_workload_identity_binds_the_k8s_service_accounts(terraform) -> None:
    bindings = terraform["resource"]["google_service_account_iam_member"]
    members = {b["member"] for b in bindings.values()}
    manifests = k8s_documents()
    accounts = {d["metadata"]["name"] for d in manifests if d["kind"] == "ServiceAccount"}
    expected = {
        f"serviceAccount:${{local.workload_id}}[${{var.k8s_namespace}}/{name}]" for name in accounts
    }
    assert members == expected


def test_readme_enables_the_apis_terraform_declares(terraform) -> None:
    readme = (INFRA / "README.md").read_text()
    command = re.search(r"gcloud services enable ((?:[^\n]*\\\n)*[^\n]*)", readme).group(1)
    enabled = set(re.findall(r"[a-z]+\.googleapis\.com", command))
    assert enabled == set(terraform["locals"]["services"])


def test_readme_reads_existing_terraform_outputs(terraform) -> None:
    readme = (INFRA / "README.md").read_text()
    used = set(re.findall(r"terraform -chdir=infra/terraform output -raw (\w+)", readme))
    assert used and used <= set(terraform["output"]), sorted(used - set(terraform["output"]))


# --- Terraform templates and the configs they render ---------------------------------


def templatefile_calls() -> Iterator[tuple[str, set[str]]]:
    """(template file name, keys passed) of every templatefile() in the .tf files."""
    pattern = r'templatefile\("\$\{path\.module\}/templates/([^"]+)",\s*\{(.*?)\n\s*\}\)'
    for name, body in re.findall(pattern, terraform_text(), flags=re.S):
        keys = set(re.findall(r"^\s*(\w+)\s*=", body, flags=re.M))
        if "${var.online_store}" in name:
            for store in ("redis", "bigtable"):
                yield name.replace("${var.online_store}", store), keys
        else:
            yield name, keys


def test_templatefile_calls_pass_every_placeholder() -> None:
    calls = list(templatefile_calls())
    assert {name for name, _ in calls} == {p.name for p in TEMPLATES.glob("*.tftpl")}
    for name, keys in calls:
        missing = placeholders((TEMPLATES / name).read_text()) - keys
        assert not missing, f"{name}: templatefile() does not pass {sorted(missing)}"


SAMPLE = {
    "feast_project": "rtp",
    "redis_host": "10.0.0.3",
    "redis_port": 6379,
    "project": "my-project",
    "bigtable_instance": "rtp-online",
    "model_base": "gs://my-project-rtp-models/models",
    "namespace": "rtp",
    "events_topic": "projects/my-project/topics/engagement-events",
    "service_image": "europe-west1-docker.pkg.dev/my-project/rtp/rtp:v1",
    "tfserving_image": "tensorflow/serving:2.21.0",
    "models_bucket": "my-project-rtp-models",
    "service_gsa": "rtp-service@my-project.iam.gserviceaccount.com",
    "tfserving_gsa": "rtp-tfserving@my-project.iam.gserviceaccount.com",
}


def render(name: str, **extra: Any) -> str:
    return checks.render_template((TEMPLATES / name).read_text(), {**SAMPLE, **extra})


def rendered_store(backend: str) -> dict[str, Any]:
    return yaml.safe_load(render(f"store.{backend}.yaml.tftpl"))


def rendered_serving(backend: str) -> str:
    return render("serving.yaml.tftpl", store_json=json.dumps(rendered_store(backend)))


@pytest.mark.parametrize("backend", ["redis", "bigtable"])
def test_rendered_store_config_is_valid_as_the_job_reads_it(backend: str, tmp_path: Path) -> None:
    from beam_pipelines.jobs_common import store_config
    from feature_repo.store import load_store_config

    path = tmp_path / "store.yaml"
    path.write_text(render(f"store.{backend}.yaml.tftpl"))
    assert "${" not in uncommented(path.read_text()), "the job does not expand ${VAR}"
    config = load_store_config(store_config(str(path), "unused.db"))  # the job's own path
    assert config.type == backend
    assert config.feast_project == SAMPLE["feast_project"]


@pytest.mark.parametrize("backend", ["redis", "bigtable"])
def test_rendered_serving_config_is_valid_and_uses_the_jobs_store(backend: str, tmp_path) -> None:
    from feature_repo.store import load_store_config
    from serving.config import GrpcModelsConfig, load_serving_config

    path = tmp_path / "serving.yaml"
    path.write_text(rendered_serving(backend))
    config = load_serving_config(path)
    assert config.store == load_store_config(rendered_store(backend))
    assert isinstance(config.models, GrpcModelsConfig)
    host, port = config.models.address.rsplit(":", 1)
    assert host == f"tfserving.{SAMPLE['namespace']}.svc.cluster.local"
    assert int(port) == k8s_service_port("tfserving", "grpc")
    assert config.pubsub_topic == SAMPLE["events_topic"]


def test_terraform_renders_the_templates_like_the_tests() -> None:
    binary = optional_tool("terraform", f"rendering with Terraform needs it ({TERRAFORM_WHY})")
    for name, keys in templatefile_calls():
        values = {k: SAMPLE.get(k, f"sample-{k}") for k in keys}
        if name == "serving.yaml.tftpl":
            values["store_json"] = "{}"
        hcl_values = ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in sorted(values.items()))
        expression = f'base64encode(templatefile("{TEMPLATES / name}", {{{hcl_values}}}))\n'
        result = subprocess.run(
            [binary, "console"],
            input=expression,
            capture_output=True,
            text=True,
            cwd=REPO / "out" if (REPO / "out").is_dir() else "/tmp",
            env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        by_terraform = base64.b64decode(json.loads(result.stdout.strip())).decode()
        assert by_terraform == checks.render_template((TEMPLATES / name).read_text(), values)


# --- TF Serving model configs ------------------------------------------------------


def exported_models() -> tuple[str, ...]:
    names = checks.exporter_model_names()
    assert names is not None, "models/export.py has no MODEL_NAMES to compare"
    return names


def test_tf_serving_configs_serve_exactly_the_exported_models() -> None:
    names = exported_models()
    local = checks.models_config((INFRA / "tfserving" / "models.config").read_text())
    gke = checks.models_config(render("models.config.tftpl"))
    assert list(local) == list(gke) == list(names)
    assert local == {n: f"/models/{n}" for n in names}
    assert gke == {n: f"{SAMPLE['model_base']}/{n}" for n in names}


def test_service_asks_tf_serving_for_models_it_serves() -> None:
    from serving.config import GrpcModelsConfig

    names = set(exported_models())
    defaults = GrpcModelsConfig()
    assert {defaults.retrieval_model, defaults.ranker_model} <= names
    probe = k8s_deployment("tfserving")["spec"]["template"]["spec"]["containers"][0]
    assert probe["readinessProbe"]["httpGet"]["path"].rsplit("/", 1)[1] in names


# --- docker-compose ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][name].get("environment", {}).items()}


def shell_command(compose: dict[str, Any], name: str) -> list[str]:
    """The argv of an ``sh -c`` service after the shell expands its environment."""
    service = compose["services"][name]
    assert service["entrypoint"] == ["sh", "-c"]
    script = service["command"][0]
    env = service_env(compose, name)
    used = set(re.findall(r"\$\$\{?(\w+)\}?", script))
    assert used <= env.keys(), f"{name} uses unset {sorted(used - env.keys())}"
    expanded = re.sub(r"\$\$\{?(\w+)\}?", lambda m: env[m.group(1)], script)
    argv = shlex.split(expanded)
    assert argv[:2] == ["exec", "rtp"]
    return argv[2:]


def split_volume(volume: str) -> tuple[str, str]:
    """(source, target) of a short-syntax volume; the source may be ``${VAR:-default}``."""
    if volume.endswith((":ro", ":rw")):
        volume = volume[:-3]
    source, target = volume.rsplit(":", 1)
    return source, target


def host_path(compose: dict[str, Any], name: str, container_path: str) -> Path:
    """Where a file the service sees at ``container_path`` comes from on the host."""
    for volume in compose["services"][name].get("volumes", []):
        source, target = split_volume(volume)
        source = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", source)  # the default of ${VAR:-default}
        if container_path.startswith(target.rstrip("/") + "/"):
            return (INFRA / source / container_path[len(target) + 1 :]).resolve()
    raise AssertionError(f"{name}: nothing mounted at {container_path}")


def test_compose_runs_the_real_images(compose) -> None:
    services = compose["services"]
    assert (
        services["pubsub"]["image"] == "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
    )
    assert services["redis"]["image"].startswith("redis:")
    assert services["tfserving"]["image"].startswith("tensorflow/serving:")
    for name in ("pubsub-init", "stream", "service"):
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile"
        assert (INFRA / services[name]["build"]["context"] / "infra" / "Dockerfile").exists()


def test_compose_pubsub_emulator_host_is_what_the_clients_read(compose) -> None:
    import google.cloud.pubsub_v1 as pubsub_v1

    package = Path(pubsub_v1.__file__).parent
    assert any("PUBSUB_EMULATOR_HOST" in p.read_text() for p in package.rglob("*.py"))
    assert "PUBSUB_EMULATOR_HOST" in (REPO / "serving" / "events.py").read_text()
    port = compose["services"]["pubsub"]["command"].rsplit(":", 1)[1]
    for name in ("pubsub-init", "stream", "service"):
        assert service_env(compose, name)["PUBSUB_EMULATOR_HOST"] == f"pubsub:{port}"


def test_compose_stream_command_is_a_valid_streaming_job(compose) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from beam_pipelines.jobs_common import store_config
    from beam_pipelines.streaming import pipeline_options
    from feature_repo.store import RedisStoreConfig, load_store_config

    argv = shell_command(compose, "stream")
    assert argv[0] == "stream"
    known = set(PipelineOptions([]).get_all_options())
    flags = {a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    assert flags <= known, f"unknown flags {sorted(flags - known)}"
    options = pipeline_options(argv[1:])  # validates like `rtp stream`
    assert options.view_as(StandardOptions).runner == "BundleBasedDirectRunner"

    env = service_env(compose, "stream")
    path = host_path(compose, "stream", env["RTP_STORE_CONFIG"])
    assert "${" not in uncommented(path.read_text()), "the job does not expand ${VAR}"
    store = load_store_config(store_config(str(path), "unused.db"))
    assert isinstance(store, RedisStoreConfig)
    host, port = store.connection_string.split(",")[0].split(":")
    assert host in compose["services"] and port == "6379"


def serve_config(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """The ServingConfig `rtp serve` builds from the compose command and environment."""
    app = require_import("serving.app", "pip install -e '.[test]'")
    config_from_args, parser = app.config_from_args, app.parser
    argv = shell_command(compose, "service")
    assert argv[0] == "serve"
    args = parser().parse_args(argv[1:])
    env = service_env(compose, "service")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config_path = host_path(compose, "service", args.config)
    used = placeholders(uncommented(config_path.read_text()))
    assert used <= env.keys(), f"serving.yaml uses unset {sorted(used - env.keys())}"
    args.config = str(config_path)
    return config_from_args(args), env


def test_compose_service_gets_a_valid_config_and_the_jobs_store(compose, monkeypatch) -> None:
    from beam_pipelines.jobs_common import store_config
    from feature_repo.store import load_store_config
    from serving.config import GrpcModelsConfig

    config, env = serve_config(compose, monkeypatch)
    stream_env = service_env(compose, "stream")
    job_store = load_store_config(
        store_config(str(host_path(compose, "stream", stream_env["RTP_STORE_CONFIG"])), "x")
    )
    assert config.store == job_store
    assert isinstance(config.models, GrpcModelsConfig)
    host, port = config.models.address.split(":")
    tfserving = compose["services"]["tfserving"]
    assert host == "tfserving" and f"--port={port}" in tfserving["command"]
    assert config.model_base == env["RTP_MODEL_BASE"] == stream_env["RTP_MODEL_BASE"]
    project = env["PUBSUB_PROJECT_ID"]
    assert config.pubsub_topic == f"projects/{project}/topics/engagement-events"


def test_compose_mounts_the_same_models_everywhere(compose) -> None:
    sources = {
        name: [
            s for s, t in map(split_volume, compose["services"][name]["volumes"]) if t == "/models"
        ]
        for name in ("tfserving", "stream", "service")
    }
    assert len({tuple(s) for s in sources.values()}) == 1 and len(sources["service"]) == 1
    assert host_path(compose, "service", "/models/x") == REPO / "out" / "models" / "x"
    command = compose["services"]["tfserving"]["command"]
    config = next(c.split("=", 1)[1] for c in command if c.startswith("--model_config_file="))
    assert host_path(compose, "tfserving", config) == INFRA / "tfserving" / "models.config"


def test_pubsub_names_agree_across_terraform_compose_and_init(terraform, compose) -> None:
    init = _load("infra_pubsub_init", INFRA / "local" / "pubsub_init.py")
    assert default(terraform, "events_topic") == init.EVENTS_TOPIC
    assert default(terraform, "events_subscription") == init.EVENTS_SUBSCRIPTION
    assert default(terraform, "dead_letter_topic") == init.DEAD_LETTER_TOPIC
    assert default(terraform, "undeliverable_topic") == init.UNDELIVERABLE_TOPIC
    assert default(terraform, "max_delivery_attempts") == init.MAX_DELIVERY_ATTEMPTS
    stream, service = service_env(compose, "stream"), service_env(compose, "service")
    project = stream["PUBSUB_PROJECT_ID"]
    assert stream["RTP_INPUT_SUBSCRIPTION"] == (
        f"projects/{project}/subscriptions/{init.EVENTS_SUBSCRIPTION}"
    )
    assert stream["RTP_DEAD_LETTER_TOPIC"] == f"projects/{project}/topics/{init.DEAD_LETTER_TOPIC}"
    assert service["RTP_EVENTS_TOPIC"] == f"projects/{project}/topics/{init.EVENTS_TOPIC}"
    assert compose["services"]["pubsub"]["command"].split("--project=")[1].split()[0] == project


# --- Kubernetes manifests ------------------------------------------------------------


def k8s_env() -> dict[str, str]:
    """The variables ``terraform output k8s_env`` defines, with sample values."""
    text = render("k8s.env.tftpl")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        text = checks.envsubst(path.read_text(), k8s_env())  # KeyError if unset
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def k8s_deployment(name: str) -> dict[str, Any]:
    return next(
        d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    )


def k8s_service_port(name: str, port_name: str) -> int:
    service = next(
        d for d in k8s_documents() if d["kind"] == "Service" and d["metadata"]["name"] == name
    )
    return next(p["port"] for p in service["spec"]["ports"] if p["name"] == port_name)


def test_k8s_manifests_use_exactly_the_terraform_variables() -> None:
    used = set().union(*(placeholders(p.read_text()) for p in (INFRA / "k8s").glob("*.yaml")))
    assert used == set(k8s_env())


def test_render_script_gives_the_same_manifests(tmp_path: Path) -> None:
    require_binary("bash", "apt-get install bash")
    require_binary("envsubst", "apt-get install gettext-base (.ci/system-deps.sh)")
    env_file = tmp_path / "k8s.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in k8s_env().items()))
    out = subprocess.run(
        [str(INFRA / "k8s" / "render.sh"), str(env_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    rendered = sorted((d for d in yaml.safe_load_all(out) if d), key=key)
    assert rendered == sorted(k8s_documents(), key=key)
    env_file.write_text("NAMESPACE=rtp\n")
    failed = subprocess.run(
        [str(INFRA / "k8s" / "render.sh"), str(env_file)], capture_output=True, text=True
    )
    assert failed.returncode != 0 and "is not set" in failed.stderr


def test_k8s_objects_fit_together() -> None:
    docs = k8s_documents()
    namespace = k8s_env()["NAMESPACE"]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == namespace
    for name, deployment in by_kind["Deployment"].items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        pod = spec["template"]["spec"]
        assert pod["serviceAccountName"] in by_kind["ServiceAccount"]
        service = by_kind["Service"][name]
        assert service["spec"]["selector"].items() <= labels.items()
        container_ports = {p["name"] for c in pod["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
        mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod.get("volumes", [])}
    for account in by_kind["ServiceAccount"].values():
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]


def test_tf_serving_reads_the_config_terraform_writes(terraform) -> None:
    obj = terraform["resource"]["google_storage_bucket_object"]["models_config"]
    container = k8s_deployment("tfserving")["spec"]["template"]["spec"]["containers"][0]
    bucket = k8s_env()["MODELS_BUCKET"]
    assert f"--model_config_file=gs://{bucket}/{obj['name']}" in container["args"]
    assert '"gs://${google_storage_bucket.models.name}/models"' in terraform_text()


def test_k8s_service_runs_rtp_serve_like_compose(compose, monkeypatch) -> None:
    pod = k8s_deployment("recommender")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    compose_args = shell_command(compose, "service")
    assert args[0] == compose_args[0] == "serve"
    flags = lambda argv: {a for a in argv if a.startswith("--")}  # noqa: E731
    assert flags(args) == flags(compose_args)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_file = env["RTP_SERVING_CONFIG"].rsplit("/", 1)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == "rtp-serving"
    readme = (INFRA / "README.md").read_text()
    assert f"create configmap rtp-serving --from-file={config_file}=" in readme
    models = volumes[mounts[env["RTP_MODEL_BASE"]]]["csi"]
    assert models["volumeAttributes"]["bucketName"] == k8s_env()["MODELS_BUCKET"]
    assert "only-dir=models" in models["volumeAttributes"]["mountOptions"]
    # serving.yaml from Terraform says the same model base as the flag.
    assert yaml.safe_load(rendered_serving("redis"))["model_base"] == env["RTP_MODEL_BASE"]
    parser = require_import("serving.app", "pip install -e '.[test]'").parser
    parsed = parser().parse_args(args[1:])
    assert (parsed.models, parsed.config, parsed.port) == ("/models", "/etc/rtp/serving.yaml", 8080)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "/healthz" in (REPO / "serving" / "app.py").read_text()


# --- Flink -----------------------------------------------------------------------------


def test_flink_config_keeps_state_in_rocksdb_with_checkpoints() -> None:
    config = yaml.safe_load((INFRA / "flink" / "config.yaml").read_text())
    assert config["state.backend.type"] == "rocksdb"
    assert config["state.backend.rocksdb.timer-service.factory"] == "ROCKSDB"
    assert config["execution.checkpointing.mode"] == "EXACTLY_ONCE"


def test_readme_flink_command_uses_known_options() -> None:
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions

    readme = (INFRA / "README.md").read_text()
    command = re.search(r"python -m beam_pipelines\.streaming \\\n((?:.*\\\n)*.*)", readme).group(1)
    flags = {m for m in re.findall(r"--(\w+)=", command)}
    # Options of Beam's Java Flink job server, passed through by the portable runner.
    java_side = {"checkpointing_interval"}
    known = set(PipelineOptions([]).get_all_options()) | java_side
    assert flags <= known, sorted(flags - known)
    version = re.search(r"--flink_version=(\S+)", command).group(1)
    assert version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS


def test_readme_flex_template_parameters_are_template_parameters() -> None:
    readme = (INFRA / "README.md").read_text()
    names = {p["name"] for p in checks.load_metadata()["parameters"]}
    runs = re.findall(r"--parameters=(\S+)", readme)
    assert runs
    for value in runs:
        keys = {pair.split("=", 1)[0] for pair in value.split(",")}
        assert keys <= names, sorted(keys - names)
