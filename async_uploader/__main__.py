"""``python -m async_uploader`` runs the command line."""

from .cli import main

raise SystemExit(main())
