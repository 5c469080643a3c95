"""Settings files: some :class:`~collabemb.settings.FitSettings` fields, saved as TOML or JSON.

What :meth:`collabemb.tuning.TuneResult.save` writes and ``collabemb fit --config FILE`` reads: one
flat table of FitSettings fields, by name, with the values FitSettings takes::

    # best.toml
    n_factors = 64
    lr = 0.0812
    weight_decay = 0.0413
    epochs = 23

The format follows the suffix: ``.toml`` (read with the standard library's ``tomllib``, written
here: flat scalars and the two-number ``y_range`` need nothing more) or ``.json`` (one object).
TOML has no null, so a field whose value is None is left out of a TOML file, which means the same
where the field's default is None (``lr``, ``weight_decay``...); ``valid_sample=None`` needs JSON.
Fields left out take their defaults. Pure standard library.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tomllib
from pathlib import Path
from typing import Any

from collabemb.atomic import atomic_file
from collabemb.settings import FitSettings

FORMATS: dict[str, str] = {".toml": "TOML", ".json": "JSON"}
#: Settings files are a few hundred bytes; a larger one is not a settings file.
MAX_BYTES = 1 << 20


def settings_format(path: str | os.PathLike) -> str:
    """``"TOML"`` or ``"JSON"``, from the suffix of ``path``; ValueError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: a settings file is .toml or .json, got {suffix or 'no suffix'!r}")
    return FORMATS[suffix]


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The FitSettings fields in a settings file, each checked by FitSettings.

    Returns ``{field: value}`` as the file gives them (only the fields it names). Raises
    ValueError naming the file and the key for an unknown key or a value FitSettings refuses,
    and naming the file for one that is not TOML / JSON or not a flat table.
    """
    kind = settings_format(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise type(exc)(f"{path}: cannot read the settings file ({exc.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: over {MAX_BYTES} bytes; not a settings file")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid {kind} ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of FitSettings fields, found a JSON {type(data).__name__}")
    check_settings(data, where=str(path))
    return data


def write_settings(path: str | os.PathLike, settings: dict[str, Any], *, comment: str | None = None) -> Path:
    """Write FitSettings fields to ``path`` (TOML or JSON, by its suffix), atomically.

    ``comment``: lines put at the top of a TOML file as ``#`` comments (JSON has none). The
    values are checked by FitSettings first; nothing is written when one is refused.
    """
    kind = settings_format(path)
    check_settings(settings, where="settings")
    if kind == "JSON":
        text = json.dumps({name: _json_value(value) for name, value in settings.items()}, indent=2, allow_nan=False) + "\n"
    else:
        defaults = {name: default for name, default, _ in FitSettings.describe()}
        kept_as_none = [name for name, value in settings.items() if value is None and defaults[name] is not None]
        if kept_as_none:
            raise ValueError(
                f"{path}: TOML has no null for {kept_as_none[0]}=None (its default is {defaults[kept_as_none[0]]}); write .json"
            )
        lines = [f"# {line}".rstrip() for line in (comment or "").splitlines()]
        lines += [f"{name} = {_toml_value(name, value)}" for name, value in settings.items() if value is not None]
        text = "\n".join(lines) + "\n"
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def check_settings(settings: dict[str, Any], *, where: str) -> FitSettings:
    """FitSettings made of ``settings`` (a partial set of fields), or ValueError naming ``where`` and
    the first unknown key or refused value (``where: key 'n_factors': must be >= 1, got 0``)."""
    names = FitSettings.names()
    for key, value in settings.items():
        if key not in names:
            raise ValueError(f"{where}: unknown key {key!r}; the keys are FitSettings fields: {', '.join(names)}")
        try:
            FitSettings(**{key: value})
        except ValueError as exc:
            message = str(exc)
            raise ValueError(f"{where}: key {key!r}: {message.removeprefix(key + ' ')}") from None
    try:
        return FitSettings(**settings)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _toml_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):  # FitSettings refuses them first; TOML's inf and nan are never written
            raise ValueError(f"{name}: {number} cannot be a setting")
        return repr(number)
    if isinstance(value, str):  # a TOML basic string: JSON's escapes, and DEL, which TOML also wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(name, v) for v in value) + "]"
    raise TypeError(f"{name}: a {type(value).__name__} cannot be written to a settings file")
