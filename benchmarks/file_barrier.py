"""A rendezvous between benchmark processes through files in one directory.

Used by torch_worker.py (it runs in .venv-torch: this module imports nothing but the standard
library): the HF workers of a split run (extract_throughput --hf_processes) start every timed
section together. Every party of a rendezvous `name` creates `name.<party>` in the directory and
waits, polling, until `parties` such files exist.
"""

from __future__ import annotations

import os
import time


def arrive(directory: str, name: str, party: str, parties: int, *, timeout_s: float = 900.0,
           poll_s: float = 0.002) -> None:
  """Marks `party` arrived at `name`, then waits until `parties` parties have."""
  if parties < 1:
    raise ValueError(f"parties must be >= 1, got {parties}")
  open(os.path.join(directory, f"{name}.{party}"), "w").close()
  deadline = time.monotonic() + timeout_s
  while sum(f.startswith(f"{name}.") for f in os.listdir(directory)) < parties:
    if time.monotonic() > deadline:
      raise TimeoutError(f"rendezvous {name!r} in {directory}: the other parties did not arrive "
                         f"in {timeout_s:.0f} s")
    time.sleep(poll_s)
