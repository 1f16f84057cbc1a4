"""The seeded corpus generator, for the benchmark scripts.

It lives in the package (``dtproto._corpus``) so that ``dtproto bench`` works
from an installed wheel; this module re-exports it under its old name.
"""

import os
import sys

try:  # an installed dtproto wins; otherwise the checkout this script lives in
    import dtproto  # noqa: F401
except ImportError:
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dtproto._corpus import *  # noqa: E402,F401,F403
from dtproto._corpus import __all__, make_corpus  # noqa: E402,F401

if __name__ == "__main__":  # a quick look: python bench/corpus.py [n] [--escape]
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 10
    sys.stdout.write(make_corpus(n, escape_heavy="--escape" in sys.argv).decode("utf-8"))
