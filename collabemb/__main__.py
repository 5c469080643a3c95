"""``python -m collabemb`` runs the command line."""

import sys

from collabemb.cli import main

sys.exit(main())
