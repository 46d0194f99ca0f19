"""Singular or plural in the messages: the noun and its verb agree with the number."""

import pytest

from mixflow.wording import agreeing, counted, perhaps


@pytest.mark.parametrize(("number", "expected"), [(0, "0 files"), (1, "1 file"), (2, "2 files"), (12, "12 files")])
def test_a_count_and_its_noun(number, expected):
    assert counted(number, "file") == expected


def test_an_irregular_plural_is_given():
    assert counted(1, "parenthesis", "parentheses") == "1 parenthesis"
    assert counted(3, "parenthesis", "parentheses") == "3 parentheses"


@pytest.mark.parametrize(("components", "expected"), [
    ([0], "component [0] is empty"), ([0, 2], "components [0, 2] are empty")])
def test_the_noun_without_its_number_and_the_verb_agree(components, expected):
    n = len(components)
    assert f"{agreeing(n, 'component')} {components} {agreeing(n, 'is', 'are')} empty" == expected


@pytest.mark.parametrize(("unknown", "expected"), [
    (["n_inits"], " (did you mean 'n_init'?)"), (["iter"], " (did you mean 'max_iter'?)"),
    (["iters"], " (did you mean 'max_iter'?)"),  # 'iter' in common, most of the name, though not similar enough
    (["rate"], ""),  # 'rate' inside 'accelerate' begins none of its parts: no suggestion
    (["colour"], ""),  # as far from 'cluster' as from anything: no suggestion beats a wrong one
    (["n_inits", "tl"], " (did you mean 'n_init' for 'n_inits', 'tol' for 'tl'?)")])
def test_a_misspelt_name_is_matched_to_a_close_one_only(unknown, expected):
    assert perhaps(unknown, ["accelerate", "cluster", "max_iter", "n_init", "tol"]) == expected
