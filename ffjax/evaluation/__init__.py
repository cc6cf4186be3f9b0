"""Evaluation: the jitted evaluator, its metrics (sums) and reports, and the run-bound runner.

- `evaluator.Evaluator`: one jitted step returning counts; takes a predict function and a task.
- `metrics`: device-side sums and host-side ratios; `report`: breakdown tables, JSON, Markdown.
- `runner`: `SplitEvaluator` (a run's splits and report folder) and `evaluate_checkpoint`.

Evaluation never imports the trainer; it builds models through `ffjax.state`.
"""

from ffjax.evaluation.evaluator import Evaluator
from ffjax.evaluation.report import EvalResult, summarize, write_report
from ffjax.evaluation.runner import SplitEvaluator, evaluate_checkpoint, headline

__all__ = ["EvalResult", "Evaluator", "SplitEvaluator", "evaluate_checkpoint", "headline", "summarize", "write_report"]
