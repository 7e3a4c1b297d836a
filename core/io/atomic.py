"""Writing one file atomically: a hidden partial next to it, renamed into place only when complete.

The folder counterpart (a saved model) is :func:`core.io.saving.atomic_folder`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import write_error
from core.partials import journaled, ordinary_permissions, partial_path


@contextmanager
def atomic_file(path: Path, doing: str) -> Iterator[Path]:
    """Yield the hidden partial of ``path`` to write; when the block ends it is renamed onto ``path``.

    The partial lives next to ``path`` (same disk, so the rename is atomic) and is noted in the leftovers
    journal while the block runs.  It gets ordinary permissions before the rename and is deleted whatever
    happens, so a failure leaves nothing half-written; an ``OSError`` (a full disk, no permission) in the
    block or the rename becomes one :func:`core.errors.write_error` line about ``doing`` (e.g. "writing
    the card") into ``path``.
    """
    with journaled(partial_path(path)) as partial:
        try:
            yield partial
            ordinary_permissions(partial)
            os.replace(partial, path)
        except OSError as exc:
            raise write_error(exc, path, doing) from exc
        finally:
            partial.unlink(missing_ok=True)
