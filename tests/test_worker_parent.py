"""The forking worker's parent: what it imports before its first job is safe to fork."""

from __future__ import annotations

import subprocess
import sys

from tests.problems import ROOT

PARENT = """
import importlib, os, sys, threading
from worker.preimport import JOB_MODULES, preimport
for name in JOB_MODULES:
    importlib.import_module(name)
native = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
preimport()  # the imports again (done), then the warm-up: no thread of its own, native ones included
assert native == (len(os.listdir("/proc/self/task")) if native else 0), "the warm-up started a thread"
import torch
assert threading.active_count() == 1, threading.enumerate()  # a thread would not survive the fork
assert not torch.cuda.is_initialized()
pid = os.fork()
if pid == 0:  # the work horse: autograd works and nothing is imported again
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (x * x).sum().backward()
    os._exit(0 if float(x.grad.sum()) == 6.0 else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), all(m in sys.modules for m in JOB_MODULES))
"""


def test_the_parents_imports_start_no_thread_and_a_forked_horse_runs_autograd() -> None:
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True"]
