"""The worker process's export templates (see :mod:`odeserve.solver.templates`).

One cache per process and directory: a forking worker's parent preloads the templates on disk
before each job, with their saved archives, so that its work horse inherits them in memory and
writes a ``torch.export`` model in about a millisecond instead of tracing one (about half a
second) and saving it (60-90 ms).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

from common.settings import Settings

if TYPE_CHECKING:
    from odeserve.solver.templates import ExportTemplates

log = logging.getLogger("odeserve.worker")


@functools.cache
def export_templates(directory: str) -> ExportTemplates:
    """The process's :class:`~odeserve.solver.templates.ExportTemplates` for ``directory``
    (memoised: a process cache, like ``functools.cache`` itself)."""
    from odeserve.solver.templates import ExportTemplates

    return ExportTemplates(directory=directory)


def templates_for(settings: Settings) -> ExportTemplates | None:
    """The templates this worker uses, or None when ``ODESERVE_EXPORT_CACHE_DIR`` is empty."""
    return export_templates(settings.export_cache_dir) if settings.export_cache_dir else None


def preload(settings: Settings) -> None:
    """Load new template files into the parent's memory (loading touches no autograd or GPU);
    never fails a job."""
    templates = templates_for(settings)
    if templates is not None:
        with contextlib.suppress(Exception):
            loaded = templates.preload()
            if loaded:
                log.info("export templates preloaded", extra={"templates": loaded})
