"""What a case is, and what it gets to work with: the world, its own empty directory, a launcher."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import files
from .children import Launcher, Run
from .verdicts import Verdict
from .world import NOBODY, QUERY_TIMEOUT, World

CASE_TIMEOUT = 300.0


class Skip(Exception):
    """This case does not apply to the artifact at hand (it holds, "not applicable")."""


@dataclass
class Ctx:
    """What a case gets: the world, its own empty directory, and a launcher."""

    world: World
    dir: Path

    @property
    def launcher(self) -> Launcher:
        return self.world.launcher

    def copy(self, base: str = "A") -> Path:
        return files.copy_tree(self.world.arts[base], self.dir / "ART")

    def cli(self, argv: list, *, timeout: float = QUERY_TIMEOUT, uid: int | None = None) -> Run:
        return self.launcher.run(argv=[str(a) for a in argv], cwd=self.dir, timeout=timeout, uid=uid)

    def signature(self, art: Path) -> dict:
        return self.world.signature(art, cwd=self.dir)

    def subst(self, art: Path | None, token: str) -> str:
        """``ART`` -> the case's artifact copy, ``RATINGS`` / ``PAIRS`` -> the world's files, ``DIR/`` -> the case's directory."""
        if token == "ART":
            return str(art)
        if token == "RATINGS":
            return str(self.world.data["ratings"])
        if token == "PAIRS":
            return str(self.world.data["pairs"])
        return token.replace("DIR/", str(self.dir) + "/")

    def nobody(self) -> int | None:
        """The user a permission case runs as: nobody when the harness is root, else the harness's own (None)."""
        if os.geteuid() != 0:
            return None
        if not self.world.nobody_ok:
            raise Skip("a child cannot run as nobody here")
        return NOBODY


@dataclass
class Case:
    kind: str
    name: str
    fn: Callable[[Ctx], Verdict]
    timeout: float = CASE_TIMEOUT
    group: str = ""  # post-processing across cases (the checkpoint series)


def fit_sane(ctx: Ctx, run: Run, art: Path | None) -> str | None:
    """A fit that succeeded must have written a loadable model with finite predictions."""
    sig = ctx.signature(ctx.dir / "OUT")
    if not sig.get("ok"):
        return f"exit 0 but the artifact written does not load: {sig.get('error', '')[:150]}"
    if not sig.get("finite"):
        return "exit 0 and wrote a model whose predictions are NaN / infinite"
    return None
