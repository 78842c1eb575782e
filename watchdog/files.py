"""Files other programs read while the watchdog writes them (the proxy's config, the rotation, compose overrides)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str, durable: bool = True) -> None:
    """Readers see the old file or the new one, never half of one (temp file in the same folder, then rename).

    `durable`: fsync before the rename; the rotation file, rewritten every cycle, skips it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_if_changed(path: str | Path, text: str, keep_previous: bool = False) -> bool:
    """False, and the file untouched (its mtime too), when it already holds `text`.

    `keep_previous`: the replaced version is kept as `<name>.previous` (a config a proxy may reject).
    """
    target = Path(path)
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
        if target.read_text(encoding="utf-8") == text:
            return False
        if keep_previous:
            shutil.copyfile(target, target.with_name(target.name + ".previous"))
    write_atomic(target, text)
    return True
