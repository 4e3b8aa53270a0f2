#!/usr/bin/env python3
"""Check the Helm chart offline: lint, render, validate, and refuse bad values.

Run through `make helm-check`, which installs the two tools this needs into the
project's virtualenv: helm-python-sdk (Helm v4's own chart library, so lint,
rendering and values.schema.json validation are Helm's, not an imitation) and
kubernetes-validate (the Kubernetes OpenAPI schemas, shipped in the package).
Nothing here reaches a network or a cluster.

For the default values and for every `ci/*-values.yaml` of the chart:
  1. `helm lint --strict` finds no warning and no error;
  2. the chart renders, and every manifest validates with
     `kubernetes-validate --strict` against one Kubernetes version (a kind it
     has no schema for, i.e. the ServiceMonitor CRD, is checked against the
     small strict schema below);
  3. the workers keep the chart's promises: a grace period above the drain
     timeout, credentials only from Secrets, health probes, a non-root
     read-only container, a PodDisruptionBudget per pool.
Then values a worker could not run (a pool with `slots: 0`, ...) must be
refused by the schema or the templates. Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate
from kubernetes_validate.version import __version__ as kubernetes_validate_version

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "perseid-jobs"
KUBE_VERSION = "1.33.0"
RELEASE = "perseid-jobs"
NAMESPACE = "perseid"

SECRET_ENV = ("PERSEID_REDIS_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
HEALTH_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}

# Values that must never render: (what, values over the defaults, a fragment of
# the expected error). The first is the one the chart's brief names.
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("a pool with slots: 0", {"pools": [{"name": "zero", "slots": 0}]}, "/pools/0/slots"),
    ("slots as a string", {"pools": [{"name": "s", "slots": "64"}]}, "/pools/0/slots"),
    ("a pool without slots", {"pools": [{"name": "noslots"}]}, "slots"),
    ("a misspelt pool key", {"pools": [{"name": "typo", "slots": 8, "replica": 2}]}, "replica"),
    ("an upper-case pool name", {"pools": [{"name": "Heavy", "slots": 8}]}, "/pools/0/name"),
    ("no pool at all", {"pools": []}, "/pools"),
    (
        "two pools with one name",
        {"pools": [{"name": "a", "slots": 1}, {"name": "a", "slots": 2}]},
        "used by two pools",
    ),
    ("no Redis Secret", {"redis": {"existingSecret": ""}}, "/redis/existingSecret"),
    (
        "a dashboard with no token Secret",
        {"dashboard": {"enabled": True, "token": {"existingSecret": ""}}},
        "dashboard.token.existingSecret",
    ),
    ("a misspelt dashboard key", {"dashboard": {"enable": True}}, "enable"),
    (
        "the Redis URL in clear",
        {
            "worker": {
                "env": [{"name": "PERSEID_REDIS_URL", "value": "redis://:PASSWORD@redis:6379"}]
            }
        },
        "/worker/env/0",
    ),
    ("a negative drain timeout", {"poolDefaults": {"drainTimeoutSeconds": -1}}, "/poolDefaults"),
    ("an unknown spool type", {"poolDefaults": {"spool": {"type": "nfs"}}}, "/poolDefaults"),
    ("a bucket URL of no known scheme", {"bucket": {"url": "gs://logs"}}, "/bucket/url"),
    (
        "autoscaling with min above max",
        {
            "pools": [
                {
                    "name": "hpa",
                    "slots": 4,
                    "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
                }
            ]
        },
        "minReplicas (5) is above maxReplicas (2)",
    ),
    (
        "a claim-backed spool shared by two workers",
        {
            "pools": [
                {
                    "name": "pvc",
                    "slots": 4,
                    "replicas": 2,
                    "spool": {"type": "persistentVolumeClaim"},
                }
            ]
        },
        "a spool must belong to one worker",
    ),
    ("jobs from a ConfigMap with no jobs", {"jobs": {"source": "configMap"}}, "jobs.files"),
]

_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# kubernetes-validate knows only built-in kinds. This is the subset of the
# Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1) that the
# chart emits, strict like the rest: an unknown or misspelt field fails.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": _STRING_MAP,
                        "matchExpressions": {"type": "array"},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}


@dataclass
class Report:
    """What the check found; any failure makes the run fail."""

    checks: int = 0
    failures: list[str] = field(default_factory=list)

    def ok(self, line: str) -> None:
        self.checks += 1
        print(f"  ok    {line}")

    def fail(self, line: str, details: list[str] | None = None) -> None:
        self.checks += 1
        self.failures.append(line)
        print(f"  FAIL  {line}")
        for detail in details or []:
            print(f"          {detail}")


def main() -> int:
    """Run every check; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kube-version",
        default=KUBE_VERSION,
        help=f"Kubernetes version of the schemas (default {KUBE_VERSION})",
    )
    args = parser.parse_args()
    kube_version: str = args.kube_version.removeprefix("v")

    started = time.monotonic()
    report = Report()
    with helm.Chart.load(CHART) as chart:
        print(
            f"helm-check: chart {chart.name} {chart.version} with Helm SDK "
            f"{helm.helm_sdk_version()}, Kubernetes {kube_version} schemas "
            f"(kubernetes-validate {kubernetes_validate_version}, strict)"
        )
        scenarios: list[tuple[str, dict[str, Any] | None]] = [("default values", None)]
        for path in sorted((CHART / "ci").glob("*-values.yaml")):
            values = helm.values_from_yaml(path.read_text())
            scenarios.append((str(path.relative_to(CHART)), values))
        for label, values in scenarios:
            check_lint(report, label, values, kube_version)
            check_render(report, chart, label, values, kube_version)
        for what, values, expected in BAD_VALUES:
            check_refused(report, chart, what, values, expected)
        check_lint_refuses_zero_slots(report, kube_version)

    elapsed = time.monotonic() - started
    if report.failures:
        print(
            f"helm-check: FAILED {len(report.failures)} of {report.checks} checks ({elapsed:.1f}s)"
        )
        return 1
    print(f"helm-check: passed {report.checks} checks ({elapsed:.1f}s)")
    return 0


def check_lint(
    report: Report, label: str, values: dict[str, Any] | None, kube_version: str
) -> None:
    """`helm lint --strict`: any warning or error fails."""
    result = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )
    problems = [
        f"{m['path']}: {squash(m['error'])}" for m in result["messages"] if m["severity"] >= 2
    ]
    if not problems:
        problems = [squash(error) for error in result["errors"]]
    if problems:
        report.fail(f"lint {label}: " + "; ".join(problems))
    else:
        report.ok(f"lint {label}")


def check_render(
    report: Report, chart: helm.Chart, label: str, values: dict[str, Any] | None, kube_version: str
) -> None:
    """Render, validate every object, then check the chart's own promises."""
    try:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as error:
        report.fail(f"render {label}: {squash(str(error))}")
        return
    objects: list[dict[str, Any]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            if "perseid-jobs schedule hello" not in text:
                report.fail(f"render {label}: NOTES.txt does not show how to schedule a task")
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    kinds = Counter(obj["kind"] for obj in objects)
    summary = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(kinds.items()))

    invalid = [problem for obj in objects for problem in validate(obj, kube_version)]
    promises = list(broken_promises(objects))
    if invalid or promises:
        report.fail(f"render {label}: {len(invalid + promises)} problem(s)", invalid + promises)
    else:
        report.ok(f"render {label}: {len(objects)} objects valid ({summary})")


def validate(obj: dict[str, Any], kube_version: str) -> Iterator[str]:
    """Problems of one object against the Kubernetes (or CRD) schema."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd_schema = CRD_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if crd_schema is not None:
        for error in jsonschema.Draft202012Validator(crd_schema).iter_errors(obj):
            path = ".".join(str(p) for p in error.absolute_path)
            yield f"{name}: {path}: {error.message}"
        return
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        yield f"{name}: {path}: {error.message}"
    except (
        kubernetes_validate.SchemaNotFoundError,
        kubernetes_validate.VersionNotSupportedError,
    ) as error:
        yield f"{name}: {error.message}"


def broken_promises(objects: list[dict[str, Any]]) -> Iterator[str]:
    """What the chart promises of every worker Deployment, checked on the output."""
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for deployment in deployments:
        if _component(deployment) == "dashboard":
            yield from dashboard_promises(deployment)
    for deployment in (d for d in deployments if _component(d) == "worker"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        (worker,) = (c for c in pod["containers"] if c["name"] == "worker")
        env = {e["name"]: e for e in worker.get("env", [])}

        drain = env.get("PERSEID_DRAIN_TIMEOUT", {}).get("value", "")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not drain.endswith("s") or not grace > int(drain[:-1]):
            yield f"{name}: terminationGracePeriodSeconds {grace} is not above drain {drain!r}"
        for secret in SECRET_ENV:
            if secret in env and "secretKeyRef" not in env[secret].get("valueFrom", {}):
                yield f"{name}: {secret} does not come from a Secret"
        if "PERSEID_REDIS_URL" not in env:
            yield f"{name}: no PERSEID_REDIS_URL"
        for probe, path in HEALTH_PATHS.items():
            if worker.get(probe, {}).get("httpGet", {}).get("path") != path:
                yield f"{name}: {probe} does not GET {path}"
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            yield f"{name}: the pod may run as root"
        if worker.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            yield f"{name}: the root filesystem is writable"
        selector = deployment["spec"]["selector"]["matchLabels"]
        if not any(b["spec"]["selector"]["matchLabels"] == selector for b in budgets):
            yield f"{name}: no PodDisruptionBudget selects its pods"


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def dashboard_promises(deployment: dict[str, Any]) -> Iterator[str]:
    """The dashboard's: secrets from Secrets, a token unless --no-auth, non-root, read-only."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    (box,) = (c for c in pod["containers"] if c["name"] == "dashboard")
    env = {e["name"]: e for e in box.get("env", [])}
    for secret in ("PERSEID_REDIS_URL", "PERSEID_DASHBOARD_TOKEN"):
        if secret in env and "secretKeyRef" not in env[secret].get("valueFrom", {}):
            yield f"{name}: {secret} does not come from a Secret"
    if "PERSEID_DASHBOARD_TOKEN" not in env and "--no-auth" not in box["args"]:
        yield f"{name}: no token and no --no-auth: the dashboard would refuse to start"
    if box.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        yield f"{name}: readinessProbe does not GET /healthz"
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        yield f"{name}: the pod may run as root"
    if box.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        yield f"{name}: the root filesystem is writable"


def check_refused(
    report: Report, chart: helm.Chart, what: str, values: dict[str, Any], expected: str
) -> None:
    """Values a worker could not run must not render."""
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except (helm.HelmValuesError, helm.HelmRenderError) as error:
        message = squash(str(error))
        if expected in message:
            report.ok(f"refuses {what}: {shorten(message, expected)}")
        else:
            report.fail(f"refuses {what}, but not for the expected reason: {message}")
        return
    report.fail(f"accepts {what}")


def check_lint_refuses_zero_slots(report: Report, kube_version: str) -> None:
    """`helm lint` (not only install) reports a pool with slots: 0 as an error."""
    values = {"pools": [{"name": "zero", "slots": 0}]}
    result = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )
    errors = [m for m in result["messages"] if m["severity"] >= 3]
    if any("/pools/0/slots" in m["error"] for m in errors):
        report.ok("lint reports a pool with slots: 0 as an error")
    else:
        report.fail(f"lint accepts a pool with slots: 0: {result['messages']}")


def squash(message: str) -> str:
    """A multi-line Helm message on one line."""
    return " ".join(message.split())


def shorten(message: str, expected: str, width: int = 100) -> str:
    """The part of a long Helm error that names the offending value."""
    found = message.find(expected)
    at = message.rfind("at '", 0, found + 1)
    start = at if at >= 0 and found - at < 40 else found
    excerpt = message[start : start + width]
    return excerpt + ("..." if start + width < len(message) else "")


if __name__ == "__main__":
    sys.exit(main())
