"""The training run's settings: typed, filled from a model config plus CLI overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ucd.config import Strict
from ucd.models import StudentConfig
from ucd.models.distill import DistillConfig
from ucd.tracking.runs import TrackingConfig


class OptimConfig(Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)  # per worker
    grad_clip: float | None = Field(None, gt=0)  # the paper clips the grad norm at 0.5


class RayConfig(Strict):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    accelerator_type: str | None = None
    max_failures: int = 0  # Ray Train restarts the workers from the latest checkpoint
    storage_path: str = ""  # empty: $UCD_HOME/ray_results; a shared or s3:// path on clusters


class RegisterConfig(Strict):
    enabled: bool = True
    model_name: str = "ucd-student"
    alias: str = "candidate"


class TrainConfig(Strict):
    """Everything one training run needs; a model config (``ucd/defaults/train/``) fills it."""

    data: str = ""  # prepared dataset folder
    profiles: str | None = None  # profile_embeddings.parquet (or its folder); needed to distil
    profile_coverage: float = Field(1.0, gt=0.0, le=1.0)
    run_name: str = ""  # empty: derived from dataset, model and distillation
    model: StudentConfig = StudentConfig()
    loss: Literal["full_ce", "sampled_softmax", "bce"] = "full_ce"
    n_negatives: int = 256
    distill: DistillConfig = DistillConfig()
    optim: OptimConfig = OptimConfig()
    epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)  # epochs without a better validation NDCG@10
    # Epochs without a better score count only from this epoch on, so no run stops before
    # min_epochs + patience: BERT4Rec on ML-100K sits on a plateau for its first ~60 epochs, and
    # patience alone then stops runs there by chance (a distilled run stopped at epoch 57 with
    # NDCG@10 0.0215; its baseline got past the plateau and reached 0.0573).
    min_epochs: int = Field(0, ge=0)
    # Model selection considers only epochs from this one on (patience counts from it too). On
    # small validation sets an early epoch can win by chance: ML-100K `temporal` BERT4Rec (128
    # validation users) kept epoch-3/5 weights on some seeds, baseline and distilled alike.
    select_from_epoch: int = Field(0, ge=0)
    seed: int = 42
    eval_batch_size: int = 512
    exclude_seen: bool = False  # remove history items from the ranking (stated in reports)
    output: str = ""  # where the final model folder goes; empty: $UCD_HOME/models/<run_name>
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegisterConfig = RegisterConfig()

    @model_validator(mode="after")
    def _selection_within_epochs(self) -> TrainConfig:
        if self.select_from_epoch >= self.epochs:
            raise ValueError(
                f"select_from_epoch ({self.select_from_epoch}) must be below epochs ({self.epochs}): "
                "no epoch would be eligible as the best one"
            )
        return self

    def resolved_run_name(self, dataset: str) -> str:
        if self.run_name:
            return self.run_name
        tag = f"distill-{self.distill.distance}" if self.distill.enabled else "baseline"
        return f"{dataset}-{self.model.kind}-{tag}-s{self.seed}"
