"""The one config: every section, loaded from one YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field

from zsplg_fast.config.bench import BenchConfig, DeployConfig
from zsplg_fast.config.export import ExportConfig
from zsplg_fast.config.labeling import AmgConfig, ClassifyConfig, DataConfig, LabelJobConfig
from zsplg_fast.config.models import ClipConfig, SamConfig
from zsplg_fast.config.pipeline import PipelineConfig
from zsplg_fast.config.train import TrainConfig


@dataclass
class Config:
    """Top-level config. YAML sections map 1:1 to these fields."""

    data: DataConfig = field(default_factory=DataConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    amg: AmgConfig = field(default_factory=AmgConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    label: LabelJobConfig = field(default_factory=LabelJobConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
