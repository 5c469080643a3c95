"""collabemb: collaborative-filtering embeddings you can get out, row by row, ID by ID."""

from collabemb.artifact import ArtifactError, load_model, save_model
from collabemb.data import Ratings, RatingsError, read_ratings
from collabemb.movielens import ChecksumError, DownloadError, MovieLens, load_movielens, load_movielens_fold
from collabemb.models import EmbeddingDotBias
from collabemb.registry import UNKNOWN_ROW, IdRegistry, UnknownIdError
from collabemb.splits import read_split, split_leave_last, split_random
from collabemb.train import FitHistory, fit, rmse

__all__ = [
    "ArtifactError",
    "ChecksumError",
    "DownloadError",
    "MovieLens",
    "load_movielens",
    "load_movielens_fold",
    "load_model",
    "save_model",
    "UNKNOWN_ROW",
    "EmbeddingDotBias",
    "FitHistory",
    "IdRegistry",
    "Ratings",
    "RatingsError",
    "UnknownIdError",
    "fit",
    "read_ratings",
    "read_split",
    "rmse",
    "split_leave_last",
    "split_random",
]
