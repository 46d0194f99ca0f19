"""Adding a family: a mixture of exponentials declared in this module, registered once, fitted by EM and
through the workflow runner (the walkthrough of the README's "Adding a family")."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import optimize, special

import mixflow
from mixflow.data import Data
from mixflow.families import sampling
from mixflow.families.base import MixtureModel, Prepared, register_family


@dataclass(frozen=True)
class _FlatPrior:
    """No prior beyond flat Dirichlet weights: this toy family offers maximum likelihood only."""

    concentration: np.ndarray

    def to_dict(self) -> dict:
        return {"concentration": self.concentration.tolist()}


@register_family("toy_exponential")
@dataclass(frozen=True)
class ExponentialMixture(MixtureModel):
    """A mixture of exponential distributions with means ``scale`` (component)."""

    n_components: int
    prior: str = "default"

    def to_dict(self) -> dict:
        return {"n_components": self.n_components}

    @classmethod
    def from_dict(cls, spec: dict) -> "ExponentialMixture":
        return cls(spec["n_components"])

    def parameter_dims(self, features=None) -> dict:
        return {"weights": ("component",), "scale": ("component",)}

    def n_parameters(self, n_features: int, n_components: int | None = None) -> int:
        return 2 * (n_components or self.n_components) - 1

    def sort_key(self, params: dict) -> np.ndarray:
        return params["scale"]

    def prepare(self, data) -> Prepared:
        if data.n_features != 1 or (data.values < 0).any():
            raise ValueError("data: expected one column of non-negative values")
        return Prepared({"y": data.values[:, 0]}, data.frequency, {})

    def resolve_prior(self, prepared: Prepared) -> _FlatPrior:
        return _FlatPrior(np.ones(self.n_components))

    def init_points(self, prepared: Prepared) -> np.ndarray:
        return prepared.arrays["y"][:, None]

    def e_step_constants(self, params: dict, prepared: Prepared) -> dict:
        return {"scale": np.asarray(params["scale"], dtype=float)}

    def log_density(self, constants: dict, chunk: Prepared):
        scale = constants["scale"]
        return -np.log(scale) - chunk.arrays["y"][:, None] / scale, None

    def chunk_features(self, chunk: Prepared) -> None:
        return None

    def chunk_width(self, n_features: int) -> int:
        return 3 * self.n_components

    def statistics(self, weighted_resp: np.ndarray, chunk: Prepared, features) -> dict:
        return {"total": chunk.arrays["y"] @ weighted_resp}

    def m_step(self, counts, stats: dict, prepared: Prepared, prior):
        return {"scale": stats["total"] / counts}, []

    def log_prior(self, params: dict, prior) -> float:
        return 0.0

    def check_parameters(self, params: dict, n_features: int, name: str = "init") -> dict:
        return {key: np.array(value, dtype=float) for key, value in params.items()}

    def simulate_data(self, params: dict, data: Data, rng: np.random.Generator) -> Data:
        n = sampling.n_units(data)
        values = rng.exponential(np.asarray(params["scale"])[sampling.component_labels(params, n, rng)])
        return Data(values=values[:, None], features=data.features, obs=np.arange(n), weights=None)


def _sample(n=3000, seed=4):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    return np.where(labels, rng.exponential(1.0, n), rng.exponential(10.0, n))


def _reference_maximum(y: np.ndarray) -> float:
    """The maximum log-likelihood by a direct numerical optimisation (scipy), from several starts."""
    def negative(theta):
        w = special.expit(theta[0])
        scales = np.exp(theta[1:])
        density = w * np.exp(-y / scales[0]) / scales[0] + (1 - w) * np.exp(-y / scales[1]) / scales[1]
        return -np.log(density).sum()

    results = [optimize.minimize(negative, start, method="Nelder-Mead",
                                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
               for start in ([0.0, 0.0, 2.0], [-1.0, -0.5, 2.5], [1.0, 0.5, 1.5])]
    return -min(result.fun for result in results)


def test_a_family_registered_from_outside_fits_by_em_to_the_maximum():
    y = _sample()
    tree = mixflow.fit(ExponentialMixture(2), y, method="em", random_seed=1, tol=1e-12, max_iter=5000)
    assert tree["em"].attrs["log_likelihood"] == pytest.approx(_reference_maximum(y), abs=1e-5)
    scale = tree["em/estimate"]["scale"].values
    np.testing.assert_allclose(scale, [1.0, 10.0], rtol=0.15)  # the truth, within sampling error at n=3000
    assert mixflow.model_from_json(tree.attrs["model"]) == ExponentialMixture(2)


def test_a_family_registered_from_outside_runs_in_a_workflow(tmp_path):
    from mixflow.workflow.run import run_workflow

    np.savetxt(tmp_path / "waits.csv", _sample(), header="wait", comments="")
    (tmp_path / "flow.toml").write_text(
        'name = "waits"\nseed = 3\n[data]\npath = "waits.csv"\ncolumns = ["wait"]\n'
        '[[models]]\nfamily = "toy_exponential"\nn_components = 2\n'
        '[methods.em]\nn_init = 2\n'
        '[output]\nfigures = false\nreport = false\n')
    written = run_workflow(tmp_path / "flow.toml", tmp_path / "out", quiet=True)
    container = tmp_path / "out" / "toy_exponential-k2.nc"
    assert container in written
    tree = mixflow.load(container)
    np.testing.assert_allclose(tree["em/estimate"]["scale"].values, [1.0, 10.0], rtol=0.15)


def test_a_workflow_names_the_registered_families(tmp_path):
    from mixflow.workflow.config import WorkflowError, read_workflow

    (tmp_path / "flow.toml").write_text('name = "x"\nseed = 1\n[data]\ndataset = "faithful"\n'
                                        '[[models]]\nfamily = "exponential"\nn_components = 2\n[methods.em]\n')
    with pytest.raises(WorkflowError, match=r"family: expected one of \[.*'toy_exponential'.*\], got 'exponential'"):
        read_workflow(tmp_path / "flow.toml")
