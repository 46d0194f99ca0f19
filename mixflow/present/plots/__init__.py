"""Figures of a fitted container.

Posterior draws across methods (:mod:`.draws`), the data with the fitted mixtures (:mod:`.data`), EM and
ADVI convergence and the choice of K (:mod:`.fit`).
"""

from mixflow.present.plots.data import plot_data
from mixflow.present.plots.draws import plot_forest, plot_modes, plot_posteriors, plot_ppc, plot_rank, plot_trace
from mixflow.present.plots.fit import plot_convergence, plot_select_k

__all__ = ["plot_convergence", "plot_data", "plot_forest", "plot_modes", "plot_posteriors", "plot_ppc", "plot_rank",
           "plot_select_k", "plot_trace"]
