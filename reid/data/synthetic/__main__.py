"""``python -m reid.data.synthetic OUT [options]``: write a synthetic dataset."""

import sys

from reid.data.synthetic.generate import main

if __name__ == "__main__":
    sys.exit(main())
