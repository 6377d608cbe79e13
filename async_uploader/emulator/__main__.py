"""``python -m async_uploader.emulator``: the local sequence store."""

import sys

from .cli import main

sys.exit(main())
