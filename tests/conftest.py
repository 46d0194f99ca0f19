import os
import signal

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings
from scipy import stats
from threadpoolctl import threadpool_limits

import mixflow


@pytest.fixture(scope="session")
def faithful():
    return mixflow.load_dataset("faithful")


@pytest.fixture(scope="session")
def mirrored():
    """Data symmetric about 0 (three clusters, the middle one shared): K=2 has two mirror-image modes.

    Either outer cluster is a component of its own while the other component covers the middle and the
    other outer cluster; NUTS does not cross from one to the other, and by symmetry the true stacking
    weights are 1/2 each.
    """
    rng = np.random.default_rng(1)
    half = np.concatenate([rng.normal(6, 1, 60), rng.normal(0, 1, 30)])
    return np.concatenate([half, -half])


@pytest.fixture(scope="session")
def two_groups_map_fit():
    """A MAP fit of K=2 to two 1-D groups (70 at -3, 50 at 2): (model, data, estimate, tree)."""
    from mixflow.data import validate_data

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 1, 70), rng.normal(2, 0.7, 50)])
    model = mixflow.GaussianMixture(2)
    tree = mixflow.fit(model, x, method="map", random_seed=0)
    return model, validate_data(x), {k: v.values for k, v in tree["em/estimate"].data_vars.items()}, tree


# Brownlee's stack loss data (1960; R's datasets::stackloss, public domain): 21 days of a plant's operation
STACKLOSS = pd.DataFrame({
    "loss": [42, 37, 37, 28, 18, 18, 19, 20, 15, 14, 14, 13, 11, 12, 8, 7, 8, 8, 9, 15, 15],
    "air": [80, 80, 75, 62, 62, 62, 62, 62, 58, 58, 58, 58, 58, 58, 50, 50, 50, 50, 50, 56, 70],
    "water": [27, 27, 25, 24, 22, 23, 24, 24, 23, 18, 18, 17, 18, 19, 18, 18, 19, 19, 20, 20, 20],
    "acid": [89, 88, 90, 87, 87, 87, 93, 93, 87, 80, 89, 88, 82, 93, 89, 86, 72, 79, 80, 82, 91]})


def simulate_gaussian_mixture(n, weights, means, covariances, seed):
    """Draw n points from a Gaussian mixture with known truth; returns (x, labels)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(weights), size=n, p=weights)
    x = np.array([rng.multivariate_normal(means[k], covariances[k]) for k in labels])
    return x, labels


def naive_log_likelihood(x, weights, means, covariances, frequency=None):
    """Reference log-likelihood written directly with scipy.stats."""
    density = sum(w * stats.multivariate_normal(m, c).pdf(x).reshape(-1)
                  for w, m, c in zip(weights, means, covariances, strict=True))
    frequency = np.ones(len(x)) if frequency is None else frequency
    return float(frequency @ np.log(density))


def full_covariances(covariance_type, estimate, d):
    """Any covariance type's estimate as (K, d, d) matrices."""
    k = estimate["weights"].size
    if covariance_type == "full":
        return estimate["covariance"].values
    if covariance_type == "tied":
        return np.broadcast_to(estimate["covariance"].values, (k, d, d))
    if covariance_type == "diag":
        return np.array([np.diag(v) for v in estimate["variance"].values])
    return np.array([v * np.eye(d) for v in estimate["variance"].values])


# Hypothesis: random examples locally, the same examples on every CI run (derandomised) so a failure there
# is reproducible and a pass is not luck.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# The suite runs on pytest-xdist's workers with ``--dist loadgroup`` (see the Makefile): the tests of one module
# run in one worker, so its module-scoped fixtures (real fits) are computed once, except the modules listed
# here, whose tests share nothing costly and are spread over the workers one by one.
_SPREAD_OVER_WORKERS = {"test_shipped_workflows.py", "test_workflow.py", "test_faults.py"}


def pytest_configure(config):
    """On pytest-xdist's workers, one BLAS and OpenMP thread per worker; SIGINT's default action everywhere.

    ``-n auto`` already runs a worker on every core; BLAS threads on top of that wait for cores held by the other
    workers (OpenBLAS's idle threads spin), which made tests that call BLAS many times up to ten times slower.
    Tests of BLAS threading itself ask for more with the ``blas_threads`` fixture.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        threadpool_limits(1)
    # Ctrl-C's default action in this process and the processes it starts (tests of interrupts send SIGINT to
    # them): a shell starts a background job (`make test &`) with SIGINT ignored, which children inherit
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def no_report_plots(monkeypatch):
    """Reports without their figures, for tests that read the rest of the page (a workflow draws them once, for the
    figure files and the report alike: none are drawn)."""
    monkeypatch.setattr("mixflow.present.report.page._plots_section", lambda *args: ("", []))
    monkeypatch.setattr("mixflow.present.report.page.render_plots", lambda *args, **kwargs: {})


@pytest.fixture
def blas_threads():
    """Two BLAS threads for one test (whatever the worker's limit), for tests of what BLAS's threads do."""
    with threadpool_limits(2, user_api="blas"):
        yield 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Each module's tests in one xdist group, but those of ``_SPREAD_OVER_WORKERS``.

    Before pytest-xdist's own hook, which reads the marks to name each test's group (after it, a group marked here
    was never seen and every test was a group of its own: a module's fixtures were computed on both workers).
    """
    for item in items:
        if item.path.name not in _SPREAD_OVER_WORKERS:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
