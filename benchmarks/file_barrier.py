"""A rendezvous between benchmark processes through files in one directory.

Used by extract_throughput.py and torch_worker.py (which runs in .venv-torch: this module imports
nothing but the standard library). Every party of a rendezvous `name` creates `name.<party>` in
the directory and waits until `parties` such files exist. Two uses:

- HF workers of a split run start every timed section together (`--hf_processes`);
- paired timing: the driver and one HF worker take turns, so that our pass n and HF's pass n are
  timed next to each other (the driver's pass, then HF's), and the machine's drift over minutes
  moves both sides of a ratio alike.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional


class PartyGone(RuntimeError):
  """Raised while waiting when another party's process has ended."""


def arrive(directory: str, name: str, party: str, parties: int, *, timeout_s: float = 900.0,
           poll_s: float = 0.002, alive: Optional[Callable[[], bool]] = None) -> None:
  """Marks `party` arrived at `name`, then waits until `parties` parties have.

  `alive` (optional) is asked on every poll whether the other side is still running; when it
  says no, PartyGone is raised at once instead of waiting out `timeout_s`.
  """
  if parties < 1:
    raise ValueError(f"parties must be >= 1, got {parties}")
  open(os.path.join(directory, f"{name}.{party}"), "w").close()
  deadline = time.monotonic() + timeout_s
  while sum(f.startswith(f"{name}.") for f in os.listdir(directory)) < parties:
    if alive is not None and not alive():
      raise PartyGone(f"rendezvous {name!r} in {directory}: another party ended before arriving")
    if time.monotonic() > deadline:
      raise TimeoutError(f"rendezvous {name!r} in {directory}: the other parties did not arrive "
                         f"in {timeout_s:.0f} s")
    time.sleep(poll_s)
