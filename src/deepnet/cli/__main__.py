"""``python -m deepnet.cli``: the ``deepnet`` command."""

import sys

from deepnet.cli import main

sys.exit(main())
