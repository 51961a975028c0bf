"""Training: typed configs, the loop (single process or DeepSpeed), atomic checkpoints, exact resume."""

from medrega.training.config import DataSource, TrainConfig, load_config
from medrega.training.trainer import Trainer, TrainResult, train

__all__ = ["DataSource", "TrainConfig", "TrainResult", "Trainer", "load_config", "train"]
