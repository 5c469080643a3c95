"""``python -m collabemb`` and the ``collabemb`` console script: :func:`collabemb.cli.main` as a process.

What only the process can do, around :func:`~collabemb.cli.main` (which reports errors, Ctrl-C
and a closed stdout while a command runs):

* **Ctrl-C at any moment** exits 130 with the one line ``collabemb: interrupted``: the handler
  is installed here first, before the command line (and torch, pandas...) is imported; a Ctrl-C
  during the imports raises KeyboardInterrupt inside :func:`entry`, and one after the command
  (the last flush, the interpreter's shutdown) ends the process at once.
* **A closed stdout** (``collabemb similar ART 1 | head -1``) exits 141 (128 + SIGPIPE, as
  coreutils) without a word: what is left to write is dropped, by pointing stdout at
  ``os.devnull``, so that the interpreter's last flush has nothing to complain about either.
"""

import contextlib
import os
import signal
import sys

#: The exit statuses of collabemb.cli (not imported here: the handler comes first).
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141


def _interrupt(signum, frame) -> None:
    """Ctrl-C before and while the command runs: KeyboardInterrupt (not Python's own handler, so that
    collabemb.fit stops without a message of its own; :func:`collabemb.cli.main` says the line)."""
    raise KeyboardInterrupt


def _leave(signum, frame) -> None:
    """Ctrl-C once the command has ended: nothing is left to clean up, so leave at once."""
    if not _said[0]:
        _say_interrupted()
    os._exit(EXIT_INTERRUPTED)


def _say_interrupted() -> None:
    with contextlib.suppress(OSError):  # stderr closed too: nowhere to say it
        os.write(2, b"collabemb: interrupted\n")


_said = [False]  # whether "collabemb: interrupted" was printed
_handling = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when Ctrl-C is ignored (a background job)
if _handling:
    signal.signal(signal.SIGINT, _interrupt)


def entry(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status (:mod:`collabemb.cli`'s), once stdout is flushed."""
    code = None
    try:
        from collabemb.cli import main

        code = main(argv)
        if code != EXIT_PIPE:
            sys.stdout.flush()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        _ctrl_c_leaves(said=False)
        _say_interrupted()
    except BrokenPipeError:
        code = EXIT_PIPE
    except OSError as exc:  # the last flush failed (a full disk...): one line, as collabemb.cli says errors
        code = 2
        print(f"collabemb: error: cannot write the output: {exc}", file=sys.stderr)
    finally:
        _ctrl_c_leaves(said=code == EXIT_INTERRUPTED)
    if code == EXIT_PIPE:
        _drop_stdout()
    return code


def _ctrl_c_leaves(*, said: bool) -> None:
    _said[0] = _said[0] or said
    if _handling:
        signal.signal(signal.SIGINT, _leave)


def _drop_stdout() -> None:
    """Point stdout (and stderr: the same pipe, often) at os.devnull: nothing more reaches the reader."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a stream without a file descriptor: nothing to point
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(entry())
