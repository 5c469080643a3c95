"""``python -m collabemb`` runs the command line."""

import sys

from collabemb.cli import main

if __name__ == "__main__":
    sys.exit(main())
