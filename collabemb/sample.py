"""Synthetic MovieLens-style ratings with a planted, known low-rank structure.

:func:`generate_sample` draws a catalogue of items (titles, genres), users with tastes, who
rated which item and when, and the ratings themselves from an explicit generative model, so a
matrix-factorisation model trained on the output has a known right answer: the planted factors
and biases returned alongside the ratings. :func:`write_sample` writes ``ratings.csv`` and
``items.csv``; ``python -m collabemb.sample OUT_DIR`` does the same from the command line. The
committed ``datasets/sample`` was made with ``python -m collabemb.sample datasets/sample``;
``datasets/README.md`` describes the model in prose.

The model, in the order it is drawn (every constant is a named module constant below):

* **Items** get 1-3 of the 18 :data:`GENRES` (popular genres such as Drama and Comedy more
  often), a unique title like ``"The Silent Harbor (1994)"`` and a popularity weight
  ``(rank + offset) ** -1`` over a random ranking (a Zipf law with a flattened head).
* **Planted factors**, ``k = len(GENRES) + N_FREE_FACTORS`` columns. Columns ``0..17`` are
  genres: a user's taste for each genre, and an item's genre indicator divided by
  ``sqrt(number of its genres)``. Columns ``18..`` are free factors with no catalogue meaning.
* **Biases**: user bias ~ normal; item bias = popularity term (popular items rate higher) +
  mean genre offset (e.g. Film-Noir higher, Horror lower) + normal noise.
* **Activity**: user *u* rates ``n_u = 20 + extra`` items, ``extra`` lognormal, scaled so the
  total is exactly ``n_ratings`` and capped at ``max(20, n_items // 2)`` per user.
* **Exposure** (which items a user rated): successive draws without replacement, each from
  a mixture of global popularity and "pick a genre the user likes, then an item of that genre
  by popularity". Co-occurrence therefore carries taste, as in real implicit feedback.
* **Ratings**: ``clip(rint(global + b_u + b_i + <u_u, v_i> + noise), 1, 5)``, integers.
* **Timestamps**: each user is active over one contiguous period (lognormal length, median
  about two months) inside a two-year window; ratings are uniform inside that period.

Everything is vectorised numpy over ratings (no Python loop per rating or per user), so a
25M-rating, 162k-user, 59k-item set takes well under a minute. Output depends only on the
arguments and ``seed``; numpy's ``Generator`` streams are stable within a numpy version (a new
numpy release may in principle change them, which the sample-equality test would catch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collabemb.atomic import atomic_file

#: The 18 MovieLens genres, in the order of the genre columns of the planted factors.
GENRES: tuple[str, ...] = tuple(
    (
        "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film-Noir Horror Musical "
        "Mystery Romance Sci-Fi Thriller War Western"
    ).split()
)
#: Relative frequency of each genre in the catalogue (about MovieLens-25M counts / 100).
GENRE_WEIGHTS: tuple[float, ...] = (73, 41, 29, 29, 169, 53, 56, 256, 27, 4, 60, 11, 29, 77, 36, 87, 19, 14)
#: Offset added to the item bias per genre (mean over the item's genres), rating points.
GENRE_BIAS: tuple[float, ...] = tuple(
    float(v) for v in "-0.10 -0.05 0.10 -0.15 -0.10 0.05 0.25 0.15 -0.05 0.30 -0.35 0.05 0.05 0.00 -0.10 -0.05 0.20 0.05".split()
)
#: Probability that an item has 1, 2 or 3 genres.
GENRE_COUNT_PROBS: tuple[float, ...] = (0.45, 0.35, 0.20)

#: Number of planted factors beyond the genre ones.
N_FREE_FACTORS = 4
#: Standard deviation of a user's taste for one genre, rating points per unit item genre weight.
GENRE_TASTE_SD = 0.55
#: Standard deviation of each free user factor and each free item factor.
FREE_FACTOR_SD = 0.55
#: Constant term of every score, rating points. Users are shown more of what they like, so
#: the observed mean rating is higher: about 3.55 for the defaults, 3.6 for 25M ratings.
GLOBAL_MEAN = 3.25
#: Standard deviation of user biases, rating points.
USER_BIAS_SD = 0.4
#: Item bias per standard deviation of log popularity, rating points.
POPULARITY_BIAS = 0.2
#: Standard deviation of the item-specific part of item biases, rating points.
ITEM_BIAS_SD = 0.3
#: Per-rating noise is ``NOISE_SD * normal - NOISE_LEFT_TAIL * (exponential - 1)``: mean zero,
#: sd about 0.67 rating points, skewed left (occasional disappointments), which makes 4 the
#: most common rating and gives the long low tail real ratings have.
NOISE_SD = 0.45
NOISE_LEFT_TAIL = 0.5

#: Popularity weight of the item with popularity rank r (0-based) is (r + offset) ** -exponent,
#: offset = POPULARITY_OFFSET * n_items: a Zipf law whose head is flattened.
POPULARITY_EXPONENT = 1.0
POPULARITY_OFFSET = 0.01
#: Fraction of a user's draws that pick a genre by taste first (the rest: global popularity).
TASTE_EXPOSURE_SHARE = 0.5
#: How sharply taste-driven draws prefer liked genres: weight = genre frequency * exp(this * taste).
TASTE_EXPOSURE_SHARPNESS = 2.0

#: Every user rates at least this many items (as in MovieLens).
MIN_RATINGS_PER_USER = 20
#: Sigma of the lognormal number of ratings beyond the minimum.
ACTIVITY_SIGMA = 1.3

#: Ratings fall in [WINDOW_START, WINDOW_END) unix seconds: 2018-01-01 to 2020-01-01 UTC.
WINDOW_START = 1_514_764_800
WINDOW_END = 1_577_836_800
#: Median length of a user's active period in seconds (60 days), and the lognormal sigma.
ACTIVE_PERIOD_MEDIAN = 60 * 86_400
ACTIVE_PERIOD_SIGMA = 1.5
#: Shortest active period in seconds (one hour).
ACTIVE_PERIOD_MIN = 3_600

_TITLE_ADJECTIVES: tuple[str, ...] = tuple(
    (
        "Silent Last Broken Golden Hidden Crimson Endless Forgotten Frozen Burning Distant Dark Bright Lonely "
        "Secret Wild Quiet Lost Savage Gentle Midnight Electric Iron Silver Hollow Restless Fading Sacred "
        "Wicked Little Great Final Eternal Shattered Painted Stolen Whispering Falling Rising Cold Velvet "
        "Scarlet Northern Southern Hungry Brave Strange Empty Blind Crooked Sleeping Running Bitter Sweet "
        "Long Open Wandering Deadly Perfect Invisible"
    ).split()
)
_TITLE_NOUNS: tuple[str, ...] = tuple(
    (
        "Harbor River Mountain City Garden Night Summer Winter Road Sky Ocean Forest Kingdom Empire Storm "
        "Fire Shadow Dream Promise Journey Station Island Desert Valley Bridge Tower Mirror Letter Song Heart "
        "Stranger Witness Detective Soldier Outlaw Gambler Prophet Thief Queen King Machine Planet Horizon "
        "Frontier Castle Village Circus Hotel Train Voyage Harvest Memory Legend Game Hunter Ghost Angel "
        "Dragon Wolf Raven Lighthouse Carnival Border Canyon Orchard Symphony Masquerade Paradise Affair "
        "Silence Echo Tide Sun Moon Star Rain Wind Snow Dawn Dusk"
    ).split()
)
#: Probabilities of the title patterns "The {adjective} {noun}", "{adjective} {noun}",
#: "{noun} of the {other noun}" and "The {noun}", in that order.
_TITLE_PATTERN_PROBS: tuple[float, ...] = (0.4, 0.3, 0.25, 0.05)
#: Release years in titles, with weight growing by this factor per year (recent films dominate).
_YEAR_FIRST, _YEAR_LAST, _YEAR_GROWTH = 1930, 2019, 1.04


@dataclass(frozen=True)
class SampleData:
    """A generated data set and the model it was drawn from.

    Attributes:
        ratings: one row per rating, sorted by (user, timestamp, item); columns ``user``
            (int64, 1..n_users), ``item`` (int64, 1..n_items), ``rating`` (int64, 1..5) and
            ``timestamp`` (int64, unix seconds). No (user, item) pair occurs twice.
        items: one row per item, sorted by ``item``; columns ``item`` (int64, 1..n_items),
            ``title`` (str, unique, e.g. ``"The Silent Harbor (1994)"``) and ``genres`` (str,
            MovieLens style, e.g. ``"Action|Comedy"``, genres in :data:`GENRES` order).
        user_factors: (n_users, k) float32 planted tastes, row ``u - 1`` is user id ``u``;
            ``k = len(GENRES) + N_FREE_FACTORS``, columns ``0..17`` are genre tastes in
            :data:`GENRES` order, the rest free factors.
        item_factors: (n_items, k) float32 planted item factors, row ``i - 1`` is item id
            ``i``; genre columns hold ``indicator / sqrt(number of genres)``.
        user_bias: (n_users,) float32 planted user biases, rating points.
        item_bias: (n_items,) float32 planted item biases, rating points.
        global_mean: the constant the model adds to every score, rating points.

    The noise-free score of a pair is ``global_mean + user_bias[u-1] + item_bias[i-1] +
    user_factors[u-1] @ item_factors[i-1]``; a rating is that plus noise, rounded and clipped.
    """

    ratings: pd.DataFrame
    items: pd.DataFrame
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_mean: float


def generate_sample(n_users: int = 900, n_items: int = 1600, n_ratings: int = 90_000, *, seed: int = 0) -> SampleData:
    """Draw a synthetic MovieLens-style data set; see the module docstring for the model.

    Args:
        n_users: number of users, ids ``1..n_users``; every one gets at least 20 ratings.
        n_items: number of items, ids ``1..n_items``; at least 20. Some tail items may get
            no rating (they still appear in ``items``).
        n_ratings: number of ratings; hit exactly. Must lie between ``20 * n_users`` and
            ``n_users * max(20, n_items // 2)`` (the per-user cap).
        seed: seed for ``np.random.default_rng``; same arguments and seed give identical output.

    Returns:
        The :class:`SampleData` with ratings, items and the planted model.

    Raises:
        ValueError: if the sizes are not positive integers or ``n_ratings`` is out of range.
    """
    n_users, n_items, n_ratings = _check_sizes(n_users, n_items, n_ratings)
    # Independent streams, so that e.g. the catalogue depends only on (n_items, seed).
    rng_items, rng_users, rng_exposure, rng_ratings = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))

    genre_matrix = _draw_item_genres(rng_items, n_items)
    titles = _draw_titles(rng_items, n_items)
    popularity = _draw_popularity(rng_items, n_items)
    item_factors = _item_factors(rng_items, genre_matrix)
    item_bias = _item_bias(rng_items, genre_matrix, popularity)

    user_factors = _user_factors(rng_users, n_users)
    user_bias = (rng_users.standard_normal(n_users) * USER_BIAS_SD).astype(np.float32)
    counts = _ratings_per_user(rng_users, n_users, n_items, n_ratings)

    draw = _exposure_sampler(rng_exposure, user_factors, genre_matrix, popularity)
    users, items = _sample_distinct(counts, n_items, draw)

    timestamps = _draw_timestamps(rng_ratings, users, n_users)
    rating = _draw_ratings(rng_ratings, users, items, user_factors, item_factors, user_bias, item_bias)
    ratings = _ratings_frame(users, items, rating, timestamps)
    catalogue = pd.DataFrame(
        {
            "item": np.arange(1, n_items + 1, dtype=np.int64),
            "title": pd.array(titles, dtype=str),
            "genres": pd.array(_genre_strings(genre_matrix), dtype=str),
        }
    )
    return SampleData(
        ratings=ratings,
        items=catalogue,
        user_factors=user_factors,
        item_factors=item_factors,
        user_bias=user_bias,
        item_bias=item_bias,
        global_mean=GLOBAL_MEAN,
    )


def write_sample(directory: str | os.PathLike, **generate_kwargs) -> Path:
    """Generate a data set and write ``ratings.csv`` and ``items.csv`` into ``directory``.

    Each file is written atomically (:func:`collabemb.atomic.atomic_file`), so a reader never
    sees a half-written file (the pair is replaced one file after the other, not as a unit). The directory is created if missing. CSVs have a header
    row, ``,`` separators and ``\\n`` line ends; columns as in :class:`SampleData`.

    Args:
        directory: where to write.
        **generate_kwargs: passed to :func:`generate_sample` (``n_users``, ``n_items``,
            ``n_ratings``, ``seed``).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.
    """
    data = generate_sample(**generate_kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_csv_atomic(data.ratings, directory / "ratings.csv")
    _write_csv_atomic(data.items, directory / "items.csv")
    return directory


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV (header, ``,``, ``\\n`` line ends) to ``path``, atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")


def _check_sizes(n_users: int, n_items: int, n_ratings: int) -> tuple[int, int, int]:
    """Validate the sizes; return them as Python ints."""
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    n_users, n_items, n_ratings = int(n_users), int(n_items), int(n_ratings)
    if n_items < MIN_RATINGS_PER_USER:
        raise ValueError(f"n_items must be at least {MIN_RATINGS_PER_USER} (every user rates that many distinct items), got {n_items}")
    cap = _max_ratings_per_user(n_items)
    if not MIN_RATINGS_PER_USER * n_users <= n_ratings <= cap * n_users:
        raise ValueError(
            f"n_ratings must lie in [{MIN_RATINGS_PER_USER} * n_users, "
            f"{cap} * n_users] = [{MIN_RATINGS_PER_USER * n_users}, {cap * n_users}] "
            f"for n_users={n_users}, n_items={n_items}; got {n_ratings}"
        )
    return n_users, n_items, n_ratings


def _max_ratings_per_user(n_items: int) -> int:
    """Most ratings one user may get: half the catalogue, but at least the minimum."""
    return max(MIN_RATINGS_PER_USER, n_items // 2)


def _draw_item_genres(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items, len(GENRES)) bool: 1-3 distinct genres per item, drawn by GENRE_WEIGHTS.

    Weighted sampling without replacement via the Gumbel-top-k trick: the largest
    ``log(weight) + Gumbel`` keys of a row are a weighted draw without replacement.
    """
    n_genres = len(GENRES)
    n_per_item = 1 + rng.choice(len(GENRE_COUNT_PROBS), size=n_items, p=GENRE_COUNT_PROBS)
    keys = np.log(np.asarray(GENRE_WEIGHTS)) + rng.gumbel(size=(n_items, n_genres))
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)  # 0 = largest key
    return ranks < n_per_item[:, None]


def _genre_strings(genre_matrix: np.ndarray) -> np.ndarray:
    """(n_items,) object array of "Action|Comedy"-style strings from the genre matrix."""
    names = np.asarray(GENRES, dtype=object)
    out = np.full(genre_matrix.shape[0], "", dtype=object)
    for g in range(len(GENRES)):  # loop over 18 genres, vectorised over items
        has = genre_matrix[:, g]
        sep = np.where(out[has] == "", "", "|")
        out[has] = out[has] + sep + names[g]
    return out


def _draw_titles(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items,) object array of unique titles like "The Silent Harbor (1994)".

    Draws every title at once, then redraws only the duplicates until none are left.
    """
    adjectives = np.asarray(_TITLE_ADJECTIVES, dtype=object)
    nouns = np.asarray(_TITLE_NOUNS, dtype=object)
    years = np.arange(_YEAR_FIRST, _YEAR_LAST + 1)
    year_p = _YEAR_GROWTH ** (years - _YEAR_FIRST)
    year_p /= year_p.sum()
    n_distinct = years.size * (2 * adjectives.size * nouns.size + nouns.size * (nouns.size - 1) + nouns.size)
    if n_items > n_distinct // 4:
        raise ValueError(f"n_items={n_items} is too many for unique titles (at most {n_distinct // 4})")

    def draw(n: int) -> np.ndarray:
        pattern = rng.choice(len(_TITLE_PATTERN_PROBS), size=n, p=_TITLE_PATTERN_PROBS)
        a = adjectives[rng.integers(adjectives.size, size=n)]
        n1 = rng.integers(nouns.size, size=n)
        n2 = (n1 + rng.integers(1, nouns.size, size=n)) % nouns.size  # differs from n1
        noun, noun2 = nouns[n1], nouns[n2]
        year = rng.choice(years, size=n, p=year_p).astype(str).astype(object)
        base = np.select(
            [pattern == 0, pattern == 1, pattern == 2],
            ["The " + a + " " + noun, a + " " + noun, noun + " of the " + noun2],
            default="The " + noun,
        )
        return base + " (" + year + ")"

    titles = draw(n_items)
    for _ in range(1000):
        _, first = np.unique(titles, return_index=True)
        duplicate = np.ones(n_items, dtype=bool)
        duplicate[first] = False
        if not duplicate.any():
            return titles
        titles[duplicate] = draw(int(duplicate.sum()))
    raise RuntimeError("could not draw unique titles")  # pragma: no cover - space is 4x n_items


def _draw_popularity(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items,) float64 popularity weights summing to 1: a Zipf law over a random ranking."""
    rank = rng.permutation(n_items)
    weight = (rank + POPULARITY_OFFSET * n_items + 1.0) ** -POPULARITY_EXPONENT
    return weight / weight.sum()


def _item_factors(rng: np.random.Generator, genre_matrix: np.ndarray) -> np.ndarray:
    """(n_items, k) float32: genre indicator / sqrt(#genres), then N_FREE_FACTORS normals."""
    genre_part = genre_matrix / np.sqrt(genre_matrix.sum(axis=1, keepdims=True))
    free = rng.standard_normal((genre_matrix.shape[0], N_FREE_FACTORS)) * FREE_FACTOR_SD
    return np.hstack([genre_part, free]).astype(np.float32)


def _item_bias(rng: np.random.Generator, genre_matrix: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(n_items,) float32 item biases: popularity term + mean genre offset + noise."""
    log_pop = np.log(popularity)
    pop_term = POPULARITY_BIAS * (log_pop - log_pop.mean()) / log_pop.std()
    genre_term = genre_matrix @ np.asarray(GENRE_BIAS) / genre_matrix.sum(axis=1)
    noise = rng.standard_normal(popularity.size) * ITEM_BIAS_SD
    return (pop_term + genre_term + noise).astype(np.float32)


def _user_factors(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """(n_users, k) float32: genre tastes (sd GENRE_TASTE_SD), then free factors."""
    tastes = rng.standard_normal((n_users, len(GENRES))) * GENRE_TASTE_SD
    free = rng.standard_normal((n_users, N_FREE_FACTORS)) * FREE_FACTOR_SD
    return np.hstack([tastes, free]).astype(np.float32)


def _ratings_per_user(rng: np.random.Generator, n_users: int, n_items: int, n_ratings: int) -> np.ndarray:
    """(n_users,) int64 ratings per user: at least 20, at most the cap, summing to n_ratings.

    ``20 + s * w`` with lognormal weights ``w``, capped (water-filling: ``s`` is found by
    bisection so the capped total is exact), then rounded by largest remainder.
    """
    room = _max_ratings_per_user(n_items) - MIN_RATINGS_PER_USER
    extra_total = n_ratings - MIN_RATINGS_PER_USER * n_users
    weight = rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
    lo, hi = 0.0, room / weight.min()
    for _ in range(200):  # bisection on the scale s; 200 halvings reach float precision
        mid = 0.5 * (lo + hi)
        if np.minimum(room, mid * weight).sum() < extra_total:
            lo = mid
        else:
            hi = mid
    extra = np.minimum(room, hi * weight)
    base = np.floor(extra).astype(np.int64)
    short = extra_total - int(base.sum())
    fraction = np.where(base < room, extra - base, -1.0)
    base[np.argsort(-fraction, kind="stable")[:short]] += 1
    return base + MIN_RATINGS_PER_USER


def _exposure_sampler(
    rng: np.random.Generator, user_factors: np.ndarray, genre_matrix: np.ndarray, popularity: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``draw(users) -> items``: one item index per user index, drawn independently.

    Each draw is, with probability TASTE_EXPOSURE_SHARE, "genre by the user's taste, then
    item of that genre by popularity", else "item by global popularity". Inverse-CDF sampling
    with ``np.searchsorted``; per-user (and per-genre) CDFs are laid out as one flat increasing
    array by adding the row number, so one ``searchsorted`` serves all rows.
    """
    n_users = user_factors.shape[0]
    n_genres = len(GENRES)

    global_cdf = np.cumsum(popularity)
    global_cdf[-1] = 1.0

    # genres without items (possible in tiny catalogues) get weight 0 and are never picked
    genre_freq = np.asarray(GENRE_WEIGHTS) * genre_matrix.any(axis=0)
    logits = TASTE_EXPOSURE_SHARPNESS * user_factors[:, :n_genres].astype(np.float64)
    taste_w = genre_freq * np.exp(logits - logits.max(axis=1, keepdims=True))
    taste_cdf = np.cumsum(taste_w, axis=1) / taste_w.sum(axis=1, keepdims=True)
    taste_cdf[:, -1] = 1.0
    taste_flat = (taste_cdf + np.arange(n_users)[:, None]).ravel()

    genre_of, item_of = np.nonzero(genre_matrix.T)  # grouped by genre, items ascending
    genre_start = np.searchsorted(genre_of, np.arange(n_genres))
    genre_end = np.searchsorted(genre_of, np.arange(n_genres), side="right")
    member_w = popularity[item_of]
    member_cdf = np.cumsum(member_w)
    before = np.concatenate([[0.0], member_cdf])[genre_start]
    member_cdf = (member_cdf - before[genre_of]) / np.bincount(genre_of, weights=member_w)[genre_of]
    member_cdf[genre_end - 1] = 1.0
    member_flat = member_cdf + genre_of

    def draw(users: np.ndarray) -> np.ndarray:
        n = users.size
        items = np.empty(n, dtype=np.int64)
        by_taste = rng.random(n) < TASTE_EXPOSURE_SHARE
        n_pop = n - int(by_taste.sum())
        items[~by_taste] = np.minimum(np.searchsorted(global_cdf, rng.random(n_pop), side="right"), popularity.size - 1)
        u = users[by_taste]
        genre = np.searchsorted(taste_flat, u + rng.random(u.size), side="right") - u * n_genres
        genre = np.clip(genre, 0, n_genres - 1)  # guards u + x rounding up to u + 1
        pos = np.searchsorted(member_flat, genre + rng.random(u.size), side="right")
        pos = np.clip(pos, genre_start[genre], genre_end[genre] - 1)
        items[by_taste] = item_of[pos]
        return items

    return draw


def _sample_distinct(counts: np.ndarray, n_items: int, draw: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Give user ``u`` exactly ``counts[u]`` distinct items from repeated ``draw`` calls.

    Successive sampling without replacement, vectorised over users: draw somewhat more
    candidates than needed per user, drop (user, item) pairs already held or seen earlier in
    the round (keys ``user * n_items + item``), keep each user's first ``needed`` new items in
    draw order; repeat for users still short with a doubled oversampling factor (heavy users
    near the per-user cap need several rounds, light users almost never a second one).

    Returns:
        ``(users, items)``: int64 0-based index arrays of length ``counts.sum()``, sorted by
        ``users * n_items + items``.
    """
    need = counts.astype(np.int64).copy()
    held = np.empty(0, dtype=np.int64)  # sorted keys of accepted pairs
    factor = 1.15
    for _ in range(64):  # typically 3-4 rounds; each round doubles the oversampling factor
        active = np.flatnonzero(need > 0)
        if active.size == 0:
            return held // n_items, held % n_items
        n_draws = np.minimum(np.ceil(need[active] * factor).astype(np.int64) + 2, 64 * n_items)
        users = np.repeat(active, n_draws)
        keys = users * n_items + draw(users)
        if held.size:
            at = np.minimum(np.searchsorted(held, keys), held.size - 1)
            fresh = held[at] != keys
            users, keys = users[fresh], keys[fresh]
        first = _first_occurrence(keys)
        users, keys = users[first], keys[first]
        rank = _rank_within_runs(users)
        keep = rank < need[users]
        need -= np.bincount(users[keep], minlength=need.size)
        held = np.sort(np.concatenate([held, keys[keep]]))
        factor *= 2.0
    raise RuntimeError("sampling distinct items did not converge")  # pragma: no cover


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """Bool mask, True at the first occurrence of each value of ``keys`` (in array order)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat = np.empty(keys.size, dtype=bool)  # True where a sorted key equals the one before
    repeat[:1] = False
    np.equal(sorted_keys[1:], sorted_keys[:-1], out=repeat[1:])
    mask = np.ones(keys.size, dtype=bool)
    mask[order[repeat]] = False
    return mask


def _rank_within_runs(values: np.ndarray) -> np.ndarray:
    """int64 position of each element within its run of equal consecutive ``values``."""
    n = values.size
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    lengths = np.diff(np.append(starts, n))
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def _draw_timestamps(rng: np.random.Generator, users: np.ndarray, n_users: int) -> np.ndarray:
    """(n,) int64 unix seconds, one per entry of ``users`` (0-based user indices).

    Each user gets one contiguous active period (lognormal length) inside
    [WINDOW_START, WINDOW_END); their ratings are uniform within it.
    """
    window = WINDOW_END - WINDOW_START
    length = ACTIVE_PERIOD_MEDIAN * rng.lognormal(0.0, ACTIVE_PERIOD_SIGMA, n_users)
    length = np.clip(length, ACTIVE_PERIOD_MIN, window).astype(np.int64)
    start = WINDOW_START + (rng.random(n_users) * (window - length + 1)).astype(np.int64)
    offset = (rng.random(users.size) * length[users]).astype(np.int64)
    return start[users] + offset


def _draw_ratings(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
) -> np.ndarray:
    """(n,) int8 ratings 1..5: ``clip(rint(global + b_u + b_i + <u, v> + noise), 1, 5)``."""
    score = _interaction(user_factors, item_factors, users, items)
    score += GLOBAL_MEAN
    score += user_bias[users]
    score += item_bias[items]
    score += rng.standard_normal(users.size) * NOISE_SD
    score -= (rng.standard_exponential(users.size) - 1.0) * NOISE_LEFT_TAIL
    np.rint(score, out=score)
    np.clip(score, 1, 5, out=score)
    return score.astype(np.int8)


def _ratings_frame(users: np.ndarray, items: np.ndarray, rating: np.ndarray, timestamps: np.ndarray) -> pd.DataFrame:
    """The ratings DataFrame (1-based int64 ids), sorted by (user, timestamp, item).

    ``users, items`` must come sorted by (user, item): then a stable sort on one int64
    (user, timestamp) key gives (user, timestamp, item) order, far faster than ``np.lexsort``.
    The four int64 columns share one preallocated block, so pandas does not copy them.
    """
    window = WINDOW_END - WINDOW_START
    order = np.argsort(users * window + (timestamps - WINDOW_START), kind="stable")
    block = np.empty((users.size, 4), dtype=np.int64, order="F")
    np.add(users[order], 1, out=block[:, 0])
    np.add(items[order], 1, out=block[:, 1])
    block[:, 2] = rating[order]
    block[:, 3] = timestamps[order]
    return pd.DataFrame(block, columns=["user", "item", "rating", "timestamp"], copy=False)


def _interaction(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(n,) float64 ``<user_factors[users], item_factors[items]>``, one factor column at a time.

    Column by column keeps memory at a few (n,) arrays instead of two (n, k) gathers.
    """
    u_cols = np.ascontiguousarray(user_factors.T)
    v_cols = np.ascontiguousarray(item_factors.T)
    out = np.zeros(users.size, dtype=np.float64)
    for f in range(u_cols.shape[0]):
        out += u_cols[f][users] * v_cols[f][items]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collabemb.sample OUT_DIR [--users N --items N --ratings N --seed S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m collabemb.sample", description="Write a synthetic MovieLens-style ratings.csv and items.csv into OUT_DIR."
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="directory to write into")
    parser.add_argument("--users", type=int, default=900, help="number of users (default 900)")
    parser.add_argument("--items", type=int, default=1600, help="number of items (default 1600)")
    parser.add_argument("--ratings", type=int, default=90_000, help="number of ratings (default 90000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        out = write_sample(args.out_dir, n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {out / 'ratings.csv'} and {out / 'items.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
