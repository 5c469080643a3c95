"""collabemb: collaborative-filtering embeddings you can get out, row by row, ID by ID.

The public API is re-exported here. Names are imported on first use (PEP 562), so that
``import collabemb`` and the command line start at once and torch, pandas and FAISS are loaded
only by what needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "ArtifactError": "artifact",
    "ChecksumError": "movielens",
    "DownloadError": "movielens",
    "EmbeddingArrays": "export",
    "EmbeddingDotBias": "models",
    "EmbeddingFeatures": "sklearn_features",
    "ExcludedTestPairsWarning": "metrics",
    "FitHistory": "history",
    "FitSettings": "settings",
    "FittedModel": "fitted",
    "FoldIn": "coldstart",
    "IdEmbedding": "features",
    "IdRegistry": "registry",
    "Interactions": "interactions",
    "ModelIdentity": "fitted",
    "MovieLens": "movielens",
    "Ratings": "data",
    "RatingsError": "data",
    "SeenItems": "interactions",
    "SimilarityIndex": "index",
    "StaleIndexError": "index",
    "UNKNOWN_ROW": "registry",
    "UnknownIdError": "registry",
    "build_index": "index",
    "embedding_arrays": "export",
    "embedding_frame": "export",
    "evaluate": "metrics",
    "fit": "train",
    "fit_distributed": "distributed",
    "fit_implicit": "implicit_mf",
    "RatingsDataset": "ratings_dataset",
    "RankFailure": "engines.dsgd",
    "ShardedPart": "faiss_shards",
    "build_ondisk_ivf": "faiss_shards",
    "build_shard": "faiss_shards",
    "open_ondisk_ivf": "faiss_shards",
    "shard_index": "faiss_shards",
    "fit_unknown_rows": "fastai_import",
    "fit_popularity": "implicit_mf",
    "fold_in_als": "coldstart",
    "fold_in_items": "coldstart",
    "fold_in_items_like": "coldstart",
    "fold_in_users": "coldstart",
    "cross_validate": "tuning",
    "tune": "tuning",
    "TuneResult": "tuning",
    "SideInfoMap": "side_info",
    "from_fastai": "fastai_import",
    "from_fastai_parts": "fastai_import",
    "index_of": "index",
    "load_model": "artifact",
    "load_movielens": "movielens",
    "load_movielens_fold": "movielens",
    "pca_frame": "plots",
    "plot_bias": "plots",
    "plot_history": "plots",
    "plot_pca": "plots",
    "ranking_metrics": "metrics",
    "read_embeddings": "export",
    "read_ratings": "data",
    "read_split": "splits",
    "recommend": "index",
    "recommend_from_ratings": "coldstart",
    "rmse": "train",
    "save_model": "artifact",
    "similar_items": "index",
    "similar_users": "index",
    "split_leave_last": "splits",
    "split_random": "splits",
    "split_random_per_user": "splits",
    "to_features": "features",
    "to_torch": "features",
    "write_embeddings": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":  # one source of truth: the installed distribution (pyproject.toml)
        from importlib.metadata import version

        return version("collabemb")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'collabemb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"collabemb.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from collabemb.artifact import ArtifactError, load_model, save_model
    from collabemb.coldstart import FoldIn, fold_in_als, fold_in_items, fold_in_items_like, fold_in_users, recommend_from_ratings
    from collabemb.data import Ratings, RatingsError, read_ratings
    from collabemb.distributed import fit_distributed
    from collabemb.engines.dsgd import RankFailure
    from collabemb.export import EmbeddingArrays, embedding_arrays, embedding_frame, read_embeddings, write_embeddings
    from collabemb.faiss_shards import ShardedPart, build_ondisk_ivf, build_shard, open_ondisk_ivf, shard_index
    from collabemb.fastai_import import fit_unknown_rows, from_fastai, from_fastai_parts
    from collabemb.features import IdEmbedding, to_features, to_torch
    from collabemb.fitted import FittedModel, ModelIdentity
    from collabemb.history import FitHistory
    from collabemb.implicit_mf import fit_implicit, fit_popularity
    from collabemb.index import SimilarityIndex, StaleIndexError, build_index, index_of, recommend, similar_items, similar_users
    from collabemb.interactions import Interactions, SeenItems
    from collabemb.metrics import ExcludedTestPairsWarning, evaluate, ranking_metrics
    from collabemb.models import EmbeddingDotBias
    from collabemb.movielens import ChecksumError, DownloadError, MovieLens, load_movielens, load_movielens_fold
    from collabemb.plots import pca_frame, plot_bias, plot_history, plot_pca
    from collabemb.ratings_dataset import RatingsDataset
    from collabemb.registry import UNKNOWN_ROW, IdRegistry, UnknownIdError
    from collabemb.settings import FitSettings
    from collabemb.side_info import SideInfoMap
    from collabemb.sklearn_features import EmbeddingFeatures
    from collabemb.splits import read_split, split_leave_last, split_random, split_random_per_user
    from collabemb.train import fit, rmse
    from collabemb.tuning import TuneResult, cross_validate, tune
