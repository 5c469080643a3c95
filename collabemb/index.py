"""Similar items, similar users and recommendations by raw ID, searched with FAISS.

FAISS does the search (:mod:`collabemb.faiss_parts` holds one FAISS index per table); this module
makes it correct and easy to use:

* **Raw IDs in, raw IDs out**, through the model's registries. IDs are never coerced: a query, an
  ``exclude=`` list or ``seen=`` pairs of the other ID type raise ``TypeError`` (``"7"`` is not
  ``7``; a ``seen=`` file is read by :mod:`collabemb.inputs`' rule); unseen ``exclude=`` IDs are ignored.
* **Metrics said out loud.** ``metric="cosine"`` searches L2-normalised vectors (a zero vector
  scores 0 against everything), ``metric="dot"`` the raw vectors.
* **Recommendations in the model's own order.** The predicted rating
  ``lo + (hi - lo) * sigmoid(<p_u, q_i> + b_u + b_i)`` is monotone in ``<[p_u, 1], [q_i, b_i]>``
  for a fixed user, so :meth:`SimilarityIndex.recommend` searches the item vectors augmented with
  their bias against ``[p_u, 1]`` and reports the predicted rating as the score (an approximate
  index's candidates, with the items of largest bias added, scored exactly: :meth:`Part.recommend`).
* **Exclusions never cost results.** Excluded IDs (the query itself, items a user has seen, an
  ``exclude=`` list) are filtered after an over-fetch: ``k`` results whenever the catalogue has them.
* **Unknown IDs are named.** An unseen query ID raises :class:`~collabemb.registry.UnknownIdError`
  unless ``unknown="unknown_slot"`` is asked for; every result row has a ``source`` column
  (``"known"``, ``"unknown_slot"``, ``"fold_in"``, ``"mean_of_items"``) saying which path
  produced it.

A :class:`SimilarityIndex` searches one :class:`~collabemb.fitted.FittedModel`; its parts
(``"items"``, ``"users"``, ``"recommend"``) are built on first use or by ``build``.
:func:`build_index` attaches one as ``fitted.index``, which ``save_model`` stores as FAISS bytes
(:meth:`SimilarityIndex.to_files`) and :func:`index_of` reads back, refusing bytes that do not
match the model (:class:`~collabemb.faiss_parts.StaleIndexError`). :func:`similar_items`,
:func:`similar_users` and :func:`recommend` search ``index_of(fitted)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from collabemb.data import Ratings
from collabemb.faiss_files import parts_to_files, read_stored_parts
from collabemb.faiss_parts import (
    EXACT_MAX_DEFAULT,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    PARTS,
    IndexSettings,
    IndexType,
    Metric,
    Part,
    StaleIndexError,
)
from collabemb.fitted import FittedModel, ModelIdentity, StoredIndex
from collabemb.inputs import read_ratings_for
from collabemb.interactions import SeenItems
from collabemb.model_view import rating_of_logits
from collabemb.models import EmbeddingDotBias, Table, check_table
from collabemb.registry import UNKNOWN_CHOICES, UNKNOWN_ROW, IdRegistry, Unknown, UnknownIdError, id_type_of
from collabemb.settings import check_k


class SimilarityIndex:
    """FAISS search over a fitted model's vectors, by raw ID.

    Args:
        fitted: a :class:`~collabemb.fitted.FittedModel` (or see :meth:`from_vectors`).
        index_type: ``"exact"``, ``"hnsw"`` or ``"ivf"``; default per part: exact up to
            ``exact_max`` vectors, HNSW above.
        metric: ``"cosine"`` or ``"dot"`` for :meth:`similar_items` / :meth:`similar_users`;
            :meth:`recommend` always ranks by the model's predicted rating.
        hnsw_m, ef_construction, ef_search, nlist, nprobe, threads, seed, exact_max: see
            :class:`~collabemb.faiss_parts.IndexSettings`.

    The index copies the vectors into FAISS: retrain the model and the index is stale (saving
    then refuses it). Fold-ins with ``add=True`` extend ``fitted.index`` (:meth:`extend`).
    """

    def __init__(
        self,
        fitted: FittedModel,
        *,
        index_type: IndexType | None = None,
        metric: Metric = "cosine",
        hnsw_m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
        nlist: int | None = None,
        nprobe: int | None = None,
        threads: int | None = None,
        seed: int = 0,
        exact_max: int = EXACT_MAX_DEFAULT,
    ):
        if not isinstance(fitted, FittedModel):
            raise TypeError(
                f"SimilarityIndex searches a FittedModel (from collabemb.fit, fit_implicit or load_model), "
                f"got {type(fitted).__name__}; wrap a bare module as FittedModel(module)"
            )
        self.fitted = fitted
        self.settings = IndexSettings(
            index_type, metric, int(hnsw_m), int(ef_construction), int(ef_search), nlist, nprobe, threads, int(seed), int(exact_max)
        )
        self._parts: dict[str, Part] = {}
        self._meta_key: tuple | None = None
        self._meta: dict[str, np.ndarray] = {}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_vectors(
        cls,
        item_ids,
        item_vectors: np.ndarray,
        *,
        item_bias: np.ndarray | None = None,
        user_ids=None,
        user_vectors: np.ndarray | None = None,
        user_bias: np.ndarray | None = None,
        y_range: tuple[float, float] | None = None,
        item_metadata: pd.DataFrame | None = None,
        **kwargs,
    ) -> SimilarityIndex:
        """An index over exported vectors instead of a fitted model.

        Args:
            item_ids: (n_items,) raw IDs, aligned with ``item_vectors`` (any order, no repeats).
            item_vectors: (n_items, k) float vectors; ``item_bias`` optional (n_items,).
            user_ids, user_vectors, user_bias: the same for users (needed by :meth:`similar_users`
                and :meth:`recommend`).
            y_range: the model's rating range, for :meth:`recommend` scores to be its predicted
                ratings; default None scores by ``<p_u, q_i> + b_u + b_i``.
            item_metadata: optional DataFrame with an ``item`` column, joined onto results.
            kwargs: as for the constructor.

        The index's ``fitted`` is a new FittedModel around these vectors. There is no trained
        unknown slot (row 0 is zeros): ``unknown="unknown_slot"`` is refused.
        """
        item_arr, item_vectors, item_bias = _check_vectors(item_ids, item_vectors, item_bias, "item")
        if user_ids is None and user_vectors is not None:
            raise ValueError("user_vectors given without user_ids")
        module = EmbeddingDotBias(IdRegistry(name="user"), IdRegistry(name="item"), n_factors=item_vectors.shape[1], y_range=y_range)
        with torch.no_grad():
            for emb in (module.u_weight, module.i_weight):
                emb.weight.zero_()  # row 0, the only row yet: no trained unknown slot here
        module.append_rows("item", item_arr, item_vectors, item_bias)
        if user_ids is not None:
            user_arr, user_vectors, user_bias = _check_vectors(user_ids, user_vectors, user_bias, "user")
            if user_vectors.shape[1] != item_vectors.shape[1]:
                raise ValueError(f"user vectors have {user_vectors.shape[1]} columns, item vectors {item_vectors.shape[1]}")
            module.append_rows("user", user_arr, user_vectors, user_bias)
        module.eval()
        fitted = FittedModel(module, ModelIdentity(family="vectors", row0="none"))
        if item_metadata is not None:
            fitted.set_item_metadata(item_metadata)
        return cls(fitted, **kwargs)

    def build(self, *parts: str) -> SimilarityIndex:
        """Build the named parts now (default: ``"items"`` and ``"recommend"``); returns self.

        Parts already built are left as they are.
        """
        for name in parts or ("items", "recommend"):
            self.part(name)
        return self

    @property
    def threads(self) -> int | None:
        """FAISS threads for builds and searches (None: FAISS's own setting); may be changed between calls."""
        return self.settings.threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        self.settings = dataclasses.replace(self.settings, threads=value)
        for part in self._parts.values():
            part.settings = self.settings

    @property
    def has_unknown_slot(self) -> bool:
        """Whether row 0 can answer unseen IDs: False for vectors imported by :meth:`from_vectors` (zeros)."""
        return self.fitted.identity.row0 != "none"

    @property
    def parts(self) -> dict[str, str]:
        """The parts built so far and their index type, e.g. ``{"items": "hnsw"}``."""
        return {name: part.index_type for name, part in self._parts.items()}

    def __repr__(self) -> str:
        built = ", ".join(f"{name}: {part.index_type} ({part.index.ntotal})" for name, part in self._parts.items()) or "none yet"
        return f"SimilarityIndex(metric={self.settings.metric!r}, parts built: {built})"

    # --- queries -------------------------------------------------------------------------------
    def similar_items(
        self, ids, k: int = 10, *, exclude_self: bool = True, exclude=None, unknown: Unknown = "raise", like: Mapping | None = None
    ) -> pd.DataFrame:
        """The k items most similar to each query item, by raw ID, in one batched search.

        Args:
            ids: one raw item ID or a sequence of them, of the model's item ID type.
            k: results per query (fewer only when the catalogue has fewer eligible items).
            exclude_self: leave each query item out of its own results.
            exclude: raw item IDs never to return (for every query); unseen ones are ignored,
                IDs of the other ID type raise ``TypeError``.
            unknown: ``"raise"`` raises :class:`~collabemb.registry.UnknownIdError` for an unseen
                query ID; ``"unknown_slot"`` answers it with the unknown item (row 0).
            like: ``{unseen_id: [known item IDs]}``: an unseen query ID listed here is answered
                from the mean of those items' vectors (and, with ``exclude_self``, they are left
                out of its results), before ``unknown`` applies.

        Returns:
            DataFrame, ``k`` rows per query in query order: ``query`` (raw ID), ``item`` (raw ID),
            ``score`` (float32 cosine similarity or dot product), ``rank`` (1..k), ``source``
            (``"known"``, ``"mean_of_items"`` or ``"unknown_slot"``), then the item metadata
            columns, if any.
        """
        return self._similar("items", ids, k, exclude_self=exclude_self, exclude=exclude, unknown=unknown, like=like)

    def similar_users(self, ids, k: int = 10, *, exclude_self: bool = True, exclude=None, unknown: Unknown = "raise") -> pd.DataFrame:
        """The k users most similar to each query user; as :meth:`similar_items`, with a ``user`` column."""
        return self._similar("users", ids, k, exclude_self=exclude_self, exclude=exclude, unknown=unknown)

    def recommend(
        self,
        users,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        seen: Ratings | pd.DataFrame | str | os.PathLike | SeenItems | None = None,
        exclude=None,
        unknown: Unknown = "raise",
    ) -> pd.DataFrame:
        """Top-k items for each user, in the order of the model's predicted rating.

        Args:
            users: one raw user ID or a sequence of them (one batched search); None for one
                anonymous user with no history, answered by the unknown user (row 0).
            k: items per user.
            exclude_seen: leave out the items each user rated in training, taken from ``seen``
                or else from ``fitted.seen_items`` (stored by ``fit``, saved with the model);
                when neither holds any pair this raises rather than silently recommending items
                the user already rated.
            seen: the training ratings (Ratings, a DataFrame, a file, or a :class:`SeenItems`).
            exclude: raw item IDs never to recommend (for every user).
            unknown: ``"raise"`` refuses an unseen user; ``"unknown_slot"`` ranks items for the
                unknown user (row 0): the no-history answer.

        Returns:
            DataFrame, ``k`` rows per user: ``user``, ``item``, ``score`` (float32 predicted rating,
            as :meth:`EmbeddingDotBias.predict`), ``rank``, ``source`` (``"known"`` or
            ``"unknown_slot"``), then the item metadata columns, if any. For a model with
            ``y_range=None`` (implicit feedback) the score is ``<p_u, q_i> + b_u + b_i``.
        """
        module, k = self.fitted.module, check_k(k)
        if users is None:
            query_ids, rows = np.array([None], dtype=object), np.array([UNKNOWN_ROW], dtype=np.int64)
            unknown = "unknown_slot"
        else:
            query_ids, rows = _query(module.users, users)
        self._check_unknown("user", query_ids, rows == UNKNOWN_ROW, unknown)
        source = np.where(rows == UNKNOWN_ROW, "unknown_slot", "known").astype(object)
        pairs = None
        if exclude_seen and (rows != UNKNOWN_ROW).any():  # the unknown user has seen nothing
            pairs = self._seen(seen).items_of(rows)
        weights, biases = module.tables("user")
        return self.recommend_vectors(weights[rows], biases[rows], k, ids=query_ids, source=source, rated=pairs, exclude=exclude)

    def recommend_vectors(
        self,
        vectors: np.ndarray,
        biases: np.ndarray,
        k: int = 10,
        *,
        ids=None,
        source: str | Sequence[str] = "given",
        rated: tuple[np.ndarray, np.ndarray] | None = None,
        exclude=None,
    ) -> pd.DataFrame:
        """Top-k items for users given by their vectors (e.g. folded in), by predicted rating; as :meth:`recommend`.

        Args:
            vectors: (n, n_factors) user vectors; biases: (n,) user biases (logit units).
            ids: (n,) labels for the ``user`` column; default None for each.
            source: one ``source`` for all rows or (n,) of them.
            rated: ``(positions, item_rows)``, (m,) int arrays: item table rows never to
                recommend to user ``positions[j]`` (e.g. ``FoldIn.rated_query, FoldIn.rated_rows``).
            exclude: raw item IDs never to recommend (for every user).
        """
        module, k = self.fitted.module, check_k(k)
        p = np.asarray(vectors, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != module.n_factors:
            raise ValueError(f"vectors must be (n, {module.n_factors}), got shape {p.shape}")
        bu = np.asarray(biases, dtype=np.float64).reshape(-1)
        if len(bu) != len(p):
            raise ValueError(f"biases must have one value per vector ({len(p)}), got {len(bu)}")
        if not isinstance(ids, np.ndarray):
            ids = pd.Series([None] * len(p) if ids is None else list(ids)).to_numpy()  # ints stay int64
        source = np.full(len(p), source, dtype=object) if isinstance(source, str) else np.asarray(source, dtype=object)
        if len(source) != len(p) or len(ids) != len(p):
            raise ValueError(f"ids and source must have one entry per vector ({len(p)}), got {len(ids)} and {len(source)}")
        part = self.part("recommend")
        k = min(k, max(len(module.items), 1))  # never more than the catalogue: nothing of size k beyond it is allocated
        found, ip = part.recommend(*module.tables("item"), p, k, pairs=rated, global_rows=_exclude_rows(module.items, exclude))
        score = rating_of_logits(ip + bu[:, None], module.y_range)  # y_range None: the logits themselves
        return self._frame(ids, found, score, "item", source, query_col="user")

    # --- growth and storage --------------------------------------------------------------------
    def extend(self, table: Table, rows: np.ndarray) -> None:
        """Add table rows ``rows`` (just appended by ``fitted.module.append_rows``) to the built parts.

        Rows must follow on from those the parts hold; an approximate recommend part is rebuilt
        (with a warning) when a new item is longer than its lifted norm allows for.
        """
        check_table(table)
        module = self.fitted.module
        for name, part in list(self._parts.items()):
            if part.table == table:
                self._parts[name] = part.extended(module, rows)

    def to_files(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(config entry, {"index-{part}.faiss": (n,) uint8 FAISS bytes})`` of the built parts; refuses a
        part the model no longer matches (IDs added, vectors changed: :class:`~collabemb.faiss_parts.StaleIndexError`)."""
        parts, files = parts_to_files(self._parts, self.fitted.module)
        settings = self.settings
        entry = {"metric": settings.metric, "params": settings.params(), "parts": parts}
        return entry, files

    @classmethod
    def from_stored(cls, fitted: FittedModel, stored: StoredIndex) -> SimilarityIndex:
        """The index :meth:`to_files` stored, read back and checked against ``fitted``.

        Raises :class:`~collabemb.faiss_parts.StaleIndexError` (naming the file) for a part built
        from another registry, other vectors or another size, and
        :class:`~collabemb.schema.ArtifactError` for a bad entry or bytes that are not the
        FAISS index the entry describes.
        """
        return cls.from_parts(fitted, *read_stored_parts(stored, fitted.module))

    @classmethod
    def from_parts(cls, fitted: FittedModel, settings: IndexSettings, parts: Mapping[str, Part]) -> SimilarityIndex:
        """An index over ``fitted`` searching ``parts`` (FAISS parts built or read over its tables) with ``settings``."""
        index = cls(fitted)
        index.settings, index._parts = settings, dict(parts)
        return index

    # --- internals: queries ---------------------------------------------------------------------
    def part(self, name: str) -> Part:
        """The index ``Part`` of ``name`` (``"items"``, ``"users"``, ``"recommend"``), built on first use."""
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; expected one of {', '.join(PARTS)}")
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = Part.build(name, self.fitted.module, self.settings)
        part.check_fresh(self.fitted.module)
        return part

    def _similar(
        self, part_name: str, ids, k: int, *, exclude_self: bool, exclude, unknown: Unknown, like: Mapping | None = None
    ) -> pd.DataFrame:
        table, module = PARTS[part_name], self.fitted.module
        registry = module.registry(table)
        k = min(check_k(k), max(len(registry), 1))  # never more than the table: nothing of size k beyond it is allocated
        query_ids, rows = _query(registry, ids)
        global_rows = _exclude_rows(registry, exclude)
        part = self.part(part_name)
        vectors = module.tables(table)[0][rows]
        source = np.where(rows == UNKNOWN_ROW, "unknown_slot", "known").astype(object)
        described, pairs = np.zeros(len(rows), dtype=bool), None
        if like:  # unseen items described by known ones: the mean of their vectors
            described, pairs = self._describe(query_ids, rows, like, vectors, source)
            if not exclude_self:
                pairs = None
        self._check_unknown(table, query_ids, (rows == UNKNOWN_ROW) & ~described, unknown)
        self_rows = rows if exclude_self else None
        queries = part.prepare(vectors)
        found, scores = part.search(queries, k, stride=registry.n_rows + 1, self_rows=self_rows, pairs=pairs, global_rows=global_rows)
        return self._frame(query_ids, found, scores, table, source)

    def _describe(self, query_ids: np.ndarray, rows: np.ndarray, like: Mapping, vectors: np.ndarray, source: np.ndarray):
        """Answer unseen query items listed in ``like`` from the mean of the items describing them.

        Fills ``vectors`` and ``source`` in place; returns ``(described, pairs)``: (n,) bool, and
        the (query position, describing item row) pairs (None when there are none).
        """
        items = self.fitted.module.items
        items.encode(list(like))  # like= keys of the other ID type raise TypeError, as query IDs do
        described = np.zeros(len(rows), dtype=bool)
        pair_q, pair_rows = [], []
        for j, key in enumerate(query_ids.tolist()):
            if rows[j] != UNKNOWN_ROW or key not in like:
                continue
            vectors[j], _, known = mean_of_items(self.fitted.module, like[key], key)
            source[j], described[j] = "mean_of_items", True
            pair_q.append(np.full(len(known), j, dtype=np.int64))
            pair_rows.append(known)
        pairs = (np.concatenate(pair_q), np.concatenate(pair_rows)) if pair_q else None
        return described, pairs

    def _check_unknown(self, table: str, query_ids: np.ndarray, missing: np.ndarray, unknown: Unknown) -> None:
        """Raise for unseen query IDs unless the unknown slot was asked for (and exists)."""
        if unknown not in UNKNOWN_CHOICES:
            raise ValueError(f"unknown must be 'raise' or 'unknown_slot', got {unknown!r}")
        if not missing.any():
            return
        if unknown == "raise":
            try:
                self.fitted.module.registry(table).encode(query_ids[missing], unknown="raise")
            except UnknownIdError as exc:
                raise UnknownIdError(f"{exc}; {self._unknown_hint()}") from None
        if not self.has_unknown_slot:
            raise ValueError(f"unknown='unknown_slot': this index was built from vectors and has no trained unknown {table}")

    def _unknown_hint(self) -> str:
        """How to get an answer for an unseen ID anyway (the CLI rewrites the Python words)."""
        if not self.has_unknown_slot:
            return "these vectors have no unknown slot to answer them from"
        slot = "the trained unknown slot" if self.fitted.identity.row0 == "trained" else "the unknown slot (row 0, not trained)"
        return f"pass unknown='unknown_slot' to answer from {slot}, or fold them in from ratings (collabemb.coldstart)"

    def _seen(self, seen) -> SeenItems:
        if isinstance(seen, SeenItems):
            return seen
        module = self.fitted.module
        if seen is not None:
            return SeenItems.from_ratings(_read_with_types(seen, module), module.users, module.items)
        if len(self.fitted.seen_items):
            return self.fitted.seen_items
        raise ValueError(
            "leaving out seen items needs the items each user rated in training, and the model holds none: store them "
            "with fitted.set_seen_items(train) (saved with the model), pass seen=... (the training ratings), "
            "or pass exclude_seen=False"
        )

    def _frame(
        self, query_ids: np.ndarray, rows: np.ndarray, scores: np.ndarray, table: str, source: np.ndarray, *, query_col: str = "query"
    ) -> pd.DataFrame:
        registry = self.fitted.module.registry(table)
        valid = rows != UNKNOWN_ROW
        qi, rank = np.nonzero(valid)
        flat = rows[valid]
        out = {
            query_col: np.asarray(query_ids)[qi],
            table: registry.decode(flat),
            "score": scores[valid],
            "rank": (rank + 1).astype(np.int64),
            "source": source[qi],
        }
        if table == "item":
            for col, values in self._aligned_metadata().items():
                if col not in out:
                    out[col] = values[flat]
        return pd.DataFrame(out)

    def _aligned_metadata(self) -> dict[str, np.ndarray]:
        """Item metadata columns as arrays indexed by table row (missing rows: NA), cached."""
        meta = self.fitted.item_metadata
        items = self.fitted.module.items
        if len(meta.columns) <= 1:
            return {}
        key = self._meta_key
        if key is None or key[0] is not meta or key[1] != len(meta) or key[2] is not items:
            pos = np.full(items.n_rows, -1, dtype=np.int64)
            rows = items.encode(meta["item"])
            known = rows != UNKNOWN_ROW
            pos[rows[known]] = np.flatnonzero(known)
            self._meta = {
                str(col): pd.api.extensions.take(meta[col].to_numpy(), pos, allow_fill=True) for col in meta.columns if col != "item"
            }
            self._meta_key = (meta, len(meta), items)
        return self._meta


# --- the fitted model's index, and queries on it ----------------------------------------------------


def build_index(fitted: FittedModel, parts: Sequence[str] = ("items", "recommend"), **kwargs) -> SimilarityIndex:
    """Build a :class:`SimilarityIndex` (``index_type=``, ``metric=``, ...), attach it as ``fitted.index``
    (saved with the model) and return it. ``parts`` are built now, the others on first use."""
    index = SimilarityIndex(fitted, **kwargs)
    if parts:
        index.build(*parts)
    fitted.index = index
    return index


def index_of(fitted: FittedModel) -> SimilarityIndex:
    """The search index of ``fitted``, attached as ``fitted.index``.

    A live :class:`SimilarityIndex` is returned as it is; a :class:`~collabemb.fitted.StoredIndex`
    (from :func:`~collabemb.artifact.load_model`) is read back with
    :meth:`SimilarityIndex.from_stored` (checked against the model); without one, an index with
    default settings is created, whose parts are built on first use.
    """
    current = fitted.index
    if isinstance(current, SimilarityIndex):
        if current.fitted is not fitted:
            raise ValueError(
                "fitted.index searches another FittedModel; rebuild it with collabemb.build_index(fitted) or drop it (fitted.index = None)"
            )
        return current
    if current is None:
        index = SimilarityIndex(fitted)
    elif isinstance(current, StoredIndex):
        index = SimilarityIndex.from_stored(fitted, current)
    else:
        raise TypeError(f"fitted.index is a {type(current).__name__}; expected a SimilarityIndex, a StoredIndex or None")
    fitted.index = index
    return index


def similar_items(fitted: FittedModel, ids, k: int = 10, **kwargs) -> pd.DataFrame:
    """:meth:`SimilarityIndex.similar_items` on :func:`index_of(fitted) <index_of>`."""
    k = check_k(k)  # before any index is read or built
    return index_of(fitted).similar_items(ids, k, **kwargs)


def similar_users(fitted: FittedModel, ids, k: int = 10, **kwargs) -> pd.DataFrame:
    """:meth:`SimilarityIndex.similar_users` on :func:`index_of(fitted) <index_of>`."""
    k = check_k(k)
    return index_of(fitted).similar_users(ids, k, **kwargs)


def recommend(fitted: FittedModel, users, k: int = 10, **kwargs) -> pd.DataFrame:
    """:meth:`SimilarityIndex.recommend` on :func:`index_of(fitted) <index_of>`: top-k items per user
    in predicted-rating order, seen items excluded."""
    k = check_k(k)
    return index_of(fitted).recommend(users, k, **kwargs)


# --- helpers ------------------------------------------------------------------------------------


def _query(registry: IdRegistry, ids) -> tuple[np.ndarray, np.ndarray]:
    """Query raw IDs as an array (one ID or many) and their rows (0 where unseen).

    IDs of the other ID type than the registry's raise ``TypeError`` ('7' and 7 differ).
    """
    if isinstance(ids, str | bytes | int | np.integer):
        ids = [ids]
    arr, _ = id_type_of(ids, what=f"query {registry.name} IDs")
    return arr, registry.encode(arr)


def _exclude_rows(registry: IdRegistry, exclude) -> np.ndarray | None:
    """Sorted unique rows of the known IDs in ``exclude`` (unseen ones ignored); None when empty."""
    if exclude is None:
        return None
    if isinstance(exclude, str | bytes | int | np.integer):
        exclude = [exclude]
    rows = registry.encode(exclude)  # the other ID type raises TypeError: never dropped by accident
    rows = np.unique(rows[rows != UNKNOWN_ROW])
    return rows if len(rows) else None


def mean_of_items(module: EmbeddingDotBias, described, new_id) -> tuple[np.ndarray, float, np.ndarray]:
    """An unseen item ``new_id`` described by known items (one ID or many; unseen ones raise): the (k,)
    float32 mean of their vectors, the mean of their biases, and their (m,) rows; for ``like=`` and
    :func:`collabemb.coldstart.fold_in_items_like`."""
    if isinstance(described, str | bytes | int | np.integer):
        described = [described]
    rows = module.items.encode(list(described), unknown="raise")
    if len(rows) == 0:
        raise ValueError(f"item {new_id!r}: no known items given to describe it")
    weights, biases = module.tables("item")
    return weights[rows].astype(np.float64).mean(axis=0).astype(np.float32), float(np.mean(biases[rows], dtype=np.float64)), rows


def _read_with_types(source, module: EmbeddingDotBias) -> Ratings:
    """Ratings, a DataFrame or a file, a file's ID columns read as the model's registries' types (collabemb.inputs)."""
    if isinstance(source, pd.DataFrame) and "rating" not in source.columns:
        source = source.assign(rating=np.float32(1.0))  # only the pairs are needed
    return read_ratings_for(module, source)


def _check_vectors(ids, vectors, bias, table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr, _ = id_type_of(ids, what=f"{table} IDs")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(arr):
        raise ValueError(f"{table} vectors must be (n, k) with n = {len(arr)} {table} IDs, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{table} vectors hold a NaN or an infinity")
    if pd.Index(arr).has_duplicates:
        raise ValueError(f"{table} IDs repeat an ID")
    bias = np.zeros(len(arr), np.float32) if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
    if len(bias) != len(arr):
        raise ValueError(f"{table} bias must have one value per ID ({len(arr)}), got {len(bias)}")
    return arr, vectors, bias


__all__ = ["SimilarityIndex", "StaleIndexError", "build_index", "index_of", "mean_of_items", "recommend", "similar_items", "similar_users"]
