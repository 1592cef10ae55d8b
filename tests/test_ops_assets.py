"""The operator's assets under ops/ name only metrics the daemons export: every metric in the Prometheus
alert rules and in the Grafana dashboard is scraped from a real root, witness and gateway."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_harness import Plant

OPS = Path(__file__).resolve().parent.parent / "ops"
RULES = OPS / "prometheus" / "edgeroot-alerts.yml"
SCRAPE = OPS / "prometheus" / "scrape-edgeroot.yml"
DASHBOARD = OPS / "grafana" / "edgeroot.json"

PROMETHEUS_OWN = {"up"}
"""Series Prometheus writes itself for every target (not in any /metrics)."""
TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus attaches to every scraped series."""

# PromQL's operators, aggregations and functions: every other word in an expression is a metric name.
# An unknown word fails the test (a new function belongs here), so a metric can never hide as one.
PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "atan2",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile",
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute",
    "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
    "last_over_time", "present_over_time",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_WORD = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label values, ranges and label lists dropped)."""
    bare = _STRING.sub(" ", _GRAFANA_VARIABLE.sub(" ", expr))
    bare = _LABEL_LIST.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", bare)))
    return {word for word in _WORD.findall(bare) if word not in PROMQL_WORDS}


def matcher_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for every label a selector of ``expr`` matches on."""
    bare = _STRING.sub('""', _GRAFANA_VARIABLE.sub(" ", expr))
    return {(name, label) for name, body in _SELECTOR.findall(bare) for label in _MATCHER_LABEL.findall(body)}


def rule_expressions() -> dict[str, str]:
    """Alert (or recording rule) name -> its expression, from the rules file."""
    rules = yaml.safe_load(RULES.read_text())
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row keeps its panels inside it


def dashboard_expressions() -> dict[str, str]:
    """Panel title and query letter -> expression, from the dashboard (rows walked, collapsed or not)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    }


def series_names(exposition: str) -> dict[str, set[str] | None]:
    """Series name -> the label names seen on its samples (``None`` before its first sample), for
    everything a /metrics page exports.

    A family with no sample yet (a labelled counter nothing has counted) still declares its type, so its
    series names follow from prometheus_client's rules: a counter ``x`` is ``x_total`` and ``x_created``;
    a histogram ``x`` is ``x_bucket``, ``x_sum``, ``x_count`` and ``x_created``.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    found: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(family.type, ("",)):
            found.setdefault(family.name + suffix, None)
        for sample in family.samples:
            found[sample.name] = (found.get(sample.name) or set(TARGET_LABELS)) | set(sample.labels)
    return found


Exported = dict[str, set[str] | None]


@pytest.fixture
def exported(plant: Plant) -> Exported:
    """Every series the root, its witness and a running gateway export, with their label names."""
    plant.start()
    found: Exported = {name: set(TARGET_LABELS) for name in PROMETHEUS_OWN}
    for url in (plant.root.url, plant.root.witness_url, plant.http):
        answer = httpx.get(f"{url}/metrics", timeout=10)
        assert answer.status_code == 200, f"{url}/metrics: {answer.status_code}"
        for name, labels in series_names(answer.text).items():
            found[name] = labels if found.get(name) is None else (found[name] or set()) | (labels or set())
    return found


def unknown_labels(expr: str, exported: Exported) -> list[str]:
    """``metric{label}`` for each label ``expr`` matches on that the metric's samples do not carry.

    Checkable once a series has a sample (the exposition lists no labels for a family nothing has counted
    yet); in the test the root and the witness have cosigned and the gateway has chained blocks.
    """
    return sorted(
        f"{name}{{{label}}}"
        for name, label in matcher_labels(expr)
        if (labels := exported.get(name)) is not None and label not in labels
    )


def test_metric_names_are_read_from_promql_as_prometheus_would() -> None:
    """The expression reader finds the metrics, and only them: label values, ranges, functions and
    grouping labels are not mistaken for metric names (so a misspelt metric cannot slip through)."""
    expr = (
        'sum by (instance, reason) (rate(edgeroot_gateway_readings_rejected_total{reason!="up"}[10m]))'
        " > 3 * sum without (state) (delta(edgeroot_gateway_blocks[6h] offset 10m)) and on (job)"
        ' up{job="edgeroot-gateway"} == 0 or rate(typo_total[$__rate_interval]) > 0.5e3'
    )
    assert metric_names(expr) == {
        "edgeroot_gateway_readings_rejected_total", "edgeroot_gateway_blocks", "up", "typo_total"
    }  # fmt: skip
    assert matcher_labels(expr) == {("edgeroot_gateway_readings_rejected_total", "reason"), ("up", "job")}


def test_every_metric_in_the_alert_rules_and_the_dashboard_is_exported(exported: Exported) -> None:
    """Every metric the alert rules and the Grafana dashboard name is served by a real root, witness or
    gateway /metrics, and every label they match on is one those series carry."""
    expressions = {f"rule {k}": v for k, v in rule_expressions().items()}
    expressions |= {f"panel {k}": v for k, v in dashboard_expressions().items()}
    assert len(expressions) > 30
    named = {name for expr in expressions.values() for name in metric_names(expr)}
    assert len(named) > 20, named
    unknown = {
        where: sorted(metric_names(expr) - exported.keys())
        for where, expr in expressions.items()
        if metric_names(expr) - exported.keys()
    }
    assert unknown == {}, f"named but not exported: {unknown}"
    wrong_label = {where: unknown_labels(expr, exported) for where, expr in expressions.items()}
    wrong_label = {where: labels for where, labels in wrong_label.items() if labels}
    assert wrong_label == {}, f"matched on labels the series do not carry: {wrong_label}"


def test_rule_jobs_are_the_jobs_of_the_shipped_scrape_configuration() -> None:
    """The `up{job=...}` alerts select the job names the shipped scrape configuration defines."""
    jobs = {job["job_name"] for job in yaml.safe_load(SCRAPE.read_text())["scrape_configs"]}
    selected = {job for expr in rule_expressions().values() for job in re.findall(r'job="([^"]+)"', expr)}
    assert selected == jobs == {"edgeroot-root", "edgeroot-witness", "edgeroot-gateway"}


def test_the_alert_rules_pass_promtool() -> None:
    """`promtool check rules` accepts the rules file (PromQL syntax, durations, templates)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); the YAML is still checked")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_says_what_is_wrong_and_how_bad() -> None:
    """Each alert has a severity and a summary and description for the person paged."""
    rules = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(alerts) > 15
    lacking = [
        rule["alert"]
        for rule in alerts
        if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}
        or not {"summary", "description"} <= rule.get("annotations", {}).keys()
    ]
    assert lacking == []


GW = {"instance": "gw1:8480", "job": "edgeroot-gateway"}
ROOT = {"instance": "root1:8470", "job": "edgeroot-root"}
WITNESS = {"instance": "w1:8471", "job": "edgeroot-witness"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inside}}}", "values": values}


def _fires(at: str, alert: str, *label_sets: dict[str, str]) -> dict[str, Any]:
    """The alert fires at ``at`` once for each label set (none: it does not fire)."""
    expected = [{"exp_labels": labels} for labels in label_sets]
    return {"eval_time": at, "alertname": alert, "exp_alerts": expected}


# Each case: input series (promtool's expanding notation: "0+1x60" counts up by one a minute for an
# hour) and when each alert must fire, with which labels, or stay silent.
ALERT_CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, Any]]]] = {
    "store full fires after a minute": (
        [_series("edgeroot_gateway_store_full", GW, "0 0 1x10")],
        [_fires("2m", "EdgerootGatewayStoreFull"),
         _fires("4m", "EdgerootGatewayStoreFull", GW | {"severity": "critical"})],
    ),
    "gateway down": (
        [_series("up", GW, "1 1 0x10")],
        [_fires("3m", "EdgerootGatewayDown"),
         _fires("8m", "EdgerootGatewayDown", GW | {"severity": "critical"})],
    ),
    "a growing backlog of unanchored blocks fires, a steady one does not": (
        [
            _series("edgeroot_gateway_blocks", GW | {"state": "chained"}, "0+1x120"),
            _series("edgeroot_gateway_blocks", GW | {"state": "submitted"}, "2x120"),
            _series("edgeroot_gateway_blocks", GW | {"state": "anchored"}, "0+5x120"),
            _series("edgeroot_gateway_blocks", GW | {"instance": "gw2:8480", "state": "chained"}, "7x120"),
        ],
        [_fires("20m", "EdgerootGatewayUnanchoredBacklogGrowing"),
         _fires("90m", "EdgerootGatewayUnanchoredBacklogGrowing", GW | {"severity": "warning"})],
    ),
    "rejects for one reason spiking fire, the steady reason does not": (
        [
            _series("edgeroot_gateway_readings_rejected_total", GW | {"reason": "replay"}, "0+30x400"),
            _series("edgeroot_gateway_readings_rejected_total", GW | {"reason": "bad-signature"},
                    "0+1x380 380+120x30"),
        ],
        [_fires("380m", "EdgerootGatewayRejectsSpiking"),
         _fires("400m", "EdgerootGatewayRejectsSpiking",
                {"instance": "gw1:8480", "reason": "bad-signature", "severity": "warning"})],
    ),
    "writes without a new checkpoint fire; writes with one do not": (
        [
            _series("edgeroot_root_writes_accepted_total", ROOT, "0+10x60"),
            _series("edgeroot_root_blocks_accepted_total", ROOT, "0x60"),
            _series("edgeroot_root_published_tree_size", ROOT, "5+10x20 205x40"),
        ],
        [_fires("20m", "EdgerootRootNotPublishing"),
         _fires("55m", "EdgerootRootNotPublishing", ROOT | {"severity": "critical"})],
    ),
    "no sequencer among a job's processes fires; one standby beside a sequencer does not": (
        [
            _series("edgeroot_root_sequencing", ROOT, "1x5 0x10"),
            _series("edgeroot_root_sequencing", ROOT | {"instance": "root2:8470"}, "0x15"),
        ],
        [_fires("4m", "EdgerootRootNoSequencer"),
         _fires("14m", "EdgerootRootNoSequencer", {"job": "edgeroot-root", "severity": "critical"})],
    ),
    "a witness that stops cosigning": (
        [_series("edgeroot_root_witness_failing_checkpoints", ROOT | {"witness": "w.example"}, "0 1 2 3x10")],
        [_fires("4m", "EdgerootRootWitnessFailing"),
         _fires("9m", "EdgerootRootWitnessFailing", ROOT | {"witness": "w.example", "severity": "warning"})],
    ),
    "a served prefix without its delegation fires; a delegated one, or one fixed in time, does not": (
        [
            _series("edgeroot_root_prefix_delegated", ROOT | {"prefix": "88.200.7"}, "0x30"),
            _series("edgeroot_root_prefix_delegated", ROOT | {"prefix": "88.200.5"}, "1x30"),
            _series("edgeroot_root_prefix_delegated", ROOT | {"prefix": "88.200.8"}, "0x5 1x25"),
        ],
        [_fires("10m", "EdgerootRootPrefixNotDelegated"),
         _fires("25m", "EdgerootRootPrefixNotDelegated",
                ROOT | {"prefix": "88.200.7", "severity": "warning"})],
    ),
    "witness refusals fire; 409 catch-up answers do not": (
        [
            _series("edgeroot_witness_answers_total", WITNESS | {"status": "409"}, "0+5x40"),
            _series("edgeroot_witness_answers_total", WITNESS | {"status": "403"}, "0x10 0+2x30"),
        ],
        [_fires("9m", "EdgerootWitnessRefusing"),
         _fires("35m", "EdgerootWitnessRefusing",
                {"instance": "w1:8471", "status": "403", "severity": "warning"})],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ALERT_CASES))
def test_alert_fires_when_it_should_and_only_then(case: str, tmp_path: Path) -> None:
    """`promtool test rules` on series an operator would see: each alert fires on its condition, with the
    labels the page shows, and stays silent on the normal case beside it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    # Annotations are templates of the labels (checked by `promtool check rules`); the logic under test is
    # the expression, its `for` and its labels, so the copy under test drops them.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    series, checks = ALERT_CASES[case]
    unit = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(unit))
    command = [promtool, "test", "rules", "test.yml"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
