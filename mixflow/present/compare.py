"""Point estimates against posteriors: one table of every parameter, component and method.

The methods of a container are the EM point estimate (``/em/estimate``, with standard errors from the
observed information), the EM bootstrap (``/em/bootstrap``), NUTS (``/mcmc/posterior``) and ADVI
(``/advi/posterior``); the ones a container lacks are simply left out. Draws are summarised the ArviZ
way: mean, sd, and the credible interval of ``rcParams["stats.ci_kind"]`` at ``rcParams["stats.ci_prob"]``
(an equal-tailed 89% interval by default); the EM point gets a Wald interval at the same probability.
"""

import json

import numpy as np
import pandas as pd
import xarray as xr
from arviz_base import rcParams
from scipy import stats as st

from mixflow.container.layout import EM_ESTIMATE, METHODS, OBSERVED_DATA
from mixflow.container.read import (
    available_methods,
    check_tree,
    frequency_weights,
    mean_responsibilities,
    method_draws,
    parameter_names,
)
from mixflow.errors import InputError
from mixflow.families.scaling import scaled_std
from mixflow.wording import BOOTSTRAP_REMEDY

__all__ = [
    "CONFIDENT_RESPONSIBILITY",
    "METHOD_LABELS",
    "STATISTICS",
    "adjusted_rand_index",
    "compare",
    "compare_dataset",
    "element_columns",
    "label_agreement",
    "with_unit_column",
]

#: How each method is named in tables, legends and the report.
METHOD_LABELS = {"em": "EM", "bootstrap": "EM bootstrap", "mcmc": "MCMC (NUTS)", "stacked": "MCMC stacked over modes",
                 "advi": "ADVI", "advi_stacked": "ADVI stacked over modes"}
#: The statistics of :func:`compare_dataset`, in order.
STATISTICS = ("estimate", "sd", "lower", "upper", "em_inside", "distance_to_mcmc", "sd_ratio_to_mcmc")
_SAMPLE_DIMS = ("chain", "draw")
#: A method places a row confidently when the row's most probable component under it has at least this
#: responsibility: posterior odds of 3 to 1 for that component against all the others together, where Kass and
#: Raftery's (1995) scale starts "positive" evidence (odds below 3 are "not worth more than a bare mention"). Where
#: two methods' hard labels of a row differ, the second gives the first's component at most 1/2 (its own is at least
#: as probable); so a row one method places confidently has responsibilities that differ by at least 0.25 between
#: them, a disagreement of the methods, while rows neither places confidently lie on the boundary between
#: overlapping components, where a small change of the estimates moves the argmax (the clustering's own ambiguity).
CONFIDENT_RESPONSIBILITY = 0.75
#: Rows named where hard labels differ confidently.
_EXAMPLES = 5


def _pairs(counts: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # frequency weights beyond 1e154: infinitely many pairs, an undefined index
        return float((counts * (counts - 1.0)).sum() / 2.0)


def adjusted_rand_index(labels_a, labels_b, weights=None) -> float:
    """Adjusted Rand index of two hard partitions (Hubert & Arabie 1985), with numpy only.

    Parameters
    ----------
    labels_a, labels_b : array-like of shape (n_obs,)
        Cluster labels of the same observations; the label values themselves do not matter.
    weights : array-like of shape (n_obs,), optional
        Frequency weights: an observation of weight w counts as w identical observations.

    Returns
    -------
    float
        1 for identical partitions (up to relabelling), about 0 for independent ones. Equal to
        ``sklearn.metrics.adjusted_rand_score``; 1.0 in the degenerate case where both partitions are
        a single cluster or all singletons.

    """
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.ndim != 1 or labels_a.shape != labels_b.shape:
        raise InputError(f"labels_b: expected the shape of labels_a {labels_a.shape}, got {labels_b.shape}")
    weights = np.ones(labels_a.size) if weights is None else np.asarray(weights, dtype=float)
    _, rows = np.unique(labels_a, return_inverse=True)
    _, cols = np.unique(labels_b, return_inverse=True)
    table = np.zeros((rows.max(initial=-1) + 1, cols.max(initial=-1) + 1))
    np.add.at(table, (rows, cols), weights)
    index = _pairs(table)
    pairs_a, pairs_b, total = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0)), _pairs(np.array([table.sum()]))
    expected = pairs_a * pairs_b / total if total > 0 else 0.0
    maximum = (pairs_a + pairs_b) / 2.0
    if np.isclose(maximum, expected, rtol=1e-12, atol=1e-12):
        return 1.0
    return float((index - expected) / (maximum - expected))


def label_agreement(tree) -> pd.DataFrame:
    """Adjusted Rand index of the hard labels of every pair of methods that have responsibilities.

    Returns
    -------
    pandas.DataFrame
        Square, symmetric, indexed and labelled by method (``em``, ``mcmc``, ``advi``), ones on the
        diagonal; empty when fewer than one method has responsibilities. ``attrs["clusters"]``: the number of
        components each method's hard labels use (against a labelling of one cluster the index is 0 whatever
        the other labelling is, and 1 between two such labellings). ``attrs["differences"]``: for each pair
        ``{a: {b: ...}}`` (a before b), the rows whose labels differ, by :func:`label_differences`.

    """
    check_tree(tree)
    resp = {m: mean_responsibilities(tree, m) for m in available_methods(tree)}
    resp = {m: value for m, value in resp.items() if value is not None}
    labels = {m: value.argmax(axis=1) for m, value in resp.items()}
    weights = frequency_weights(tree)
    names = list(labels)
    table = np.array([[adjusted_rand_index(labels[a], labels[b], weights) for b in names] for a in names])
    frame = pd.DataFrame(table.reshape(len(names), len(names)), index=pd.Index(names, name="method"),
                         columns=pd.Index(names, name="method_"))
    counted_rows = slice(None) if weights is None else np.asarray(weights) > 0
    frame.attrs["clusters"] = {m: int(np.unique(np.asarray(labels[m])[counted_rows]).size) for m in names}
    obs = tree[OBSERVED_DATA]["obs"].values
    frame.attrs["differences"] = {a: {b: label_differences(resp[a], resp[b], weights, obs, (a, b))
                                      for b in names[i + 1:]} for i, a in enumerate(names)}
    return frame


def label_differences(resp_a, resp_b, weights=None, obs=None, names=("a", "b")) -> dict:
    """Where two methods' hard labels differ, and how confidently either places those rows.

    The second method's components are first matched to the first's (the relabelling under which most rows, by
    weight, share a label: the adjusted Rand index does not depend on the labels' names, and neither does this).

    Parameters
    ----------
    resp_a, resp_b : array-like of shape (n_obs, n_components)
        Each row's responsibilities under the two methods.
    weights : array-like of shape (n_obs,), optional
        Frequency weights: a row of weight w counts w times, rows of weight 0 not at all.
    obs : array-like of shape (n_obs,), optional
        The rows' names, for ``examples``; their positions when not given.
    names : tuple of two str
        The methods' names, the keys of ``confident_by`` and ``top``.

    Returns
    -------
    dict
        ``rows`` (how many rows' labels differ, by weight), ``total`` (rows, by weight), ``confident`` (rows of
        those that at least one method places confidently: its most probable component's responsibility at
        least :data:`CONFIDENT_RESPONSIBILITY`), ``confident_by`` ({method: rows it places confidently of those
        that differ}), ``top`` ({method: the largest most-probable responsibility it gives a row that differs},
        0 when none does), ``examples`` (the names of up to 5 rows placed confidently that differ, the most
        confident first) and ``weighted`` (whether counts are by frequency weight). Plain numbers and strings.

    """
    from scipy.optimize import linear_sum_assignment

    resp_a, resp_b = np.asarray(resp_a, dtype=float), np.asarray(resp_b, dtype=float)
    weight = np.ones(resp_a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    obs = np.arange(resp_a.shape[0]) if obs is None else np.asarray(obs)
    labels_a, labels_b = resp_a.argmax(axis=1), resp_b.argmax(axis=1)
    size = max(resp_a.shape[1], resp_b.shape[1])
    shared = np.zeros((size, size))
    np.add.at(shared, (labels_a, labels_b), weight)
    matched_a, matched_b = linear_sum_assignment(shared, maximize=True)
    as_a = np.empty(size, dtype=int)
    as_a[matched_b] = matched_a
    counted = weight > 0
    differ = (labels_a != as_a[labels_b]) & counted
    top_a, top_b = resp_a.max(axis=1), resp_b.max(axis=1)
    sure_a, sure_b = differ & (top_a >= CONFIDENT_RESPONSIBILITY), differ & (top_b >= CONFIDENT_RESPONSIBILITY)
    confident = sure_a | sure_b
    surest = np.maximum(top_a, top_b)
    order = np.flatnonzero(confident)[np.argsort(-surest[confident], kind="stable")]
    a, b = names
    return {"rows": float(weight[differ].sum()), "total": float(weight[counted].sum()),
            "confident": float(weight[confident].sum()),
            "confident_by": {a: float(weight[sure_a].sum()), b: float(weight[sure_b].sum())},
            "top": {a: float(top_a[differ].max(initial=0.0)), b: float(top_b[differ].max(initial=0.0))},
            "examples": [str(name) for name in obs[order[:_EXAMPLES]]], "weighted": weights is not None}


def _check_probability(ci_prob, ci_kind):
    ci_prob = rcParams["stats.ci_prob"] if ci_prob is None else ci_prob
    ci_kind = rcParams["stats.ci_kind"] if ci_kind is None else ci_kind
    if isinstance(ci_prob, bool) or not isinstance(ci_prob, int | float) or not 0 < ci_prob < 1:
        raise InputError(f"ci_prob: expected a probability strictly between 0 and 1, got {ci_prob!r}")
    if ci_kind not in ("eti", "hdi"):
        raise InputError(f"ci_kind: expected 'eti' or 'hdi', got {ci_kind!r}")
    return float(ci_prob), ci_kind


def _draw_summary(draws: xr.Dataset, ci_prob: float, ci_kind: str) -> dict:
    """Mean, sd (ddof=1) and interval of every variable over chain and draw, NaN draws skipped."""
    import arviz_stats

    interval = getattr(arviz_stats, ci_kind)(draws, prob=ci_prob, dim=list(_SAMPLE_DIMS), skipna=True)
    return {name: {"estimate": da.mean(_SAMPLE_DIMS, skipna=True),
                   "sd": scaled_std(da, _SAMPLE_DIMS, ddof=1, skipna=True),
                   "lower": interval[name].sel(ci_bound="lower", drop=True),
                   "upper": interval[name].sel(ci_bound="upper", drop=True)}
            for name, da in draws.data_vars.items()}


def _em_summary(tree, names, ci_prob: float, standard_errors) -> tuple[dict, str, str]:
    """The EM point with its standard errors and Wald interval at ``ci_prob``.

    Also why the errors are undefined and what gives them, or ''.
    """
    from mixflow.analysis.information import standard_errors as observed_information_se

    estimate = tree[EM_ESTIMATE].to_dataset()
    if standard_errors is None:
        standard_errors = observed_information_se(tree, warn=False)
    z = st.norm.ppf(0.5 + ci_prob / 2)
    out = {}
    for name in names:
        point = estimate[name]
        sd = standard_errors[name] if standard_errors is not None and name in standard_errors else xr.full_like(
            point, np.nan)
        lower, upper = _wald_interval(name, point, sd, z)
        out[name] = {"estimate": point, "sd": sd, "lower": lower, "upper": upper}
    attrs = getattr(standard_errors, "attrs", {})
    undefined = str(attrs.get("undefined", ""))
    return out, undefined, _remedy(undefined, attrs.get("remedy"))


def _remedy(undefined: str, given) -> str:
    """What gives undefined errors: ``given`` (the errors' own word), else the bootstrap; nothing where defined."""
    return str(given or (BOOTSTRAP_REMEDY if undefined else ""))


def _wald_interval(name: str, point: xr.DataArray, sd: xr.DataArray, z: float) -> tuple[xr.DataArray, xr.DataArray]:
    """The Wald interval ``point -+ z sd`` on the scale where the parameter is unbounded, mapped back.

    Rates, variances and covariances' diagonals on the log scale (the standard error of the log is sd / point),
    weights on the logit scale (sd / (w (1 - w))): the interval stays inside the parameter's range, where one
    on the natural scale reaches below zero for a small rate or weight. Other entries on the natural scale.
    """
    natural = (point - z * sd, point + z * sd)
    if name == "weights":  # a weight of 1 (one component) has sd 0: its interval is the point
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a wide interval reaches 0 or 1
            logit, spread = np.log(point / (1 - point)), z * sd / (point * (1 - point))
            lower, upper = 1 / (1 + np.exp(-(logit - spread))), 1 / (1 + np.exp(-(logit + spread)))
        return lower.where(sd != 0, point), upper.where(sd != 0, point)
    if name in ("rate", "variance", "covariance"):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # an error far above the point
            factor = np.exp(z * sd / point)
        lower, upper = point / factor, point * factor
        if name != "covariance":
            return lower, upper
        diagonal = xr.DataArray(np.eye(point.shape[-1], dtype=bool), dims=point.dims[-2:])
        return lower.where(diagonal, natural[0]), upper.where(diagonal, natural[1])
    return natural


def compare_dataset(tree, *, ci_prob: float | None = None, ci_kind: str | None = None,
                    standard_errors=None) -> xr.Dataset:
    """The comparison as an xarray Dataset: one variable per parameter.

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result with any of ``/em`` (estimate, bootstrap), ``/mcmc`` and ``/advi``.
    ci_prob : float, optional
        Probability of the intervals; ``rcParams["stats.ci_prob"]`` (0.89) by default.
    ci_kind : {"eti", "hdi"}, optional
        Kind of credible interval; ``rcParams["stats.ci_kind"]`` ("eti") by default.
    standard_errors : xarray.Dataset, optional
        Standard errors of the EM estimate; computed from the observed information when not given
        (NaN where it is not well defined).

    Returns
    -------
    xarray.Dataset
        Each parameter (``weights``, ``mu``, ...) with dims ``(method, statistic, *parameter dims)``.
        Statistics: ``estimate`` (EM point, else the mean of the draws), ``sd`` (EM: standard error),
        ``lower``/``upper`` (EM: Wald interval, on the log scale for rates, variances and covariances'
        diagonals and the logit scale for weights, so that it stays inside their range), ``em_inside`` (1 if
        the EM point lies in the method's interval, 0 if not, NaN for EM itself), ``distance_to_mcmc``
        ((estimate - NUTS mean) / NUTS sd) and ``sd_ratio_to_mcmc`` (sd / NUTS sd), NaN where not applicable.
        The variable ``adjusted_rand_index`` (method, method_) holds the agreement of hard labels.
        ``attrs["em_standard_errors_undefined"]`` says why the EM errors are NaN, where they are not defined, and
        ``attrs["em_standard_errors_remedy"]`` what gives them.

    """
    check_tree(tree)
    ci_prob, ci_kind = _check_probability(ci_prob, ci_kind)
    methods = available_methods(tree)
    if not methods:
        raise InputError("tree: expected at least one of /em/estimate, /em/bootstrap, /mcmc/posterior, "
                         "/advi/posterior, got none")
    names = parameter_names(tree)
    summaries, undefined, remedy = {}, "", ""
    for method in methods:
        if method == "em":
            summaries[method], undefined, remedy = _em_summary(tree, names, ci_prob, standard_errors)
        else:
            summaries[method] = _draw_summary(method_draws(tree, method), ci_prob, ci_kind)
    variables = {name: _stack_statistics(summaries, name, "em" in summaries) for name in names
                 if all(name in summary for summary in summaries.values())}
    dataset = xr.Dataset(variables)
    dataset["adjusted_rand_index"] = _agreement_array(tree, methods)
    dataset.attrs.update(ci_prob=ci_prob, ci_kind=ci_kind, em_method=tree["em"].attrs.get("method", "")
                         if "em" in tree.children else "", em_standard_errors_undefined=undefined,
                         em_standard_errors_remedy=remedy)
    return dataset


def _stack_statistics(summaries: dict, name: str, has_em: bool) -> xr.DataArray:
    mcmc = summaries.get("mcmc", {}).get(name)
    em_point = summaries["em"][name]["estimate"] if has_em else None
    per_method = []
    for method, summary in summaries.items():
        values = dict(summary[name])
        nan = xr.full_like(values["estimate"], np.nan, dtype=float)
        inside = None
        if has_em and method != "em":
            defined = values["lower"].notnull() & values["upper"].notnull() & em_point.notnull()
            inside = ((em_point >= values["lower"]) & (em_point <= values["upper"])).astype(float).where(defined)
        values["em_inside"] = inside if inside is not None else nan
        applies = mcmc is not None and method != "mcmc"
        values["distance_to_mcmc"] = (values["estimate"] - mcmc["estimate"]) / mcmc["sd"] if applies else nan
        values["sd_ratio_to_mcmc"] = values["sd"] / mcmc["sd"] if applies else nan
        stacked = xr.concat([values[s].astype(float).reset_coords(drop=True) for s in STATISTICS], dim="statistic")
        per_method.append(stacked.assign_coords(statistic=np.array(STATISTICS)))
    return xr.concat(per_method, dim="method").assign_coords(method=np.array(list(summaries))).rename(name)


def _agreement_array(tree, methods) -> xr.DataArray:
    agreement = label_agreement(tree)
    table = agreement.reindex(index=methods, columns=methods)
    return xr.DataArray(table.to_numpy(dtype=float), dims=("method", "method_"),
                        coords={"method": methods, "method_": methods},
                        attrs={"clusters": json.dumps(agreement.attrs["clusters"]),
                               "differences": json.dumps(agreement.attrs["differences"])})


def compare(tree, *, ci_prob: float | None = None, ci_kind: str | None = None,
            standard_errors=None) -> pd.DataFrame:
    """Compare the EM estimate, its bootstrap, NUTS and ADVI in one tidy table.

    Parameters
    ----------
    tree : xarray.DataTree
        A mixflow result; methods it lacks are left out.
    ci_prob, ci_kind, standard_errors
        See :func:`compare_dataset`.

    Returns
    -------
    pandas.DataFrame
        One row per parameter element and method, with columns ``parameter``, the element columns of
        :func:`element_columns` (``component``, any family-specific dim such as a regression's
        ``coefficient``, then ``feature`` and ``feature_``; missing where a parameter lacks the dim;
        symmetric matrices keep their upper triangle), ``method`` and the statistics of
        :func:`compare_dataset` (``em_inside`` as a nullable boolean). ``attrs`` holds ``ci_prob``,
        ``ci_kind``, ``element_columns``, ``label_agreement`` (the adjusted Rand index of each pair of methods,
        ``{method: {method_: index}}``, as plain dicts so that ``pd.concat`` of such tables works; as a table:
        :func:`agreement_of`, or :func:`label_agreement` of the tree), ``label_agreement_clusters`` and
        ``label_differences`` (its ``attrs["differences"]``).

    Examples
    --------
    >>> table = mixflow.compare(tree)
    >>> table.query("method == 'advi'")[["parameter", "component", "distance_to_mcmc"]]

    """
    dataset = compare_dataset(tree, ci_prob=ci_prob, ci_kind=ci_kind, standard_errors=standard_errors)
    return dataset_to_frame(dataset)


#: Element columns every table has (missing where a parameter lacks the dim), in this order after ``component``.
_STANDARD_ELEMENT_DIMS = ("feature", "feature_")


def element_columns(table_or_dataset) -> list[str]:
    """The columns that name one parameter element: ``component``, then every other parameter dim.

    Derived from the parameters' own dims, so any family's extra dims (``coefficient`` of a regression,
    ``feature``/``feature_`` of a Gaussian, ...) are kept: ``component``, the dims that are not standard
    in the order the parameters first use them, then ``feature`` and ``feature_`` where a parameter has them.

    Parameters
    ----------
    table_or_dataset : pandas.DataFrame or xarray.Dataset
        The table of :func:`compare` (its ``attrs["element_columns"]``) or the Dataset of
        :func:`compare_dataset`.

    """
    if isinstance(table_or_dataset, pd.DataFrame):
        return list(table_or_dataset.attrs["element_columns"])
    extra, used = [], set()
    for name, da in table_or_dataset.data_vars.items():
        if name == "adjusted_rand_index":
            continue
        used.update(da.dims)
        extra += [d for d in da.dims if d not in ("method", "statistic", "component", *_STANDARD_ELEMENT_DIMS,
                                                  *extra)]
    return ["component", *extra, *(d for d in _STANDARD_ELEMENT_DIMS if d in used)]


def dataset_to_frame(dataset: xr.Dataset) -> pd.DataFrame:
    """Flatten :func:`compare_dataset` (or one with other statistics) into the tidy table of :func:`compare`."""
    elements = element_columns(dataset)
    frames = []
    for name, da in dataset.data_vars.items():
        if name == "adjusted_rand_index":
            continue
        frame = da.to_dataset(dim="statistic").to_dataframe().reset_index()
        frame.insert(0, "parameter", name)
        frames.append(_upper_triangle(frame, dataset))
    table = pd.concat(frames, ignore_index=True)
    for column in elements:
        if column not in table:
            table[column] = pd.NA
        elif column != "component":
            table[column] = table[column].astype(object).where(table[column].notna(), pd.NA)
    table["component"] = table["component"].astype("Int64")
    table["method"] = pd.Categorical(table["method"], categories=[m for m in METHODS if m in set(table["method"])],
                                     ordered=True)
    if "em_inside" in table:
        table["em_inside"] = table["em_inside"].map(lambda v: pd.NA if np.isnan(v) else bool(v)).astype("boolean")
    keys = ["parameter", *elements]
    statistics = [str(s) for s in dataset["statistic"].values]
    table = table[[*keys, "method", *statistics]].sort_values([*keys, "method"], key=_parameter_order(dataset),
                                                               kind="stable").reset_index(drop=True)
    table.attrs.update(ci_prob=dataset.attrs["ci_prob"], ci_kind=dataset.attrs["ci_kind"],
                       em_method=dataset.attrs["em_method"], element_columns=elements,
                       em_standard_errors_undefined=dataset.attrs.get("em_standard_errors_undefined", ""),
                       em_standard_errors_remedy=_remedy(dataset.attrs.get("em_standard_errors_undefined", ""),
                                                         dataset.attrs.get("em_standard_errors_remedy")),
                       **_agreement_attrs(dataset["adjusted_rand_index"]))
    return table


def _agreement_attrs(index: xr.DataArray) -> dict:
    """The label agreement as a table's ``attrs`` hold it: plain dicts, which pandas can compare.

    ``pd.concat`` keeps the inputs' ``attrs`` when they are equal, which it asks of every value: a DataFrame there
    cannot answer, and the concatenation failed.
    """
    frame = index.to_pandas().dropna(how="all").dropna(axis=1, how="all")
    return {"label_agreement": {str(a): {str(b): float(frame.loc[a, b]) for b in frame.columns} for a in frame.index},
            "label_agreement_clusters": json.loads(index.attrs.get("clusters", "{}")),
            "label_differences": json.loads(index.attrs.get("differences", "{}"))}


def agreement_of(table: pd.DataFrame) -> pd.DataFrame:
    """The adjusted Rand index table a :func:`compare` table holds in ``attrs``, as :func:`label_agreement` gives it.

    Square, indexed and labelled by method; ``attrs["clusters"]``: the components each method's hard labels use;
    ``attrs["differences"]``: where they differ (:func:`label_differences`).
    """
    pairs = table.attrs.get("label_agreement", {})
    names = list(pairs)
    frame = pd.DataFrame([[pairs[a][b] for b in pairs[a]] for a in names], index=pd.Index(names, name="method"),
                         columns=pd.Index(list(pairs[names[0]]) if names else [], name="method_"), dtype=float)
    frame.attrs["clusters"] = dict(table.attrs.get("label_agreement_clusters", {}))
    frame.attrs["differences"] = dict(table.attrs.get("label_differences", {}))
    return frame


def _upper_triangle(frame: pd.DataFrame, dataset: xr.Dataset) -> pd.DataFrame:
    """Keep the upper triangle of every symmetric pair of dims ``(d, d_)`` (e.g. covariances)."""
    for column in [c for c in frame.columns if c.endswith("_") and c[:-1] in frame.columns]:
        order = {value: i for i, value in enumerate(dataset[column[:-1]].values)}
        keep = frame[column[:-1]].map(order) <= frame[column].map(order)
        frame = frame[keep.to_numpy()]
    return frame


def _parameter_order(dataset: xr.Dataset):
    names = {name: i for i, name in enumerate(dataset.data_vars)}
    positions = {dim: {value: i for i, value in enumerate(dataset[dim].values)} for dim in dataset.dims
                 if dim in dataset.coords and dim not in ("method", "statistic", "method_")}

    def key(column: pd.Series) -> pd.Series:
        if column.name == "parameter":
            return column.map(names)
        if column.name == "method":
            return column.map({m: i for i, m in enumerate(METHODS)}).astype(int)
        if column.name in positions and column.name != "component":
            return column.map(positions[column.name])
        return column

    return key


def with_unit_column(table: pd.DataFrame, tree) -> pd.DataFrame:
    """A :func:`compare` table with a ``unit`` column before ``method`` (the same table when no units are recorded)."""
    from mixflow.present.units import ParameterUnits

    units = ParameterUnits(tree)
    if not units.data:
        return table
    elements = element_columns(table)
    column = [units(row["parameter"], {c: row[c] for c in elements if pd.notna(row[c])}) for _, row in table.iterrows()]
    out = table.copy()
    out.insert(out.columns.get_loc("method"), "unit", column)
    return out
