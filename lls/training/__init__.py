"""Training: a LoRA adapter trained with TRL's DPOTrainer on a selection, resumable, with
checkpoints read by the effect meter, and the registry of trained adapters."""

from .adapters import AdapterInfo, list_adapters, open_adapter, random_twin_of
from .config import SelectionSpec, TrainConfig, TrainingError, baseline_config, estimate_steps
from .runs import (adapter_id_for, selection_frame, student_spec, submit_baseline,
                   submit_training, train)

__all__ = ["AdapterInfo", "SelectionSpec", "TrainConfig", "TrainingError", "adapter_id_for",
           "baseline_config", "estimate_steps", "list_adapters", "open_adapter", "random_twin_of",
           "selection_frame", "student_spec", "submit_baseline", "submit_training", "train"]
