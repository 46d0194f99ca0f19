"""Workflow files: a TOML declaration of data, models, methods, seed and outputs, validated up front.

Every error names the file, the line, the key, what was expected and what came, and is raised before any
fitting starts (the data are loaded and checked against the models too).
"""

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mixflow.datasets import DESCRIPTIONS, load_dataset
from mixflow.families.base import family_class, family_names

__all__ = ["Workflow", "WorkflowError", "read_workflow"]

METHOD_OPTIONS = {
    "em": {"map": bool, "n_init": int, "init": str, "tol": float, "max_iter": int, "trim": float, "accelerate": str},
    "mcmc": {"draws": int, "tune": int, "chains": int, "sampler": str, "target_accept": float, "cores": int},
    "advi": {"variant": str, "n": int, "draws": int, "minibatch_size": int, "learning_rate": float},
    "bootstrap": {"n_replicates": int, "kind": str},
}
ACCELERATE_CHOICES = ("squarem", "none")  # [methods.em] accelerate: "none" is fit's accelerate=None
TOP_KEYS = {"name", "title", "seed", "data", "models", "methods", "output"}
DATA_KEYS = {"dataset", "path", "columns", "weights", "labels"}
MODEL_KEYS = ("family", "n_components", "prior")  # and each family's own workflow_keys
OUTPUT_KEYS = {"container", "table", "figures", "report"}


class WorkflowError(ValueError):
    """A workflow file that cannot run, with the file position and key at fault."""


@dataclass(frozen=True)
class ModelSpec:
    """One model declaration of a workflow; ``ks`` holds one K or a range of K."""

    family: str
    ks: tuple
    prior: object = "default"
    options: tuple = ()  # (key, value) pairs of the family's workflow_keys

    @property
    def label(self) -> str:
        k = f"k{self.ks[0]}" if len(self.ks) == 1 else f"k{self.ks[0]}-{self.ks[-1]}"
        tag = family_class(self.family).label_tag(dict(self.options))
        return f"{self.family}-{tag}-{k}" if tag else f"{self.family}-{k}"

    def model(self, k: int):
        """The declared model with ``k`` components."""
        return family_class(self.family).from_options(k, prior=self.prior, **dict(self.options))


@dataclass(frozen=True)
class Workflow:
    """A validated workflow: what to fit, how, with which seed, and what to write."""

    path: Path
    name: str
    title: str
    seed: int
    data: pd.DataFrame
    data_name: str
    columns: tuple
    weights: str | None
    labels: str | None
    models: tuple
    methods: dict
    output: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        """SHA-256 of the resolved configuration (recorded in every container)."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()


class _Locator:
    """Find the line of a key (inside a section) in the TOML text, for error messages."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def line_of(self, key: str, section: str | None = None, occurrence: int = 0) -> int:
        start = 0
        if section:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$")
            hits = [i for i, line in enumerate(self.lines) if header.match(line)]
            if hits:
                start = hits[min(occurrence, len(hits) - 1)]
                if key == "":
                    return start + 1
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start, len(self.lines)):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1

    def error(self, where: str, message: str, key: str, section: str | None = None, occurrence: int = 0):
        line = self.line_of(key, section, occurrence)
        return WorkflowError(f"{self.path}:{line}: {where}: {message}")


def _expect(value, kind, where, key, loc, section=None, occurrence=0):
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise loc.error(where, f"expected {kind.__name__}, got {type(value).__name__} {value!r}", key,
                        section, occurrence)
    return value


def _unknown(table: dict, allowed: set, where: str, loc: _Locator, section=None, occurrence=0):
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise loc.error(where, f"unknown key(s) {unknown}; expected some of {sorted(allowed)}", unknown[0],
                        section, occurrence)


def _read_data(table: dict, base: Path, loc: _Locator):
    _unknown(table, DATA_KEYS, "[data]", loc, "data")
    if ("dataset" in table) == ("path" in table):
        raise loc.error("[data]", "expected exactly one of 'dataset' (a shipped name) or 'path' (a CSV file)",
                        "", "data")
    if "dataset" in table:
        name = _expect(table["dataset"], str, "[data] dataset", "dataset", loc, "data")
        if name not in DESCRIPTIONS:
            raise loc.error("[data] dataset", f"expected one of {sorted(DESCRIPTIONS)}, got {name!r}",
                            "dataset", "data")
        frame, data_name = load_dataset(name), name
    else:
        path = base / _expect(table["path"], str, "[data] path", "path", loc, "data")
        if not path.is_file():
            raise loc.error("[data] path", f"expected an existing CSV file, got {str(path)!r}", "path", "data")
        frame, data_name = pd.read_csv(path), path.stem
    columns = table.get("columns", [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                                    and c not in (table.get("weights"), table.get("labels"))])
    _expect(columns, list, "[data] columns", "columns", loc, "data")
    for key in ("weights", "labels"):
        if key in table:
            columns_needed = [_expect(table[key], str, f"[data] {key}", key, loc, "data")]
            missing = [c for c in columns_needed if c not in frame.columns]
            if missing:
                raise loc.error(f"[data] {key}", f"expected a column of the data {list(frame.columns)}, "
                                f"got {missing[0]!r}", key, "data")
            if frame[columns_needed[0]].isna().any():
                rows = frame.index[frame[columns_needed[0]].isna()].tolist()
                raise loc.error(f"[data] {key}", f"expected a column without missing values, got "
                                f"{len(rows)} missing in {columns_needed[0]!r} (rows {rows[:5]})", key, "data")
    missing = [c for c in columns if c not in frame.columns]
    if missing or not columns:
        raise loc.error("[data] columns", f"expected columns of the data {list(frame.columns)}, got "
                        f"{columns!r} (missing {missing})", "columns", "data")
    return frame, data_name, tuple(columns)


def _read_models(models, loc: _Locator, n_support: int):
    if not isinstance(models, list) or not models:
        raise loc.error("[[models]]", "expected at least one [[models]] table", "models")
    specs = []
    for i, table in enumerate(models):
        where = f"[[models]] #{i + 1}"
        family = table.get("family", "gaussian")
        if family not in family_names():
            raise loc.error(f"{where} family", f"expected one of {family_names()}, got {family!r}", "family",
                            "models", i)
        keys = family_class(family).workflow_keys
        others = {key for name in family_names() for key in family_class(name).workflow_keys}
        misplaced = sorted((set(table) & others) - set(keys))
        if misplaced:
            raise loc.error(where, f"key(s) {misplaced} do not apply to family {family!r}; expected some of "
                            f"{sorted(('n_components', 'prior', *keys))}", misplaced[0], "models", i)
        _unknown(table, {*MODEL_KEYS, *keys}, where, loc, "models", i)
        if "n_components" not in table:
            raise loc.error(where, "expected n_components (an integer, or {from = a, to = b})", "", "models", i)
        ks = table["n_components"]
        if isinstance(ks, dict):
            if set(ks) != {"from", "to"}:
                raise loc.error(f"{where} n_components", f"expected {{from = a, to = b}}, got {ks!r}",
                                "n_components", "models", i)
            ks = tuple(range(ks["from"], ks["to"] + 1))
        elif isinstance(ks, int) and not isinstance(ks, bool):
            ks = (ks,)
        else:
            raise loc.error(f"{where} n_components", f"expected an integer or {{from = a, to = b}}, got {ks!r}",
                            "n_components", "models", i)
        if not ks or min(ks) < 1 or max(ks) > n_support:
            raise loc.error(f"{where} n_components", f"expected values between 1 and the number of "
                            f"observations ({n_support}), got {list(ks) or table['n_components']}",
                            "n_components", "models", i)
        options = tuple((key, tuple(value) if isinstance(value, list) else value)
                        for key, value in table.items() if key in keys)
        spec = ModelSpec(family, ks, table.get("prior", "default"), options)
        try:
            spec.model(ks[0])
        except (TypeError, ValueError) as error:
            named = [key for key in table if str(error).startswith((key, f"prior.{key}"))]
            raise loc.error(where, str(error), named[0] if named else "prior", "models", i) from None
        specs.append(spec)
    return tuple(specs)


def _read_methods(methods, loc: _Locator) -> dict:
    if not isinstance(methods, dict) or not methods:
        raise loc.error("[methods]", f"expected tables among {sorted(METHOD_OPTIONS)}, got {methods!r}",
                        "methods")
    unknown = sorted(set(methods) - set(METHOD_OPTIONS))
    if unknown:
        raise loc.error("[methods]", f"unknown method(s) {unknown}; expected some of {sorted(METHOD_OPTIONS)}",
                        "", f"methods.{unknown[0]}")
    resolved = {}
    for method, options in methods.items():
        section = f"methods.{method}"
        _unknown(options, set(METHOD_OPTIONS[method]), f"[{section}]", loc, section)
        for key, value in options.items():
            _expect(value, METHOD_OPTIONS[method][key], f"[{section}] {key}", key, loc, section)
        if method == "em" and options.get("accelerate", ACCELERATE_CHOICES[0]) not in ACCELERATE_CHOICES:
            raise loc.error(f"[{section}] accelerate", f"expected one of {list(ACCELERATE_CHOICES)}, got "
                            f"{options['accelerate']!r}", "accelerate", section)
        resolved[method] = dict(options)
    return resolved


def _check_models_against_data(models, frame, columns, weights, loc: _Locator) -> None:
    """Prepare every model on the data, so a mismatch (a missing column, non-count data) stops the run now."""
    import warnings

    from mixflow.data import validate_data

    for i, spec in enumerate(models):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = validate_data(frame[list(columns)], weights=None if weights is None else frame[weights])
                model = spec.model(spec.ks[0])
                model.resolve_prior(model.prepare(data))
        except (TypeError, ValueError, KeyError) as error:
            raise loc.error(f"[[models]] #{i + 1} on [data]", f"the data do not suit this model: {error}", "",
                            "models", i) from None


def read_workflow(path) -> Workflow:
    """Read and validate a workflow file; raise :class:`WorkflowError` naming the position of any fault.

    Parameters
    ----------
    path : str or os.PathLike
        A TOML file (see ``workflows/`` for examples).
    """
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(f"{path}: expected an existing workflow TOML file")
    text = path.read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise WorkflowError(f"{path}: not valid TOML: {error}") from None
    loc = _Locator(path, text)
    _unknown(config, TOP_KEYS, "top level", loc)
    for key in ("name", "seed", "data", "models", "methods"):
        if key not in config:
            raise WorkflowError(f"{path}:1: top level: expected key {key!r}, which is missing")
    name = _expect(config["name"], str, "name", "name", loc)
    seed = _expect(config["seed"], int, "seed", "seed", loc)
    if seed < 0:
        raise loc.error("seed", f"expected a non-negative integer, got {seed}", "seed")
    frame, data_name, columns = _read_data(_expect(config["data"], dict, "[data]", "data", loc), path.parent, loc)
    weights, labels = config["data"].get("weights"), config["data"].get("labels")
    n_support = int((frame[weights] > 0).sum()) if weights else len(frame)
    models = _read_models(config["models"], loc, n_support)
    _check_models_against_data(models, frame, columns, weights, loc)
    methods = _read_methods(config["methods"], loc)
    output = {key: True for key in OUTPUT_KEYS} | dict(config.get("output", {}))
    _unknown(output, OUTPUT_KEYS, "[output]", loc, "output")
    return Workflow(path=path, name=name, title=config.get("title", name), seed=seed, data=frame,
                    data_name=data_name, columns=columns, weights=weights, labels=labels, models=models,
                    methods=methods, output=output, config=config)
