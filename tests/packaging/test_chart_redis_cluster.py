"""The chart's optional Redis as a Redis Cluster (``redis.cluster.enabled``): rendered,
every manifest validated offline, the sizes and flags the values ask for, bad sizes
refused by the values schema. (No container runs here: the Job's script is checked for
what it runs, the joining itself by tests/rcluster with real servers.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.chart import Helm, HelmError, by_kind, one
from tests.packaging.test_chart_render import validate_manifest

ON = ["redis.enabled=true", "redis.cluster.enabled=true", "redis.persistence.enabled=true"]


@pytest.mark.parametrize(("replicas", "pods"), [(1, 6), (2, 9)])
def test_a_cluster_renders_valid_and_sized(helm: Helm, replicas: int, pods: int) -> None:
    manifests = helm.template(sets=[*ON, f"redis.cluster.replicasPerPrimary={replicas}"])
    crds = by_kind(manifests, "CustomResourceDefinition")
    for manifest in manifests:
        validate_manifest(manifest, crds)
    redis = one(manifests, "StatefulSet")
    assert redis["spec"]["replicas"] == pods
    assert redis["spec"]["serviceName"].endswith("-redis-nodes")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--cluster-enabled") + 1] == "yes"
    assert args[args.index("--cluster-announce-ip") + 1] == "$(POD_IP)"
    assert args[args.index("--cluster-node-timeout") + 1] == "5000"
    assert {p["name"] for p in container["ports"]} == {"redis", "bus"}
    headless = [
        s for s in by_kind(manifests, "Service") if s["metadata"]["name"].endswith("-nodes")
    ]
    assert headless[0]["spec"]["clusterIP"] == "None"
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True
    job = one(manifests, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"seq 0 {pods - 1}" in script
    assert f"--cluster-replicas {replicas} --cluster-yes" in script


def test_one_redis_stays_the_default(helm: Helm) -> None:
    manifests = helm.template(sets=["redis.enabled=true"])
    assert one(manifests, "StatefulSet")["spec"]["replicas"] == 1
    assert not by_kind(manifests, "Job")


@pytest.mark.parametrize("bad", ["primaries: 2", "replicasPerPrimary: -1", "nodeTimeoutMs: 10"])
def test_bad_cluster_sizes_are_refused(helm: Helm, bad: str, tmp_path: Path) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(f"redis:\n  enabled: true\n  cluster:\n    enabled: true\n    {bad}\n")
    with pytest.raises(HelmError, match="values don't meet the specifications of the schema"):
        helm.template(values=[values])
