"""Checks on posterior draws whose pass/fail does not hinge on a noisy statistic or on the answer's width.

- ``assert_width``: the posterior sd of every parameter against an outside scale (the observed-information
  standard errors at the MAP, which a posterior of any width centred on the MAP would not match);
- ``assert_chains_agree``: the difference of two chains' means in units of its Monte Carlo standard error,
  which is about standard normal when the chains sample the same distribution. It replaces R-hat < 1.01-1.02
  on two short chains, whose sampling spread around 1 is of the order of the threshold itself.
"""

import itertools

import arviz_stats as azs
import numpy as np
import xarray as xr

import mixflow


def assert_width(tree, method, rtol=0.2, names=None, expected=None):
    """Posterior sd of each parameter (ddof=1) within ``rtol`` of the observed-information standard errors."""
    expected = mixflow.standard_errors(tree) if expected is None else expected
    posterior = tree[f"{method}/posterior"].to_dataset()
    for name in names or expected.data_vars:
        reference = np.asarray(expected[name].values, dtype=float)
        sd = posterior[name].std(("chain", "draw"), ddof=1).values
        keep = reference > 0  # structural zeros (e.g. a 1-D weight's redundant entry) are skipped
        assert np.isfinite(reference).all(), (name, reference)
        np.testing.assert_allclose(sd[keep], reference[keep], rtol=rtol, err_msg=f"{method} posterior sd of {name}")


def assert_chains_agree(tree, method="mcmc", z_max=4.5):
    """Every pair of chains has means within ``z_max`` Monte Carlo standard errors of each other.

    With a few dozen parameters and a standard normal statistic, |z| > 4.5 by chance has probability below
    1e-3; chains in different modes or one chain stuck give |z| in the tens.
    """
    posterior = tree[f"{method}/posterior"].to_dataset()
    chains = posterior.sizes["chain"]
    assert chains >= 2
    means = posterior.mean("draw")
    errors = [azs.mcse(posterior.isel(chain=[c]), sample_dims=["chain", "draw"], method="mean")
              for c in range(chains)]
    worst = 0.0
    for a, b in itertools.combinations(range(chains), 2):
        for name in posterior.data_vars:
            gap = (means[name].isel(chain=a) - means[name].isel(chain=b)).values
            se = np.sqrt(errors[a][name].values ** 2 + errors[b][name].values ** 2)
            z = np.abs(gap[se > 0]) / se[se > 0]
            worst = max(worst, float(z.max(initial=0.0)))
    assert worst < z_max, f"chains disagree: max |mean difference| / MCSE = {worst:.2f}"


def dataset_of(values: dict, like: xr.Dataset) -> xr.Dataset:
    """A dataset with ``like``'s dims and coords holding ``values`` (name -> array)."""
    return xr.Dataset({name: (like[name].dims, np.asarray(v)) for name, v in values.items()}, coords=like.coords)
