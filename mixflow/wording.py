"""Singular or plural in the messages: one word, or a count and its noun, agreeing with a number.

``counted(3, "file")`` gives ``"3 files"``, ``counted(1, "file")`` ``"1 file"``; ``agreeing(n, "component")``
the noun alone (``"component"`` or ``"components"``) and ``agreeing(n, "is", "are")`` the verb that goes with it,
so that ``"component [0] is empty"`` and ``"components [0, 2] are empty"`` both read right. A plural that is not
the singular plus "s" is given as the third argument: ``counted(2, "parenthesis", "parentheses")``. This module
imports nothing of mixflow's, so every layer can word its messages with it.
"""

__all__ = ["BOOTSTRAP_REMEDY", "ENGINE_ALIASES", "agreeing", "counted", "engine_alias_hint", "fixed_places", "listed",
           "pairs_text", "perhaps"]


def agreeing(number: int, singular: str, plural: str | None = None) -> str:
    """``singular`` for one, ``plural`` (by default ``singular`` + ``"s"``) for any other number, zero included."""
    if number == 1:
        return singular
    return singular + "s" if plural is None else plural


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """``"1 divergent transition"``, ``"3 divergent transitions"``: the number and the noun agreeing with it."""
    return f"{number} {agreeing(number, singular, plural)}"


def fixed_places(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` places, or to 12 significant digits in scientific notation beyond 1e15.

    How a log-likelihood (4 places) or an information criterion (2) is given wherever it is printed.
    """
    value = float(value)
    return f"{value:.{decimals}f}" if not abs(value) >= 1e15 else f"{value:.11e}"


def listed(items) -> str:
    """``"a, b and c"``: the items (strings) joined as a sentence lists them; the one item alone."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def pairs_text(pairs) -> str:
    """Pairs of components as words, ``"0 and 2, 1 and 3"`` (warnings, summaries, reports)."""
    return ", ".join(f"{i} and {j}" for i, j in pairs)


# the least similarity (difflib's ratio) of a misspelt name to the name suggested for it
CLOSE = 0.65
#: a shorter misspelling still meant: a run of at least this many characters in common with a known name, beginning
#: one of its parts (between underscores) ...
SHARED_RUN = 4
#: ... covering at least this share of the unknown name ('iters' in 'max_iter')
SHARED_SHARE = 0.75


def _closest(name: str, known: list[str]) -> str | None:
    """The known name closest to ``name``: by similarity (at least ``CLOSE``), else by a long run in common."""
    import difflib

    match = difflib.get_close_matches(name, known, n=1, cutoff=CLOSE)
    if match:
        return match[0]

    def shared(other: str) -> int:
        """The longest run in common where it begins a part of ``other`` ('seed' of 'random_seed'), else 0."""
        match = difflib.SequenceMatcher(None, name, other).find_longest_match()
        return match.size if match.b == 0 or other[match.b - 1] == "_" else 0

    sharing = [other for other in known if shared(other) >= max(SHARED_RUN, SHARED_SHARE * len(name))]
    return max(sharing, key=lambda other: (shared(other), difflib.SequenceMatcher(None, name, other).ratio()),
               default=None)


def perhaps(unknown, known) -> str:
    """``" (did you mean 'n_init'?)"``: the known name closest to each unknown one, if any.

    With several unknown names, each is said: ``" (did you mean 'n_init' for 'n_inits', 'tol' for 'tl'?)"``.
    Empty when no unknown name is close to a known one: a similarity (:func:`difflib.get_close_matches`) of at
    least ``CLOSE`` ('iter' is close to 'max_iter', 'colour' not to 'cluster'), or a run of at least
    ``SHARED_RUN`` characters in common that begins a part of the known name and covers ``SHARED_SHARE`` of the
    unknown one ('iters' and 'max_iter'; not 'rate' and 'accelerate').
    """
    known = sorted(known)
    unknown = [name for name in unknown if name not in known]
    meant = [(name, match) for name in unknown for match in [_closest(name, known)] if match]
    if not meant:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {meant[0][1]!r}?)"
    return f" (did you mean {', '.join(f'{match!r} for {name!r}' for name, match in meant)}?)"


#: The sampling engines' options by the words other libraries name them with (Stan's iter and warmup, PyMC's
#: samples, scikit-learn's max_iter), with what each is: ``advi_max_iter`` is ADVI's ``n``, not fit's ``max_iter``
#: (EM's iterations)
ENGINE_ALIASES = {"advi": {"n": (("iter", "steps"), "ADVI's number of iterations")},
                   "mcmc": {"draws": (("samples", "iter"), "NUTS's draws kept per chain"),
                            "tune": (("warmup", "burn", "adapt"), "NUTS's tuning steps per chain")}}


def engine_alias_hint(unknown: list[str], methods: list[str]) -> str:
    """``" (did you mean 'n' for 'advi_max_iter': ADVI's number of iterations?)"``, or empty when none matches.

    Each unknown name is matched against the words of :data:`ENGINE_ALIASES` of the methods asked for (a word
    anywhere in the name); a name that matches several engines' options is said with each.
    """
    meant = [f"{option!r} for {name!r}: {what}" for name in unknown for method in methods
             for option, (words, what) in ENGINE_ALIASES.get(method, {}).items()
             if any(word in name.lower() for word in words)]
    return f" (did you mean {'; or '.join(meant)}?)" if meant else ""


#: What gives a fit's standard errors where the observed information does not, in most cases.
BOOTSTRAP_REMEDY = "mixflow.bootstrap gives them"
