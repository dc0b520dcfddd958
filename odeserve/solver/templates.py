"""Exported programs per architecture: ``torch.export`` once, then swap the buffers.

``torch.export`` traces a model in about half a second, longer than training a small problem
takes. Everything that differs between two problems of one architecture (weights, output
scales, constraint plan, domain) lives in the trial's buffers, which an exported program keeps
as inputs in its ``state_dict``; the graph depends only on the architecture. So a worker keeps
one traced program per architecture and, for each new solution, writes that solution's buffers
into its saved archive (below). The file runs exactly as a fresh export's does (tested).

A forking worker starts every job in a new process, so the cache can also live on disk
(``directory``): a template traced by one job is loaded by the next in about 0.1 s instead of a
0.5 s trace. Files are written atomically and named by the architecture and the torch version.

Saving a program serialises its graph again every time (60-90 ms a job on this project's 2-core
machine, most of a small job's fixed cost). So each template is saved once
(:class:`TemplateArchive`), and a solution's file is that archive with its own buffers' bytes
as the weight records and its own extra files: about a millisecond. An archive whose layout is
not the one this relies on (checked when it is made) is not reused: the program is then saved
whole, as a fresh export is.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from odeserve.solver.trial import Trial

#: Architectures kept (least recently used dropped first): a worker sees few distinct ones.
DEFAULT_CAPACITY = 32

Key = tuple[object, ...]


def architecture(trial: Trial) -> Key:
    """What the traced graph depends on: layer sizes, activation, constraint structure and the
    shapes and dtypes of every buffer."""
    shapes = tuple((name, tuple(b.shape), str(b.dtype)) for name, b in trial.named_buffers())
    return (tuple(trial.sizes), trial.activation, trial.has_constraints, trial.key_max_order, trial.n_params, shapes)


def trace(module: Trial) -> torch.export.ExportedProgram:
    """``torch.export`` of a CPU float64 trial, with a dynamic number of points."""
    cols = 1 + module.n_params  # the variable, then a parametric model's ranged parameters
    example = torch.linspace(-1.0, 1.0, 8 * cols, dtype=torch.float64).reshape(8, cols)
    n = torch.export.Dim("n", min=1)
    return torch.export.export(module, (example,), dynamic_shapes=({0: n},))


def digest(key: Key) -> str:
    """A template's name: the architecture and the torch version that traced it."""
    return hashlib.sha256(repr((key, torch.__version__)).encode()).hexdigest()[:32]


#: Where a saved program's records lie under its archive's root folder.
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_SERIAL_ID = ".data/serialization_id"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class TemplateArchive:
    """One saved archive of a template program, to write its architecture's other files from:
    the archive's records (zip entries) as ``torch.export.save`` wrote them, and the record that
    holds each buffer's raw bytes (the program's weights, in its weights config). A solution of the
    architecture differs only in those records and in its extra files."""

    records: dict[str, bytes] = field(repr=False)
    weights: dict[str, str]  # buffer name -> its record
    root: str  # the archive's root folder, "archive/"

    @classmethod
    def of(cls, program: torch.export.ExportedProgram) -> TemplateArchive | None:
        """The archive of ``program``; None where it cannot be reused: weights that are not each
        one contiguous tensor of raw bytes in a record of its own (pickled, strided, sharing a
        storage), constants, or a format this does not read (another torch)."""
        try:
            archive = cls._read(program)
        except (KeyError, ValueError, TypeError, zipfile.BadZipFile):
            return None
        if archive is None:
            return None
        state = {name: program.state_dict[name] for name in archive.weights}
        saved = {record: archive.records[record] for record in archive.weights.values()}
        return archive if archive.weight_records(state) == saved else None  # its own bytes back

    @classmethod
    def _read(cls, program: torch.export.ExportedProgram) -> TemplateArchive | None:
        buf = io.BytesIO()
        torch.export.save(program, buf)
        with zipfile.ZipFile(buf) as z:
            # The serialization id is derived from the template's own bytes, not a solution's:
            # left out (it is optional; a reader then reports none).
            records = {i.filename: z.read(i.filename) for i in z.infolist() if not i.filename.endswith(_SERIAL_ID)}
        config = next((name for name in records if name.endswith(_WEIGHTS_CONFIG)), None)
        if config is None:
            return None
        root = config[: -len(_WEIGHTS_CONFIG)]
        metas = json.loads(records[config])["config"]
        constants = json.loads(records.get(root + _CONSTANTS_CONFIG, b'{"config": {}}'))["config"]
        weights = {name: f"{root}data/weights/{meta['path_name']}" for name, meta in metas.items()}
        # Empty buffers may share a record (of no bytes); others must each have their own.
        filled = [record for record in weights.values() if records.get(record)]
        shared = len(set(filled)) < len(filled)
        if constants or shared or any(meta.get("use_pickle") for meta in metas.values()):
            return None
        return cls(records, weights, root)

    def weight_records(self, buffers: dict[str, Tensor]) -> dict[str, bytes]:
        """Each weight record's bytes for ``buffers``."""
        return {record: _raw_bytes(buffers[name]) for name, record in self.weights.items()}

    def write(self, buffers: dict[str, Tensor], extra_files: dict[str, str]) -> bytes:
        """The archive with ``buffers`` as its weights and ``extra_files`` (name -> text). The
        architecture (:func:`architecture`) fixes every buffer's shape and dtype, so each record
        keeps its length."""
        swap = self.weight_records(buffers)
        swap.update({f"{self.root}extra/{name}": text.encode() for name, text in extra_files.items()})
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, data in list(self.records.items()) + [(n, d) for n, d in swap.items() if n not in self.records]:
                # A fixed date: the same solution gives the same bytes.
                z.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), swap.get(name, data))
        return out.getvalue()


def _raw_bytes(t: Tensor) -> bytes:
    """A tensor's bytes as a program's weight record holds them: contiguous, native order."""
    return t.detach().cpu().contiguous().numpy().tobytes()


class ExportTemplates:
    """An LRU cache of exported programs by architecture, in memory and optionally on disk."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, directory: str | Path | None = None) -> None:
        self.capacity = capacity
        self.directory = Path(directory) if directory is not None else None
        self._programs: OrderedDict[str, torch.export.ExportedProgram] = OrderedDict()
        self._archives: dict[str, TemplateArchive | None] = {}
        self.hits = 0
        self.misses = 0

    def program(self, module: Trial) -> torch.export.ExportedProgram:
        """An exported program of ``module`` (CPU, float64) holding its buffers: traced, or
        taken from memory or disk."""
        return self._with_buffers(self._template(digest(architecture(module)), module), module)

    def archive(self, module: Trial, extra_files: dict[str, str]) -> bytes:
        """The ``.pt2`` file of ``module`` (CPU, float64) with ``extra_files`` (name -> text):
        its architecture's saved archive with this module's buffers (:class:`TemplateArchive`),
        or, where that archive cannot be reused, the template program saved whole."""
        name = digest(architecture(module))
        template = self._template(name, module)
        if name in self._archives:
            archive = self._archives[name]
        else:
            archive = TemplateArchive.of(template)
            if name in self._programs:  # remembered (a capacity of 0 keeps nothing)
                self._archives[name] = archive
        if archive is not None:
            return archive.write(dict(module.named_buffers()), extra_files)
        buf = io.BytesIO()
        torch.export.save(self._with_buffers(template, module), buf, extra_files=extra_files)
        return buf.getvalue()

    def _template(self, name: str, module: Trial) -> torch.export.ExportedProgram:
        """The architecture ``name``'s program, from memory or disk, else traced from ``module``."""
        template = self._programs.get(name) or self._load(name)
        if template is None:
            self.misses += 1
            template = trace(copy.deepcopy(module))
            self._store(name, template)
        else:
            self.hits += 1
        self._remember(name, template)
        return template

    @staticmethod
    def _with_buffers(template: torch.export.ExportedProgram, module: Trial) -> torch.export.ExportedProgram:
        """``template`` holding copies of ``module``'s buffers."""
        buffers = dict(module.named_buffers())
        state = template.state_dict
        for key in state:
            state[key] = buffers[key].detach().clone()
        return template

    def preload(self) -> int:
        """Load every template file not yet in memory; return how many were loaded.

        A forking worker's parent calls this before each job, so that every work horse inherits
        the templates in memory, each with its saved archive (:meth:`archive`; loading and saving
        build no autograd graph and touch no GPU)."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        loaded = 0
        for path in sorted(self.directory.glob("*.pt2")):
            if path.stem not in self._programs and len(self._programs) < self.capacity:
                program = self._load(path.stem)
                if program is not None:
                    self._remember(path.stem, program)
                    self._archives[path.stem] = TemplateArchive.of(program)
                    loaded += 1
        return loaded

    def _remember(self, name: str, program: torch.export.ExportedProgram) -> None:
        self._programs[name] = program
        self._programs.move_to_end(name)
        while len(self._programs) > self.capacity:
            dropped, _ = self._programs.popitem(last=False)
            self._archives.pop(dropped, None)

    def _load(self, name: str) -> torch.export.ExportedProgram | None:
        if self.directory is None or not (self.directory / f"{name}.pt2").is_file():
            return None
        try:
            return torch.export.load(self.directory / f"{name}.pt2")
        except Exception:  # a damaged or foreign file: trace again and overwrite it
            return None

    def _store(self, name: str, program: torch.export.ExportedProgram) -> None:
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".pt2.tmp")
            os.close(fd)
        except OSError:  # a read-only or missing directory: the cache stays in memory
            return
        try:
            buf = io.BytesIO()
            torch.export.save(program, buf)
            Path(tmp).write_bytes(buf.getvalue())
            os.replace(tmp, self.directory / f"{name}.pt2")  # atomic for concurrent readers
        except OSError:
            Path(tmp).unlink(missing_ok=True)
