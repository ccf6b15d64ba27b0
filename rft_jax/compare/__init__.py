"""Comparing runs (`rft-jax compare`): arms from configs, mean ± 95% CI over seeds, paired tests, one page.

runs.py finds run folders and groups them into arms, stats.py holds the statistics (numpy only), table.py
the results document (results.json / results.csv), page.py the HTML page, build.py writes all three.
The page and the table need matplotlib (the report's plotting stack), so only the light pieces are here.
"""

from rft_jax.compare.runs import Arm, CompareError, Run, group_arms, load_arms
from rft_jax.compare.stats import mcnemar_exact, mean_ci, paired_bootstrap, t_quantile_975

__all__ = [
    "Arm",
    "CompareError",
    "Run",
    "group_arms",
    "load_arms",
    "mcnemar_exact",
    "mean_ci",
    "paired_bootstrap",
    "t_quantile_975",
]
