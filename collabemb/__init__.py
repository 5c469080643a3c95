"""collabemb: collaborative-filtering embeddings you can get out, row by row, ID by ID."""

from collabemb.artifact import ArtifactError, load_model, save_model
from collabemb.coldstart import FoldIn, fold_in_items, fold_in_items_like, fold_in_users
from collabemb.data import Ratings, RatingsError, read_ratings
from collabemb.export import EmbeddingArrays, IdEmbedding, embedding_arrays, embedding_frame, read_embeddings, to_features, to_torch, write_embeddings
from collabemb.implicit_mf import fit_implicit, fit_popularity, fold_in_als
from collabemb.index import SeenItems, SimilarityIndex, StaleIndexError
from collabemb.metrics import evaluate, ranking_metrics
from collabemb.movielens import ChecksumError, DownloadError, MovieLens, load_movielens, load_movielens_fold
from collabemb.models import EmbeddingDotBias
from collabemb.plots import pca_frame, plot_bias, plot_history, plot_pca
from collabemb.registry import UNKNOWN_ROW, IdRegistry, UnknownIdError
from collabemb.splits import read_split, split_leave_last, split_random, split_random_per_user
from collabemb.train import FitHistory, fit, rmse

__all__ = [
    "ArtifactError",
    "ChecksumError",
    "DownloadError",
    "embedding_arrays",
    "embedding_frame",
    "EmbeddingArrays",
    "EmbeddingDotBias",
    "evaluate",
    "fit",
    "fit_implicit",
    "fit_popularity",
    "FitHistory",
    "fold_in_als",
    "fold_in_items",
    "fold_in_items_like",
    "fold_in_users",
    "FoldIn",
    "IdEmbedding",
    "IdRegistry",
    "load_model",
    "load_movielens",
    "load_movielens_fold",
    "MovieLens",
    "pca_frame",
    "plot_bias",
    "plot_history",
    "plot_pca",
    "ranking_metrics",
    "Ratings",
    "RatingsError",
    "read_embeddings",
    "read_ratings",
    "read_split",
    "rmse",
    "save_model",
    "SeenItems",
    "SimilarityIndex",
    "split_leave_last",
    "split_random",
    "split_random_per_user",
    "StaleIndexError",
    "to_features",
    "to_torch",
    "UNKNOWN_ROW",
    "UnknownIdError",
    "write_embeddings",
]
