"""The model card: ``MODEL_CARD.md`` of an artifact, what a model is and what it may be used for.

:func:`model_card` writes Markdown from what a :class:`~collabemb.fitted.FittedModel` holds, and
nothing else: its identity, its registries and training pairs, and what its fit recorded in
``history.params``. The fit records the facts of its data there for the card (:func:`data_facts`:
rating range, time span, user and item counts) and the versions of the libraries it ran with
(:func:`library_versions`); a fact a model does not hold (one fitted before it was recorded, an
imported model) is said to be unknown, never guessed. The sections:

* **Data**: users, items, training ratings (interactions), validation ratings, stored training
  pairs, the rating range, the time span of the timestamps, item metadata, the rarely rated IDs;
* **Settings**: the fit's settings as a table;
* **Validation**: last and best validation RMSE and their epochs (or why there are none);
* **Library versions**: recorded at fit time, else those of the process writing the card (said so);
* **Row 0**: what the unknown slot holds; any ID not in training maps there;
* **Intended use and limits**: ratings or rankings, fold-in, noisy rare IDs, target leakage.

:mod:`collabemb.artifact` stores the card beside the model; ``collabemb info`` prints it
(:func:`info_report`). The text the card adds itself is ASCII, so any terminal shows it.
"""

from __future__ import annotations

import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from collabemb.data import Ratings
from collabemb.fitted import FittedModel
from collabemb.registry import IdRegistry

#: Families trained by the ``implicit`` library (their fits record its version).
IMPLICIT_FAMILIES: tuple[str, ...] = ("als", "bpr", "lmf")
#: ``history.params`` keys that are facts of the data or the run, not settings (shown in other sections).
FACT_KEYS: tuple[str, ...] = (
    "n_train",
    "n_valid",
    "n_interactions",
    "n_dropped",
    "n_users",
    "n_items",
    "rating_min",
    "rating_max",
    "time_min",
    "time_max",
    "versions",
    "implicit_version",
    "fit_seconds",
)
#: An ID with fewer training pairs than this is called rarely rated.
RARE = 5
#: Distribution names FAISS is installed under, in the order they are looked for.
_FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss")
_FAMILY_TEXT = {
    "rating": "a rating model (collabemb.fit: dot product plus biases through a sigmoid)",
    "als": "an implicit-feedback model: alternating least squares, trained by the implicit library",
    "bpr": "an implicit-feedback model: Bayesian personalised ranking, trained by the implicit library",
    "lmf": "an implicit-feedback model: logistic matrix factorisation, trained by the implicit library",
    "popularity": "the popularity baseline: every item scored by its count of training interactions",
    "vectors": "vectors imported for similarity search (SimilarityIndex.from_vectors), not trained here",
}

_SVDPP_TEXT = (
    " Its users' vectors are history-aware (model='svdpp', Koren's SVD++): each stored user vector is the user's"
    " own vector plus the normalised sum of the history vectors (y_weight) of the items it rated in training;"
    " a new user's vector starts from that sum over the items it rated."
)


# --- what a fit records ------------------------------------------------------------------------


def data_facts(ratings: Ratings, users: IdRegistry, items: IdRegistry) -> dict:
    """What a fit records of its training data for the card (``history.params`` entries).

    Returns ``rating_min`` and ``rating_max`` (float, of the rows' ratings or interaction values),
    ``time_min`` and ``time_max`` (ISO-8601 UTC strings such as ``"2001-09-09T01:46:40Z"``, from
    the int64 unix-second ``timestamp`` column; None without one) and ``n_users``, ``n_items``
    (the IDs the fitted registries know, row 0 not counted).
    """
    values = ratings.frame["rating"].to_numpy()
    facts = {
        "rating_min": float(values.min()) if len(values) else None,
        "rating_max": float(values.max()) if len(values) else None,
        "time_min": None,
        "time_max": None,
        "n_users": len(users),
        "n_items": len(items),
    }
    if ratings.has_timestamp and len(values):
        seconds = ratings.frame["timestamp"].to_numpy()
        facts["time_min"], facts["time_max"] = _iso_utc(seconds.min()), _iso_utc(seconds.max())
    return facts


def _iso_utc(seconds) -> str:
    """Unix seconds as ISO-8601 UTC (numpy's calendar reaches every int64 second, unlike datetime's)."""
    return str(np.datetime_as_string(np.datetime64(int(seconds), "s"), timezone="UTC"))


def library_versions(family: str) -> dict[str, str | None]:
    """``{library: version}`` of this process: collabemb, python, torch, numpy, pandas, faiss, and
    implicit for the families it trains; None for one not installed. Read from the installed
    distributions' metadata: nothing is imported."""
    found = {"collabemb": _installed("collabemb"), "python": platform.python_version()}
    found.update({name: _installed(name) for name in ("torch", "numpy", "pandas")})
    found["faiss"] = _installed(*_FAISS_DISTRIBUTIONS)
    if family in IMPLICIT_FAMILIES:
        found["implicit"] = _installed("implicit")
    return found


def _installed(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


# --- the card ----------------------------------------------------------------------------------


def model_card(fitted: FittedModel) -> str:
    """The Markdown model card of ``fitted`` (``MODEL_CARD.md``), from the facts the model holds."""
    identity = fitted.identity
    title = f"# Model card: {identity.family} model (EmbeddingDotBias, {fitted.n_factors} factors)"
    sections = [
        title
        + "\n\n"
        + f"This is {_FAMILY_TEXT[identity.family]}.{_SVDPP_TEXT if identity.rating_model == 'svdpp' else ''}{_imported(fitted)}",
        "## Data\n\n" + _data(fitted),
        "## Settings\n\n" + _settings(fitted),
        "## Validation\n\n" + _validation(fitted),
        "## Library versions\n\n" + _versions(fitted),
        "## Row 0, the unknown slot\n\n" + _row0(fitted),
        "## Intended use and limits\n\n" + _use(fitted),
    ]
    return "\n\n".join(sections) + "\n"


def info_report(fitted: FittedModel, config: dict, path: Path, card: str | None) -> str:
    """What ``collabemb info`` prints: where the artifact is, its format, family, row 0 and index, then its card
    (``card``, the stored ``MODEL_CARD.md``; None for an artifact written before cards: the card is
    generated now from the loaded model, and the first line says so)."""
    lines = []
    if card is None:
        lines.append("(this artifact has no MODEL_CARD.md, it was written before collabemb stored one: the card below was generated now)")
        card = model_card(fitted)
    lines.append(f"artifact      {path}")
    lines.append(f"format        {config['model']}, schema {config['schema_version']}, created {config.get('created', 'not recorded')}")
    identity = fitted.identity
    lines.append(f"family        {identity.family}; fold-in for new IDs: {identity.fold_in or 'none (row 0 answers them)'}")
    lines.append(f"row 0         the unknown slot, {identity.row0_text}; any ID not in training maps there")
    if config.get("index"):
        lines.append("index         " + ", ".join(f"{k} {v}" for k, v in config["index"].items() if k != "files"))
    else:
        lines.append("index         none stored (collabemb index builds one)")
    return _printable("\n".join(lines) + "\n\n" + card.rstrip("\n"))


#: Control characters other than tab and newline: a card read from a file could move the cursor or
#: recolour a terminal with them, so ``collabemb info`` shows them escaped.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _data(fitted: FittedModel) -> str:
    params, implicit = fitted.history.params, fitted.identity.family != "rating"
    what = "Input interactions" if implicit else "Training ratings"
    n_train, n_valid, sample = _number(params, "n_train"), _number(params, "n_valid"), _number(params, "valid_sample")
    rows = [
        f"- Users: {_ids(fitted.users, _number(params, 'n_users'))}",
        f"- Items: {_ids(fitted.items, _number(params, 'n_items'))}",
        f"- {what}: {_NOT_RECORDED if n_train is None else _value(n_train)}",
    ]
    kept, dropped = _number(params, "n_interactions"), _number(params, "n_dropped")
    if kept is not None and dropped and fitted.identity.threshold is not None:
        rows.append(f"  ({_value(kept)} kept, {_value(dropped)} below the threshold {_value(fitted.identity.threshold)} dropped)")
    if n_valid is not None:
        sampled = f" (per-epoch RMSE on a fixed sample of {_value(sample)})" if sample and sample < n_valid else ""
        rows.append(f"- Validation ratings: {_value(n_valid) if n_valid else 'none'}{sampled}")
    rows.append(f"- Training (user, item) pairs stored: {len(fitted.seen_items)} (recommend and evaluate leave them out)")
    label = "Value range of the input rows" if implicit else "Rating range"
    low, high = _number(params, "rating_min"), _number(params, "rating_max")
    rows.append(f"- {label}: " + (_NOT_RECORDED if low is None or high is None else f"{_value(low)} to {_value(high)}"))
    if params.get("time_min") is not None:
        rows.append(f"- Time span (UTC): {_value(params['time_min'])} to {_value(params.get('time_max'))}")
    else:
        rows.append("- Time span: " + ("no timestamps" if "time_min" in params else _NOT_RECORDED))
    if not fitted.item_metadata.empty:
        meta = fitted.item_metadata
        rows.append(f"- Item metadata: {len(meta)} rows; columns {', '.join(map(str, meta.columns))}")
    return "\n".join(rows)


_NOT_RECORDED = "not recorded (the fit did not record it)"
_STOPPED_BY = {"early_stopping": "early stopping", "callback": "the on_epoch callback", "interrupted": "Ctrl-C"}


def _number(params: dict, key: str) -> float | int | None:
    """``params[key]`` when it is a number; None when absent or anything else (a card is written from
    whatever an artifact's history holds, and never fails on it)."""
    value = params.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ids(registry: IdRegistry, at_fit: float | None) -> str:
    first = ", ".join(repr(v) for v in registry.ids[:5].tolist()) + (", ..." if len(registry) > 5 else "")
    added = (
        f"; {_value(at_fit)} at fit time, {_value(len(registry) - at_fit)} added since"
        if at_fit is not None and at_fit != len(registry)
        else ""
    )
    return f"{len(registry)} {registry.id_type} IDs (rows 1..{len(registry)}{added}); first: {first}"


def _settings(fitted: FittedModel) -> str:
    params, identity = fitted.history.params, fitted.identity
    shown = {k: v for k, v in params.items() if k not in FACT_KEYS}
    for key, value in identity.to_dict().items():
        if key not in ("family", "row0") and value is not None and key not in shown:
            shown[key] = value
    if not shown:
        return "None recorded (the model holds no fit settings)."
    width = max(len("setting"), *(len(k) for k in shown))
    lines = [f"| {'setting':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {key:<{width}} | {_value(value)} |" for key, value in shown.items()]
    return "\n".join(lines)


def _value(value) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, float):
        text = f"{value:.10g}"
    else:
        text = "none" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _validation(fitted: FittedModel) -> str:
    h, params, family = fitted.history, fitted.history.params, fitted.identity.family
    if not h.epoch:
        if family in (*IMPLICIT_FAMILIES, "popularity"):
            seconds = _number(params, "fit_seconds")
            took = f" in {seconds:.2f} s" if seconds is not None else ""
            return f"One-solve model: fitted in one call{took}, no epochs, no validation set. Measure it with collabemb.evaluate on held-out interactions."
        if family == "vectors":
            return "Imported vectors: no fit, no validation set."
        source = f" (imported from {_value(params['source'])})" if "source" in params else ""
        return f"No epochs recorded{source}: the model was not trained by collabemb.fit, and no validation RMSE is known."
    planned = _number(params, "epochs") or len(h.epoch)
    ran = f"{len(h.epoch)} of {planned} epochs ran" + (f", stopped by {_STOPPED_BY[h.stop_reason]}" if h.stop_reason else "")
    seconds = f" in {sum(h.seconds):.2f} s" if h.seconds else ""
    last = f"Training RMSE after the last epoch ({h.epoch[-1]}): {h.train_rmse[-1]:.4f}."
    if h.valid_rmse[-1] is None:
        return f"{ran}{seconds}. No validation set: nothing measured how well it predicts ratings it has not seen. {last}"
    text = f"{ran}{seconds}. Validation RMSE after the last epoch ({h.epoch[-1]}): {h.valid_rmse[-1]:.4f}"
    if h.best_epoch is not None and h.best_epoch in h.epoch:
        text += f"; best {h.valid_rmse[h.epoch.index(h.best_epoch)]:.4f} at epoch {h.best_epoch}"
    text += f". {last}"
    if params.get("early_stopping") is not None and h.best_epoch is not None and h.best_epoch != h.epoch[-1]:
        text += f" The stored weights are those of epoch {h.best_epoch} (early stopping keeps the best)."
    return text


def _versions(fitted: FittedModel) -> str:
    params = fitted.history.params
    recorded = params.get("versions")
    if isinstance(recorded, dict):
        note, found = "Recorded at fit time.", dict(recorded)
    else:
        note = "Not recorded at fit time: these are the versions of the process that wrote this card, not of the fit."
        found = library_versions(fitted.identity.family)
        if "implicit_version" in params:
            found["implicit"] = f"{_value(params['implicit_version'])} (recorded at fit time)"
    lines = [note, "", "| library   | version |", "|-----------|---------|"]
    lines += [f"| {name:<9} | {_value(v) if v is not None else 'not installed'} |" for name, v in found.items()]
    return "\n".join(lines)


def _imported(fitted: FittedModel) -> str:
    """A sentence for a model trained elsewhere (``params["source"]``, e.g. fastai via from_fastai); else empty."""
    params = fitted.history.params
    if params.get("source") != "fastai":
        return ""
    return (
        f" Trained by fastai {_value(params.get('fastai_version'))} and imported with collabemb.from_fastai; "
        "the library versions below are those of the import."
    )


def _row0(fitted: FittedModel) -> str:
    return (
        f"Row 0 of the user table and of the item table is the unknown slot. What it holds: {fitted.identity.row0_text}. "
        'Any user or item ID not in training maps there (unknown="unknown_slot", the default); '
        'unknown="raise" (--unknown raise) refuses such IDs instead.'
    )


def _use(fitted: FittedModel) -> str:
    identity, params = fitted.identity, fitted.history.params
    family = identity.family
    if family == "rating" and fitted.y_range is not None:
        lo, hi = fitted.y_range
        low, high = _number(params, "rating_min"), _number(params, "rating_max")
        seen = f" (the training ratings ranged {_value(low)} to {_value(high)})" if low is not None and high is not None else ""
        use = f"Predicts ratings: a sigmoid maps every score into y_range {_value(lo)} to {_value(hi)}{seen}, so no prediction leaves that range."
    elif family == "rating":
        use = "Predicts ratings as the score <p_u, q_i> + b_u + b_i itself: the model has no y_range, so predictions are not bounded."
    elif family == "popularity":
        use = "Ranks items by their training interaction count, the same list for every user: a baseline, not a personalised model."
    elif family == "vectors":
        use = "Scores are similarities of the imported vectors; nothing here was trained on ratings."
    else:
        use = (
            "Ranks items for a user: the score <p_u, q_i> + b_u + b_i orders one user's items; "
            "it is not a rating or a probability, and scores of different users are not comparable."
        )
    items = [use, _fold_in(fitted)]
    if family not in ("popularity", "vectors"):  # factor models: rows fitted to data
        items += [_rare(fitted), _leak(family)]
    items.append("This card states only what the model holds: who the users are and how the data was collected are not recorded.")
    return "\n".join(f"- {item}" for item in items)


def _leak(family: str) -> str:
    text = (
        "Features from this model for the rows it was trained on leak the target: its embeddings and biases were fitted to "
        "those very rows, so a downstream model trained on them trusts them more than they deserve on new rows. "
    )
    if family == "rating":
        return text + (
            "For features of training rows use collabemb.EmbeddingFeatures, whose fit_transform cross-fits "
            "(each fold's features come from a model that did not see that fold)."
        )
    return text + (
        "Cross-fit them: give each fold's rows features from a model fitted without that fold "
        "(collabemb.EmbeddingFeatures does this for rating models)."
    )


def _fold_in(fitted: FittedModel) -> str:
    identity = fitted.identity
    if identity.fold_in == "rating":
        decay = f" with weight_decay {_value(identity.weight_decay)}" if identity.weight_decay is not None else ""
        return (
            "New users and items can be folded in from a few of their ratings (collabemb.fold_in_users, fold_in_items, "
            f"recommend_from_ratings; collabemb recommend --ratings), solving the training objective{decay} for them alone."
        )
    if identity.fold_in == "als":
        return (
            "New users can be folded in from their interactions with ALS's closed-form solve (collabemb.fold_in_als), "
            f"regularization {_value(identity.regularization)}, alpha {_value(identity.alpha)}."
        )
    return "No fold-in applies to this family: a new ID is answered by row 0 until the model is retrained."


def _rare(fitted: FittedModel) -> str:
    text = "Embeddings of rarely rated IDs are noisy: a row fitted to a handful of ratings says more about those ratings than about the ID."
    seen = fitted.seen_items
    if not len(seen):
        return text + " The model stores no training pairs, so how many IDs that concerns is not known."
    per_user = np.diff(seen.padded(fitted.users.n_rows).indptr)[1 : fitted.users.n_rows]
    per_item = seen.pairs_per_item(fitted.items.n_rows)
    rare_users, rare_items = int(np.sum(per_user < RARE)), int(np.sum(per_item < RARE))
    return (
        text + f" Here {rare_users} of {len(fitted.users)} users and {rare_items} of {len(fitted.items)} items have fewer than "
        f"{RARE} training pairs (median {_value(float(np.median(per_user)))} per user, {_value(float(np.median(per_item)))} per item)."
    )
