"""The command line's parser pieces: option types with ranges, the one-line argument error, the
help that shows defaults, the ratings-reading options, and the library's words translated into
this command line's flags. Standard library only, so ``collabemb --help`` starts without torch.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import types
import typing

from collabemb.settings import ENGINES, LR_SCHEDULES, MAX_THREADS, MODELS, FitSettings, shown

EXIT_BUG = 1
EXIT_ERROR = 2

# Choices written out so that the parser needs no heavy import; tests/test_cli.py checks each
# against the library's own constant.
FORMATS: tuple[str, ...] = ("parquet", "csv", "npy", "projector")  # collabemb.export.FORMATS
TEXT_DIGITS = 9  # collabemb.export.TEXT_DIGITS
INDEX_TYPES: tuple[str, ...] = ("exact", "hnsw", "ivf")  # collabemb.faiss_parts.INDEX_TYPES
INDEX_PARTS: tuple[str, ...] = ("items", "users", "recommend")  # collabemb.faiss_parts.PARTS
METRICS: tuple[str, ...] = ("cosine", "dot")  # collabemb.faiss_parts.METRICS
UNKNOWN: tuple[str, ...] = ("raise", "unknown_slot")  # collabemb.registry.UNKNOWN_CHOICES
UNKNOWN_HELP = "IDs the model never saw: fail, or answer with the trained row 0 (the unknown slot)"
IMPLICIT_MODELS: tuple[str, ...] = ("als", "bpr", "lmf")  # collabemb.implicit_mf.FAMILIES
WEIGHTINGS: tuple[str, ...] = ("binary", "raw", "log")  # collabemb.implicit_mf.WEIGHTINGS
#: ``--regularization`` help; tests/test_cli.py checks it against collabemb.implicit_mf.DEFAULTS.
IMPLICIT_DEFAULTS_HELP = "als 20, bpr 0.01, lmf 0.6"


def option_type(kind: type, lo: float | None = None, hi: float | None = None, *, above: bool = False, below: bool = False):
    """A command-line option's type: text to an int (``kind=int``) or a finite float within the bounds
    (``lo <= v <= hi``; ``above``, ``below``: strictly), else an argparse error saying them."""
    bounds = [f"{'>' if above else '>='} {lo:g}"] if lo is not None else []
    bounds += [f"{'<' if below else '<='} {hi if kind is int else format(hi, 'g')}"] if hi is not None else []
    wanted = ("an integer" if kind is int else "a finite number") + (" " + " and ".join(bounds) if bounds else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        low_ok = lo is None or (value > lo if above else value >= lo)
        if not (math.isfinite(value) and low_ok and (hi is None or (value < hi if below else value <= hi))):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {shown(value)}")
        return value

    parse.__name__ = kind.__name__
    return parse


K = option_type(int, 1)  # a list length; the library clamps it to the catalogue, so no upper bound
THREADS = option_type(int, 1, MAX_THREADS)
FINITE = option_type(float)


# --- the command line: options, their help and errors, and its words for the library's ---------------


class Parser(argparse.ArgumentParser):
    """An argument error is one line, as every other error of the command line: ``collabemb: error: argument -k: ...``."""

    def error(self, message: str):
        self.exit(2, f"collabemb: error: {one_line(message)} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (or "required") unless it already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = re.sub(r"%(?!\(default\)s)", "%%", action.help or "")  # argparse %-formats help
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.required:
            return f"{text} (required)"
        default = action.default
        shown = "none" if default is None else " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


#: The options of collabemb.data.read_ratings (train.READ_OPTIONS), and its MovieLens layouts (data.LAYOUTS),
#: written out so that the command line's parser needs no heavy import; tests/test_cli.py checks both.
READ_OPTIONS: tuple[str, ...] = ("user_col", "item_col", "rating_col", "timestamp_col", "layout", "sep", "duplicates", "id_type")
LAYOUTS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest")


def add_read_options(p: argparse.ArgumentParser) -> None:
    """The options of collabemb.data.read_ratings, named alike (``user_col`` -> ``--user-col``)."""
    g = p.add_argument_group("reading ratings")
    g.add_argument("--user-col", default="user", help="user ID column")
    g.add_argument("--item-col", default="item", help="item ID column")
    g.add_argument("--rating-col", default="rating", help="rating (or weight) column")
    g.add_argument("--timestamp-col", help="timestamp column (default: 'timestamp' when the file has one)")
    g.add_argument("--layout", choices=LAYOUTS, help="a MovieLens file layout; the column options are then ignored")
    g.add_argument("--sep", help="field separator (default: guessed from the first line)")
    g.add_argument("--duplicates", choices=("last", "raise", "mean"), default="last", help="repeated (user, item) pairs")
    g.add_argument("--id-type", choices=("int", "str"), help="force the ID type (default: inferred)")


def read_options(args: argparse.Namespace) -> dict:
    """The reading options given (:func:`add_read_options`), as collabemb.data.read_ratings's keyword arguments."""
    return {name: getattr(args, name) for name in READ_OPTIONS}


def writing(out: str):
    """Hold ``--out``'s writer lock from before any data is read until the artifact is saved: an
    unusable ``--out`` (a file, a foreign directory, another fit writing it) is refused at once."""
    from collabemb.store import writer_lock

    return writer_lock(out)


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


#: Python argument words in library messages (regex; groups ``name`` and ``value``) and the flags
#: this command line says instead (a format string; ``name`` comes with dashes for underscores).
FLAG_WORDS: tuple[tuple[str, str], ...] = (
    (r"\bunknown=['\"](?P<value>unknown_slot|raise)['\"]", "--unknown {value}"),
    (r"\bexclude_seen=False\b", "--include-seen"),
    (r"\bunknown_row=False\b", "--no-unknown-row"),
    (r"\b(?P<name>train|valid|seen)=(?:\.\.\.)?", "--{name} FILE"),
    (r"\b(?:model|fitted)\.set_seen_items\(train\)", "collabemb fit"),
    (r"\bmetadata=True\b", "--stored-metadata"),
    (r"\bpass a DataFrame\b", "pass --metadata FILE"),
    (r"\b(?P<name>table|index_type|metric|engine|device|format|lr_schedule)=['\"](?P<value>[\w:.-]+)['\"]", "--{name} {value}"),
    (r"\b(?P<name>" + "|".join(FitSettings.names()) + r"|threshold|digits)(?=\s+(?:must|needs|applies)\b)", "--{name}"),
    (r"\bk(?=\s+must\b)", "-k"),
)


def cli_words(message: str) -> str:
    """A library message with its Python argument words replaced by this command line's flags."""

    def flag(match: re.Match, template: str) -> str:
        groups = match.groupdict()
        return template.format(name=(groups.get("name") or "").replace("_", "-"), value=groups.get("value"))

    for pattern, template in FLAG_WORDS:
        message = re.sub(pattern, lambda m, t=template: flag(m, t), message)
    return message


def expected_errors() -> tuple[type[BaseException], ...]:
    """What a command refuses (exit 2), as against a bug (evaluated only once an exception is on its way out)."""
    from collabemb.registry import UnknownIdError  # RatingsError, ArtifactError are ValueErrors

    return (UnknownIdError, ValueError, TypeError, OSError, FloatingPointError, OverflowError, MemoryError, ModuleNotFoundError)


def report_error(exc: Exception, args: argparse.Namespace | None) -> int:
    """Say ``exc`` in one line; the exit status: 2 for what a command refuses, 1 for a bug."""
    text, name = one_line(cli_words(str(exc))), type(exc).__name__
    if not isinstance(exc, expected_errors()):
        print(
            f"collabemb: error: internal error, {name}{': ' * bool(text)}{text} (a bug); rerun with --debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_BUG
    if isinstance(exc, MemoryError):
        text = f"out of memory{f' ({text})' if text else ''}"
    elif isinstance(exc, FloatingPointError | OverflowError | ModuleNotFoundError):
        text = f"{name}: {text}"
    if isinstance(exc, KeyError) and vars(args or argparse.Namespace()).get("unknown") == "raise" and "--unknown" not in text:
        text += "; pass --unknown unknown_slot to answer them with the trained unknown slot (row 0)"
    print(f"collabemb: error: {text}", file=sys.stderr)
    return EXIT_ERROR


def add_settings_options(group, **defaults) -> None:
    """One command-line option per FitSettings field (``n_factors`` -> ``--n-factors``) in an argparse
    group, typed from the field, with its help and default (or ``defaults``'); checked by FitSettings.
    Then ``--config FILE``, a settings file (collabemb.settings_file) whose fields replace the defaults;
    the options given on the command line replace the file's (each one given is noted in ``args.given``)."""
    hints = typing.get_type_hints(FitSettings)
    group.set_defaults(given=frozenset())
    for name, default, help in FitSettings.describe():
        flag, default, value_type = "--" + name.replace("_", "-"), defaults.get(name, default), hints[name]
        if isinstance(value_type, types.UnionType):  # float | None -> float
            value_type = next(arg for arg in typing.get_args(value_type) if arg is not type(None))
        if value_type is bool:
            group.add_argument(flag, action=_GivenFlag, default=default, help=help)
        elif typing.get_origin(value_type) is tuple:
            value_type = typing.get_args(value_type)[0]
            group.add_argument(flag, action=_Given, nargs=2, type=value_type, metavar=("LO", "HI"), default=default, help=help)
        else:
            choices = {"engine": ENGINES, "lr_schedule": LR_SCHEDULES, "model": MODELS}.get(name)
            metavar = None if choices else value_type.__name__.upper()
            group.add_argument(flag, action=_Given, type=value_type, choices=choices, metavar=metavar, default=default, help=help)
    group.add_argument(
        "--config",
        metavar="FILE",
        help="a settings file (.toml or .json, as collabemb tune writes) read first; options given here override it",
    )


class _Given(argparse.Action):
    """Store the value, and note the option as given on the command line (so that it overrides ``--config``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = namespace.given | {self.dest}


class _GivenFlag(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``, noted as given on the command line."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.given = namespace.given | {self.dest}


def given_settings(args: argparse.Namespace) -> dict:
    """The FitSettings fields that ``--config`` and the command line set, the command line's winning
    (each checked: the file's naming the file and the key), in the order of the FitSettings fields."""
    from_file = {}
    if args.config is not None:
        from collabemb.settings_file import read_settings

        from_file = read_settings(args.config)
    given = {**from_file, **{name: getattr(args, name) for name in args.given}}
    return {name: given[name] for name in FitSettings.names() if name in given}  # in the fields' order


def settings_from_options(args: argparse.Namespace) -> FitSettings:
    """The settings of a command line (:func:`add_settings_options`): the options' defaults, then
    ``--config``'s fields, then the options given; checked, the device too."""
    settings = FitSettings(**{**{name: getattr(args, name) for name in FitSettings.names()}, **given_settings(args)})
    settings.check_device()
    return settings
