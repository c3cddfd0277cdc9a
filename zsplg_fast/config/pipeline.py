"""The one-command pipeline (`zsplg-fast run`, `zsplg-fast demo`)."""

from __future__ import annotations

from dataclasses import dataclass

from zsplg_fast.config.fields import opt
from zsplg_fast.errors import ConfigError

PIPELINE_STAGES = ("zero_shot", "unimatch", "enhance", "final", "baseline", "evaluate", "export")


@dataclass
class PipelineConfig:
    """Which stages run and where. Each stage writes ``<out>/<nn>-<stage>-<fingerprint>/``."""

    out: str = opt("runs/run", help="run folder; a rerun with the same config skips complete stages")
    stages: list[str] = opt(
        factory=lambda: ["zero_shot", "unimatch", "enhance", "final", "evaluate", "export"],
        help="stages to run, in order; 'baseline' trains on the labeled images alone for comparison",
    )
    overlays: int = opt(
        0, ge=0, le=64, help="grid PNGs of N samples in the zero_shot and evaluate stage folders"
    )

    def validate(self, prefix: str) -> None:
        for i, s in enumerate(self.stages):
            if s not in PIPELINE_STAGES:
                raise ConfigError(
                    f"{prefix}.stages[{i}]", s, "unknown stage", valid=", ".join(PIPELINE_STAGES)
                )
