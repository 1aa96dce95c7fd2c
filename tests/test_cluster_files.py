"""Cluster files: every YAML parses, launcher configs validate against Ray's own schema, KubeRay
manifests carry the fields KubeRay requires."""

import json
import os

import jsonschema
import pytest
import ray.autoscaler
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"


def test_every_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_matches_ray_schema(name):
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    cfg = yaml.safe_load((CLUSTER / "launcher" / name).read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert any("gpu" in t for t in types), "a GPU worker node type"
    assert any("pip install" in c and "constraints.txt" in c for c in cfg["setup_commands"])


def _pod_containers(template):
    return template["spec"]["containers"]


def _check_cluster_spec(spec):
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head
    for c in _pod_containers(head["template"]):
        assert c["image"].startswith("rayproject/ray:")
        assert "limits" in c["resources"]
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        for c in _pod_containers(group["template"]):
            assert c["image"] and "nvidia.com/gpu" in c["resources"]["limits"]


def test_kuberay_raycluster():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_metatest():
    doc = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    assert doc["spec"]["entrypoint"].startswith("python pipelines/metatest.py")
    assert "working_dir" in yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    _check_cluster_spec(doc["spec"]["rayClusterSpec"])


def test_runtime_env_file():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert env["env_vars"]["RAY_AUTH_MODE"] == "disabled"
    assert "/.venv/" in env["excludes"]
    # excludes are gitignore-style: an unanchored "data/" would drop the package folder fewray/data
    from ray._private.thirdparty.pathspec import PathSpec  # what Ray matches working_dir excludes with

    spec = PathSpec.from_lines("gitwildmatch", env["excludes"])
    assert not spec.match_file("fewray/data/catalog.py")
    assert spec.match_file("data/omniglot/train.parquet")
