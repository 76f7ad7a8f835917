"""``python -m deepnet``: the same as the ``deepnet`` command."""

from deepnet.cli import main

raise SystemExit(main())
