"""Two benchmark processes taking turns over a pair of pipes (standard library only).

extract_throughput.py (the driver) and its HF worker (torch_worker.py, in .venv-torch) time
their passes one after the other: the driver times our pass n, then hands the turn to the
worker, which times HF's pass n and hands it back. The side that waits blocks in a pipe read,
so it takes no CPU while the other one is timed (a waiting loop that polled a directory every
few milliseconds slowed the timed side measurably).

Protocol: one line per message. The worker writes "loaded" once ready; then for each section
name the driver writes the name, the worker runs the section and writes the name back.
"""

from __future__ import annotations

import os
from typing import Optional


class PartyGone(RuntimeError):
  """The other process closed its end (it ended or crashed) while we waited for a message."""


def _read_line(fd: int) -> str:
  data = bytearray()
  while not data.endswith(b"\n"):
    chunk = os.read(fd, 1)
    if not chunk:
      raise PartyGone(f"the other process closed the pipe while we waited (got {bytes(data)!r})")
    data += chunk
  return data[:-1].decode("utf-8")


class Turns:
  """One side of the pair: `send` a message, `expect` one (blocking)."""

  def __init__(self, read_fd: int, write_fd: int):
    self.read_fd, self.write_fd = read_fd, write_fd

  def send(self, message: str) -> None:
    if "\n" in message:
      raise ValueError(f"a message is one line, got {message!r}")
    os.write(self.write_fd, (message + "\n").encode("utf-8"))

  def expect(self, message: str) -> None:
    got = _read_line(self.read_fd)
    if got != message:
      raise RuntimeError(f"turns out of step: expected {message!r}, got {got!r}")


class DriverTurns(Turns):
  """The driver's side: creates both pipes; `child_fds` go to the worker (Popen pass_fds, then
  `close_child_fds` here); `turn(name)` lets the worker run section `name` and returns when it
  has ended."""

  def __init__(self):
    to_worker_read, to_worker_write = os.pipe()
    from_worker_read, from_worker_write = os.pipe()
    super().__init__(from_worker_read, to_worker_write)
    self.child_fds = {"read_fd": to_worker_read, "write_fd": from_worker_write}

  def close_child_fds(self) -> None:
    for fd in self.child_fds.values():
      os.close(fd)

  def turn(self, name: str) -> None:
    self.send(name)
    self.expect(name)


def worker_turns(spec: Optional[dict]) -> Optional[Turns]:
  """The worker's side from the request's {"read_fd", "write_fd"}; None without one."""
  return Turns(int(spec["read_fd"]), int(spec["write_fd"])) if spec else None
