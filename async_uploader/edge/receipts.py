"""Receipt files (``core.receipt``): written atomically, mode 0600, never over a file that is not a receipt.

The default place is ``$ASYNC_UPLOADER_HOME/receipts/READSETID.json``; ``--receipt PATH`` names another. A write
goes to a temporary file beside the target (created exclusively, never through a symbolic link), is fsynced, then
renamed over the target, so a reader sees the old receipt or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..core.errors import CheckpointError, ConfigError
from ..core.receipt import Receipt
from .journal import uploader_home

__all__ = ["default_receipt_path", "find_receipts", "read_receipt", "write_receipt"]


def default_receipt_path(read_set_id: str) -> Path:
    return uploader_home() / "receipts" / f"{read_set_id}.json"


def read_receipt(path: Path) -> Receipt:
    """The receipt in ``path``; ConfigError (one line) when it cannot be read or is not a receipt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such receipt") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a receipt") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"{path} is not an async-uploader receipt (not JSON)") from None
    return Receipt.from_json(data, str(path))


def find_receipts(folder: Path) -> list[Path]:
    """The receipts in ``folder`` (a batch folder: its ``receipts/`` too), sorted by name."""
    found = sorted(folder.glob("*.json"))
    if (folder / "receipts").is_dir():
        found += sorted((folder / "receipts").glob("*.json"))
    return found


def write_receipt(path: Path, receipt: Receipt) -> None:
    """Write ``receipt`` to ``path`` atomically, mode 0600. CheckpointError when ``path`` holds something else
    (not a receipt, a link, a folder) or cannot be written: nothing that is not the tool's own is replaced."""
    if path.is_symlink():
        raise CheckpointError(f"receipt {path} is a symbolic link; name a regular file with --receipt")
    if path.exists():
        try:
            read_receipt(path)
        except ConfigError:
            raise CheckpointError(f"{path} exists and is not a receipt of this tool; it is left as it is") from None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(staged, flags, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(receipt.as_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(staged, path)
        except BaseException:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise
    except OSError as exc:
        raise CheckpointError(f"cannot write receipt {path}: {exc.strerror or exc}") from None
