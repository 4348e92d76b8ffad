"""Typed training configuration, validated once at the edge (the CLI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from feature_repo.features import EMBEDDING_DIM


class TrainConfig(BaseModel):
    """Hyper-parameters of both models. Times in milliseconds where named ``_ms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed of every random draw (TF, NumPy, shuffling).")
    epochs: int = Field(3, ge=1, description="Training epochs of each model.")
    train_fraction: float = Field(
        0.8, gt=0, le=1, description="Time-split share of training events."
    )
    dim: int = Field(EMBEDDING_DIM, ge=2, description="Embedding width of both towers.")
    tower_hidden: int = Field(64, ge=1, description="Hidden units of each tower's MLP.")
    max_history: int = Field(50, ge=1, description="Recent events pooled per user (the state's N).")
    retrieval_batch: int = Field(512, ge=2, description="Retrieval batch: the in-batch negatives.")
    retrieval_lr: float = Field(0.01, gt=0, description="Adam learning rate of retrieval.")
    temperature: float = Field(0.2, gt=0, description="Softmax temperature of the retrieval loss.")
    ranker_batch: int = Field(1024, ge=1, description="Ranker batch size.")
    ranker_lr: float = Field(0.003, gt=0, description="Adam learning rate of the ranker.")
    cross_layers: int = Field(2, ge=0, description="DCN cross layers.")
    reward_weight: float = Field(
        1.0, ge=0, description="Weight of the reward MSE in the ranker loss."
    )
    title_buckets: int = Field(4096, ge=2, description="Hash buckets of title tokens.")
    outcome_window_ms: int = Field(
        3_600_000, ge=0, description="Outcome events join an exposure within this."
    )
    serving_k: int = Field(100, ge=1, description="Top-K of the exported retrieval signature.")
    ann_min_items: int = Field(
        100_000,
        ge=1,
        description="Catalogues of at least this many items also get an approximate index "
        "(models.ann, faiss IVF-Flat) beside the sequential SavedModel, which the service "
        "searches instead of the brute-force top-K; smaller ones are served by brute force.",
    )
    deterministic: bool = Field(True, description="tf.config.experimental.enable_op_determinism.")
