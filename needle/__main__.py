"""``python -m needle``: the same as the ``needle`` command (see :mod:`needle.cli`)."""

import sys

from needle.cli import main

if __name__ == "__main__":
    sys.exit(main())
