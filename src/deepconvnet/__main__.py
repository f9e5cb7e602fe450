"""Allow ``python -m deepconvnet``."""

from deepconvnet.cli import main

raise SystemExit(main())
