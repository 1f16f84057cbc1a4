"""``python -m dtproto``: the same command line as the ``dtproto`` script."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a multiprocessing child re-imports __main__
    sys.exit(main())
