"""Evaluation: pass@k statistics, the baseline verdict, and the run report.

Only the light, pure pieces are imported here; `rft_jax.evaluation.report`
(matplotlib) is imported where it is used, so `import rft_jax.evaluation` stays cheap.
"""

from rft_jax.evaluation.passk import EvalSummary, default_ks, mean_pass_at_k, pass_at_k, summarize_samples
from rft_jax.evaluation.verdict import Verdict, VerdictConfig, baseline_verdict

__all__ = [
    "EvalSummary",
    "Verdict",
    "VerdictConfig",
    "baseline_verdict",
    "default_ks",
    "mean_pass_at_k",
    "pass_at_k",
    "summarize_samples",
]
