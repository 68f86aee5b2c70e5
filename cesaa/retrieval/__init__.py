"""Two-tower retrieval (the paper's second setting): CESAA / MMoE / MLP user towers, an item-tower
MLP, in-batch softmax training and Recall@K against the full item set, overall and per domain."""

from cesaa.retrieval.evaluate import (
    Catalog,
    EvalSet,
    build_catalog,
    embed,
    evaluate_retrieval,
    popularity_scores,
    ranking_report,
    recall_report,
    score_queries,
    top_k_items,
)
from cesaa.retrieval.model import (
    MOVIELENS_USER_FEATURES,
    USER_TOWERS,
    TwoTower,
    split_features,
)
from cesaa.retrieval.train import (
    RetrievalConfig,
    RetrievalResult,
    build_two_tower,
    in_batch_softmax_loss,
    train_retrieval,
)

__all__ = [
    "MOVIELENS_USER_FEATURES",
    "USER_TOWERS",
    "Catalog",
    "EvalSet",
    "RetrievalConfig",
    "RetrievalResult",
    "TwoTower",
    "build_catalog",
    "build_two_tower",
    "embed",
    "evaluate_retrieval",
    "in_batch_softmax_loss",
    "popularity_scores",
    "ranking_report",
    "recall_report",
    "score_queries",
    "split_features",
    "top_k_items",
    "train_retrieval",
]
