"""The one-command pipeline: zero-shot labels → UniMatch → enhance → final model → evaluate → export."""

from zsplg_fast.pipeline.run import StageOutcome, run_pipeline

__all__ = ["StageOutcome", "run_pipeline"]
