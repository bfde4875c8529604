"""deploy/: the shape of the compose stack, the Kubernetes manifests, the image and the alerting rules.

Pure file checks (PyYAML), cross-checked against the code they configure: every HUB_* variable must be a field
of hub.settings.Settings, every metric an alert or dashboard uses must be exported by hub.metrics.Metrics.
deploy/check.sh's fast parts run here too; its slow part (a clean venv install + `ocpi-hub serve`) runs only
with HUB_TEST_DEPLOY_INSTALL=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from hub.metrics import LATENCY_BUCKETS, Metrics
from hub.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# Settings the image or the compose file fix; .env.example lists them, commented, with the deployment's value.
FIXED_BY_DEPLOYMENT = {"HUB_HOST", "HUB_PORT", "HUB_URL", "HUB_SQLITE_PATH"}
PLACEHOLDER = "change-me"


def _load_checks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_checks", DEPLOY / "checks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


checks = _load_checks()


def setting_vars() -> dict[str, Any]:
    """HUB_<FIELD> -> field info, for every field of the one settings class."""
    return {f"HUB_{name.upper()}": info for name, info in Settings.model_fields.items()}


def exported_metric_names() -> set[str]:
    """Series names /metrics can carry: counters get _total, histograms _bucket/_sum/_count (read from the text
    /metrics writes before any request: every family is there with its HELP and TYPE)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(Metrics().exposition().decode()):
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def k8s_docs() -> dict[str, dict[str, Any]]:
    """kind/name -> manifest, over every YAML file in deploy/k8s (examples included)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "secret.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(checks.load_compose())


@pytest.fixture(scope="module")
def hub_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith("hub-")}


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return k8s_docs()["Deployment/ocpi-hub"]


# --- compose --------------------------------------------------------------------------------------------------

def test_compose_runs_two_hub_replicas_of_one_image_one_process_each(hub_services: dict[str, Any]) -> None:
    assert sorted(hub_services) == ["hub-1", "hub-2"]
    for svc in hub_services.values():
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert svc["command"] == ["serve", "--workers", "1"]
        assert svc["env_file"] == ".env"
        assert "ports" not in svc, "hub replicas are reached through the proxy only"
    images = {svc["image"] for svc in hub_services.values()}
    assert len(images) == 1


def test_compose_has_one_public_entry_balancing_over_every_replica(
    compose: dict[str, Any], hub_services: dict[str, Any]
) -> None:
    published = {name: svc["ports"] for name, svc in compose["services"].items() if svc.get("ports")}
    assert published.pop("proxy") == ["8080:8080"]
    for name, ports in published.items():  # operator UIs only on loopback
        assert all(str(p).startswith("127.0.0.1:") for p in ports), name
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+)", cfg, re.MULTILINE)
    assert {addr for _, addr in servers} == {f"{name}:8080" for name in hub_services}
    assert re.search(r"http-check send meth GET uri /readyz", cfg)
    assert re.search(r"http-request deny .*path_beg /admin", cfg), "/admin must not be public"
    assert re.search(r"http-request deny .*path_beg /console", cfg), "/console must not be public"


def test_compose_hubs_wait_for_healthy_redis_and_mongo(compose: dict[str, Any], hub_services: dict[str, Any]) -> None:
    for svc in hub_services.values():
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"},
                                     "mongo": {"condition": "service_healthy"}}
    for name in ("redis", "mongo"):
        assert compose["services"][name]["healthcheck"]["test"][0] == "CMD"


def test_compose_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd
    assert "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]


def test_compose_mongo_is_an_initiated_replica_set(compose: dict[str, Any]) -> None:
    mongo = compose["services"]["mongo"]
    assert mongo["command"][mongo["command"].index("--replSet") + 1] == "rs0"
    probe = mongo["healthcheck"]["test"][-1]
    assert "rs.initiate" in probe and "host: 'mongo:27017'" in probe and "isWritablePrimary" in probe
    assert "mongo-data:/data/db" in mongo["volumes"]
    env = checks.read_env_file(checks.ENV_EXAMPLE)
    assert env["HUB_MONGO_URL"] == "mongodb://mongo:27017/?replicaSet=rs0"
    assert env["HUB_REDIS_URL"] == "redis://redis:6379/0"


def test_compose_requires_admin_token_and_public_url(hub_services: dict[str, Any]) -> None:
    env = checks.read_env_file(checks.ENV_EXAMPLE)
    for name in ("HUB_ADMIN_TOKEN", "HUB_PUBLIC_URL", "GRAFANA_ADMIN_PASSWORD"):
        with pytest.raises(checks.CheckError, match=name):
            checks.load_compose({k: v for k, v in env.items() if k != name})
    for svc in hub_services.values():
        assert svc["environment"]["HUB_HOST"] == "0.0.0.0"
        assert svc["environment"]["HUB_URL"] == "http://127.0.0.1:8080"


def test_compose_structural_check_passes() -> None:
    """The fallback check.sh uses where docker-compose is missing."""
    assert checks.compose_lint()


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert checks.interpolate("${SET} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $${SET}", env) == "x d d  ${SET}"
    with pytest.raises(checks.CheckError, match="EMPTY"):
        checks.interpolate("${EMPTY:?needed}", env)


# --- Prometheus and Grafana -----------------------------------------------------------------------------------

def test_prometheus_scrapes_every_hub_replica_and_loads_the_rules(hub_services: dict[str, Any]) -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "ocpi-hub")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8080" for name in hub_services}


def test_alerts_cover_the_required_conditions_with_real_metrics() -> None:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert rules["OcpiHubDown"]["expr"].strip() == 'up{job="ocpi-hub"} == 0'
    assert 'ocpi_hub_platforms{status="OFFLINE"}' in rules["OcpiHubPartnerOffline"]["expr"]
    assert rules["OcpiHubPartnerOffline"]["for"] == "5m"
    error = rules["OcpiHubErrorRateHigh"]
    assert 'outcome=~"error|hub_error|timeout|not_connected"' in error["expr"] and "> 0.05" in error["expr"]
    assert error["for"] == "10m"
    assert "max(ocpi_hub_queue_oldest_age_seconds) > 60" in rules["OcpiHubQueueAgeHigh"]["expr"]
    assert rules["OcpiHubQueueAgeHigh"]["for"] == "5m"
    assert "delta(ocpi_hub_dead_letters[15m])" in rules["OcpiHubDeadLettersGrowing"]["expr"]
    failing = rules["OcpiHubReceiverFailing"]
    assert "sum by (receiver)" in failing["expr"] and 'result!="ok"' in failing["expr"] and failing["for"] == "15m"
    exported = exported_metric_names()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        for metric in re.findall(r"\bocpi_hub_[a-z0-9_]+", rule["expr"]):
            assert metric in exported, f"{name}: {metric} is not exported by hub/metrics.py"


def test_grafana_provisions_the_datasource_and_the_dashboard_folder(compose: dict[str, Any]) -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert (ds["uid"], ds["url"]) == ("prometheus", "http://prometheus:9090")
    provider = yaml.safe_load((prov / "dashboards" / "ocpi-hub.yml").read_text())["providers"][0]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ocpi-hub.json").read_text())
    assert dashboard["uid"] == "ocpi-hub" and "placeholder" not in dashboard["tags"]
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p["targets"]]
    assert any("ocpi_hub_requests_total" in e for e in exprs)
    for metric in re.findall(r"\bocpi_hub_[a-z0-9_]+", " ".join(exprs)):
        assert metric in exported_metric_names()


DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ocpi-hub.json"
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                    "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data: rows (and panels nested in collapsed rows) unfolded, rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers left once strings, label matchers, ranges and
    grouping clauses are removed, other than function names (followed by '(') and keywords. Good enough for the
    expressions of our dashboard and rules; it is no PromQL parser."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = _GROUPING.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if not e[m.end():].lstrip().startswith("(") and m.group() not in _PROMQL_KEYWORDS:
            names.add(m.group())
    return names


def promql_labels(expr: str) -> set[str]:
    """Label names used in matchers ({name=~"..."}) and grouping clauses (by (a, b))."""
    labels = set(re.findall(r"[{,]\s*([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))
    for _, inner in _GROUPING.findall(expr):
        labels |= {x.strip() for x in inner.split(",") if x.strip()}
    return labels


def metric_labels() -> set[str]:
    """Every label hub/metrics.py defines, plus those Prometheus and histograms add."""
    labels = {"le", "job", "instance"}
    for value in vars(Metrics()).values():
        labels |= set(getattr(value, "_labelnames", ()))
    return labels


def test_promql_helpers_find_metrics_and_labels() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, module) (rate(ocpi_hub_request_duration_seconds_bucket'
            '{module=~"$module", x="a{b}"}[$__rate_interval]))) / on (job) group_left up > 1e3')
    assert promql_metrics(expr) == {"ocpi_hub_request_duration_seconds_bucket", "up"}
    assert promql_labels(expr) == {"le", "module", "x", "job"}


def test_dashboard_panels_query_metrics_the_hub_exports() -> None:
    """Every data panel has Prometheus targets, and each selects metrics and labels hub/metrics.py exports."""
    dashboard = json.loads(DASHBOARD.read_text())
    exported, labels = exported_metric_names() | {"up"}, metric_labels()  # up: Prometheus' own, per target
    panels = dashboard_panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, title
        assert panel["targets"], f"{title}: no targets"
        for target in panel["targets"]:
            metrics = promql_metrics(target["expr"])
            assert metrics, f"{title}: {target['expr']!r} selects no metric"
            assert metrics <= exported, f"{title}: {metrics - exported} not exported by hub/metrics.py"
            assert promql_labels(target["expr"]) <= labels, f"{title}: unknown label in {target['expr']!r}"
            assert target["datasource"]["uid"] == "prometheus", title
            for le in re.findall(r'le="([^"]*)"', target["expr"]):  # as prometheus_client writes bucket bounds
                assert le in {str(b) for b in LATENCY_BUCKETS}, f"{title}: no bucket le={le}"


def test_dashboard_covers_what_operators_look_at() -> None:
    exprs = " ".join(t["expr"] for p in dashboard_panels(json.loads(DASHBOARD.read_text())) for t in p["targets"])
    for metric in ("ocpi_hub_requests_total", "ocpi_hub_request_duration_seconds_bucket",
                   "ocpi_hub_receiver_duration_seconds_bucket", "ocpi_hub_queue_depth", "ocpi_hub_queue_inflight",
                   "ocpi_hub_queue_oldest_age_seconds", "ocpi_hub_dead_letters", "ocpi_hub_retries_total",
                   "ocpi_hub_platforms", "ocpi_hub_registrations_total", "ocpi_hub_receiver_results_total"):
        assert metric in exprs, f"no panel shows {metric}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert 'outcome=~"error|hub_error|timeout|not_connected"' in exprs  # the failure set of OcpiHubErrorRateHigh


def test_dashboard_layout_ids_and_variables_are_consistent() -> None:
    """What Grafana needs to provision it: unique ids, a 24-column grid without overlaps, defined variables,
    the provisioned datasource's uid."""
    dashboard = json.loads(DASHBOARD.read_text())
    ds_uid = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"][0]["uid"]
    assert dashboard["uid"] == "ocpi-hub" and dashboard["schemaVersion"] >= 36
    assert "placeholder" not in dashboard["tags"] and "placeholder" not in dashboard["description"].lower()
    everything = [*dashboard["panels"], *(p for r in dashboard["panels"] for p in r.get("panels", []))]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in everything:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for panel in dashboard_panels(dashboard):
        for target in panel["targets"]:
            used |= set(re.findall(r"\$\{?(\w+)", target["expr"]))
    assert {v for v in used if not v.startswith("__")} == defined
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == ds_uid
        query = var["query"]["query"]
        assert re.fullmatch(r"label_values\((.+), (\w+)\)", query), query
        assert re.fullmatch(r"label_values\((.+), (\w+)\)", query)[2] in metric_labels()  # type: ignore[index]


# --- settings and secrets -------------------------------------------------------------------------------------

def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = checks.read_env_file(checks.ENV_EXAMPLE, include_commented=True)
    hub_vars = {k for k in listed if k.startswith("HUB_")}
    fields = setting_vars()
    assert hub_vars - fields.keys() == set(), "HUB_* variables that hub/settings.py does not read"
    assert fields.keys() - hub_vars == set(), "settings missing from deploy/.env.example: add them there"


def test_env_example_documented_defaults_are_the_real_defaults() -> None:
    active = checks.read_env_file(checks.ENV_EXAMPLE)
    documented = checks.read_env_file(checks.ENV_EXAMPLE, include_commented=True)
    for var, info in setting_vars().items():
        if var in active or var in FIXED_BY_DEPLOYMENT:
            continue
        parsed = TypeAdapter(info.annotation).validate_python(documented[var])
        assert parsed == info.default, f"{var}: .env.example says {documented[var]}, the default is {info.default}"


def test_k8s_settings_are_real_and_secrets_are_in_the_secret() -> None:
    docs = k8s_docs()
    config = docs["ConfigMap/ocpi-hub-config"]["data"]
    secret = docs["Secret/ocpi-hub-secrets"]["stringData"]
    fields = setting_vars()
    assert set(config) | set(secret) <= fields.keys()
    assert set(secret) == {"HUB_ADMIN_TOKEN", "HUB_REDIS_URL", "HUB_MONGO_URL", "HUB_SECRET_KEYS", "HUB_METRICS_TOKEN"}
    assert not any(re.search(r"TOKEN|PASSWORD|SECRET", k) for k in config)
    assert not any(re.search(r"://[^/@\s]+:[^/@\s]+@", v) for v in config.values()), "credentials in ConfigMap"
    assert all(PLACEHOLDER in value for value in secret.values()), "the Secret template holds example values only"


_SECRETISH = re.compile(r"(TOKEN|PASSWORD|SECRET)[A-Z_]*\"?\s*[:=]\s*[\"']?([A-Za-z0-9_\-./+]{8,})")


def test_no_real_secret_in_deploy() -> None:
    env = checks.read_env_file(checks.ENV_EXAMPLE)
    assert env["HUB_ADMIN_TOKEN"] == PLACEHOLDER
    assert env["GRAFANA_ADMIN_PASSWORD"] == PLACEHOLDER
    operator_files = {DEPLOY / ".env", K8S / "secret.yaml"}  # git-ignored copies an operator may have here
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or path in operator_files:
            continue
        text = path.read_text(errors="replace")
        assert "PRIVATE KEY-----" not in text, path
        for match in _SECRETISH.finditer(text):
            assert match.group(2) == PLACEHOLDER, f"{path.relative_to(REPO)}: {match.group(0)!r}"


def test_operator_secret_files_are_git_ignored() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for rel in ("deploy/.env", "deploy/k8s/secret.yaml"):
        done = subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO, check=False)
        assert done.returncode == 0, f"{rel} must be git-ignored"


# --- Kubernetes -----------------------------------------------------------------------------------------------

def test_k8s_deployment_probes_resources_and_non_root(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (hub,) = pod["containers"]
    assert hub["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert hub["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert hub["args"] == ["serve", "--workers", "1"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= hub["resources"][kind].keys()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert hub["securityContext"]["allowPrivilegeEscalation"] is False
    assert hub["securityContext"]["capabilities"]["drop"] == ["ALL"]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(hub["ports"][0]["containerPort"]) == "8080"
    refs = {next(iter(e.values()))["name"] for e in hub["envFrom"]}
    assert refs == {"ocpi-hub-config", "ocpi-hub-secrets"}


def test_k8s_service_and_pdb_select_the_hub_pods(deployment: dict[str, Any]) -> None:
    docs = k8s_docs()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service/ocpi-hub"]
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = docs["PodDisruptionBudget/ocpi-hub"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kustomization_lists_existing_manifests_and_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert {"namespace.yaml", "configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"} <= set(resources)
    for resource in resources:
        # secret.yaml is the operator's copy of secret.example.yaml; the others are in the repository.
        assert (K8S / ("secret.example.yaml" if resource == "secret.yaml" else resource)).is_file(), resource
    namespaces = {d["metadata"].get("namespace") for d in k8s_docs().values() if d["kind"] != "Namespace"}
    assert namespaces == {kustomization["namespace"]} == {"ocpi-hub"}


# --- the image ------------------------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    return list(checks.dockerfile_instructions())


def dockerfile_uid() -> int:
    users = [rest for word, rest in dockerfile() if word == "USER"]
    return int(users[-1].split(":")[0])


def test_dockerfile_is_a_slim_non_root_image_running_ocpi_hub_serve() -> None:
    steps = dockerfile()
    bases = [rest for word, rest in steps if word == "FROM"]
    assert all(re.match(r"python:\$\{PYTHON_VERSION\}-slim", b) for b in bases)
    version = next(rest for word, rest in steps if word == "ARG" and rest.startswith("PYTHON_VERSION="))
    assert tuple(int(x) for x in version.split("=")[1].split(".")) >= (3, 11)
    assert dockerfile_uid() > 0
    last = {word: rest for word, rest in steps}  # the final stage's instructions win
    assert json.loads(last["ENTRYPOINT"]) == ["ocpi-hub"]
    assert json.loads(last["CMD"]) == ["serve"]
    assert last["EXPOSE"] == "8080"
    assert "HUB_HOST=0.0.0.0" in last["ENV"]
    assert any(word == "RUN" and "pip install --no-cache-dir ." in rest for word, rest in steps)
    health = checks.healthcheck_cmd()
    assert health[:2] == ["python", "-c"] and "/healthz" in health[2]


def test_dockerfile_copies_only_what_the_context_sends() -> None:
    sources = [s for srcs, _ in checks.build_stage_copies() for s in srcs]
    assert sorted(s.rstrip("/") for s in sources) == ["README.md", "hub", "pyproject.toml", "routing"]
    for source in sources:
        assert (REPO / source).exists(), source
        assert checks.dockerignore_allows(source), f"{source} is filtered out by Dockerfile.dockerignore"
    assert not checks.dockerignore_allows(".venv")
    assert not checks.dockerignore_allows("tests")


# --- deploy/check.sh ------------------------------------------------------------------------------------------

def run_check(*parts: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEPLOY_CHECK_NO_APT": "1", "PYTHON_WITH_YAML": sys.executable}
    return subprocess.run(["bash", str(DEPLOY / "check.sh"), *parts], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_check_sh_fast_parts() -> None:
    """YAML, compose config (docker-compose or the Python fallback), kustomize/promtool/haproxy where present."""
    done = run_check("yaml", "compose", "kustomize", "promtool", "haproxy", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 0 failed," in done.stdout
    assert "ok: yaml" in done.stdout and "ok: compose" in done.stdout


@pytest.mark.skipif(os.environ.get("HUB_TEST_DEPLOY_INSTALL") != "1",
                    reason="slow (clean venv + pip install from PyPI): set HUB_TEST_DEPLOY_INSTALL=1")
def test_check_sh_installs_and_serves_like_the_image() -> None:
    done = run_check("image", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy by the Dockerfile's HEALTHCHECK command" in done.stdout
