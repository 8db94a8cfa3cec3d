"""Multi-process start-up: `jax.distributed.initialize` from flags or the environment.

Each value (coordinator, process count, process id, local devices) comes from the first source
that has it, in this order:
  1. arguments / command-line flags (`--coordinator_address`, `--num_processes`, `--process_id`);
  2. PUNIFIED_COORDINATOR, PUNIFIED_NUM_PROCESSES, PUNIFIED_PROCESS_ID (and
     PUNIFIED_LOCAL_DEVICE_IDS);
  3. JAX's own JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_LOCAL_DEVICE_IDS;
  4. SLURM (only when SLURM_NTASKS > 1): SLURM_NTASKS processes, rank SLURM_PROCID, coordinator = first host of
     SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST) on PUNIFIED_COORDINATOR_PORT or a port derived
     from SLURM_JOB_ID (20000 + job id mod 10000: below Linux's ephemeral range, and two jobs that
     share a node rarely collide);
  5. `auto` (flag `--distributed=auto` or PUNIFIED_DISTRIBUTED=auto, used by launch/tpu_pod.sh)
     when no coordinator is named: `jax.distributed.initialize()` with no arguments, which asks
     the TPU metadata server. `--distributed=off` ignores the environment.
Nothing found -> a single process; no initialisation.

`resolve_distributed_config` is a pure function of its arguments and an environment mapping, so
the plumbing the launch scripts rely on is unit-tested without starting processes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

DEFAULT_PORT = 29476  # used when a coordinator host is given without a port
_SLURM_PORT_BASE = 20000
_SLURM_PORT_SPAN = 10000


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """What to call: mode "single" (nothing), "explicit" (kwargs) or "auto" (no-arg initialize)."""
  mode: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  source: str = ""

  def initialize_kwargs(self) -> dict:
    if self.mode != "explicit":
      return {}
    kwargs = dict(coordinator_address=self.coordinator_address, num_processes=self.num_processes,
                  process_id=self.process_id)
    if self.local_device_ids is not None:
      kwargs["local_device_ids"] = list(self.local_device_ids)
    return kwargs


def expand_slurm_nodelist(nodelist: str) -> list[str]:
  """Expands a SLURM hostlist such as `node[001-004,007],gpu-a[1-2]-ib` into host names.

  Supports comma-separated items, several bracket groups per item (cartesian product, leftmost
  varying slowest, as SLURM orders them), ranges with zero padding (`001-004`), and single values.
  """
  text = nodelist.strip()
  if not text:
    raise ValueError("SLURM nodelist is empty")
  items = _split_top_level(text, nodelist)
  hosts: list[str] = []
  for item in items:
    hosts.extend(_expand_item(item, nodelist))
  return hosts


def _split_top_level(text: str, original: str) -> list[str]:
  items, depth, current = [], 0, []
  for char in text:
    if char == "[":
      depth += 1
      if depth > 1:
        raise ValueError(f"SLURM nodelist {original!r}: nested '['")
    elif char == "]":
      depth -= 1
      if depth < 0:
        raise ValueError(f"SLURM nodelist {original!r}: ']' without '['")
    if char == "," and depth == 0:
      items.append("".join(current))
      current = []
    else:
      current.append(char)
  if depth != 0:
    raise ValueError(f"SLURM nodelist {original!r}: unclosed '['")
  items.append("".join(current))
  for item in items:
    if not item:
      raise ValueError(f"SLURM nodelist {original!r}: empty host name")
  return items


def _expand_item(item: str, original: str) -> list[str]:
  match = re.search(r"\[([^\]]*)\]", item)
  if not match:
    return [item]
  prefix, body, rest = item[:match.start()], match.group(1), item[match.end():]
  values: list[str] = []
  for part in body.split(","):
    part = part.strip()
    range_match = re.fullmatch(r"(\d+)-(\d+)", part)
    if range_match:
      low_text, high_text = range_match.groups()
      low, high = int(low_text), int(high_text)
      if high < low:
        raise ValueError(f"SLURM nodelist {original!r}: range {part!r} runs backwards")
      width = len(low_text)
      values.extend(str(n).zfill(width) for n in range(low, high + 1))
    elif re.fullmatch(r"\d+", part):
      values.append(part)
    else:
      raise ValueError(f"SLURM nodelist {original!r}: cannot read bracket entry {part!r}")
  tails = _expand_item(rest, original)
  return [f"{prefix}{value}{tail}" for value in values for tail in tails]


def _parse_int(value: str, name: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _parse_ids(value: str, name: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in value.split(",") if v.strip())
  except ValueError:
    raise ValueError(f"{name}={value!r} must be comma-separated integers") from None


def _with_port(address: str, default_port: int) -> str:
  if re.search(r":\d+$", address) and not address.startswith("["):
    return address
  if address.startswith("[") and "]:" in address:  # [ipv6]:port
    return address
  return f"{address}:{default_port}"


def resolve_distributed_config(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str | None = None,
    local_device_ids: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> DistributedConfig:
  """Decides how to initialise JAX's distributed runtime (pure: reads only `env`).

  Each value is taken from the first source that has it: flags, PUNIFIED_*, JAX_*, SLURM.

  Args:
    coordinator_address, num_processes, process_id: explicit values (flags).
    mode: None (detect), "off" (single process whatever the environment says), "auto"
      (no-argument initialize, for TPU pods, unless a coordinator is given explicitly).
    local_device_ids: explicit local device ids for this process (one-process-per-GPU setups).
    env: the environment (os.environ when None).
  """
  env = dict(os.environ if env is None else env)
  mode = mode or env.get("PUNIFIED_DISTRIBUTED") or None
  if mode not in (None, "off", "auto"):
    raise ValueError(f"distributed mode must be 'auto', 'off' or unset, got {mode!r}")
  if mode == "off":
    return DistributedConfig(mode="single", source="--distributed=off")

  def env_int(name):
    return _parse_int(env[name], name) if env.get(name, "").strip() else None

  def env_ids(name):
    return _parse_ids(env[name], name) if env.get(name, "").strip() else None

  # (value, source) candidates per field, highest priority first.
  addresses = [(coordinator_address, "--coordinator_address"),
               (env.get("PUNIFIED_COORDINATOR") or None, "PUNIFIED_COORDINATOR"),
               (env.get("JAX_COORDINATOR_ADDRESS") or None, "JAX_COORDINATOR_ADDRESS")]
  counts = [(num_processes, "--num_processes"), (env_int("PUNIFIED_NUM_PROCESSES"), "PUNIFIED_NUM_PROCESSES"),
            (env_int("JAX_NUM_PROCESSES"), "JAX_NUM_PROCESSES")]
  ranks = [(process_id, "--process_id"), (env_int("PUNIFIED_PROCESS_ID"), "PUNIFIED_PROCESS_ID"),
           (env_int("JAX_PROCESS_ID"), "JAX_PROCESS_ID")]
  device_ids = [(tuple(local_device_ids) if local_device_ids is not None else None, "--local_device_ids"),
                (env_ids("PUNIFIED_LOCAL_DEVICE_IDS"), "PUNIFIED_LOCAL_DEVICE_IDS"),
                (env_ids("JAX_LOCAL_DEVICE_IDS"), "JAX_LOCAL_DEVICE_IDS")]

  explicit_address = any(value is not None for value, _ in addresses)
  if mode == "auto" and not explicit_address:
    return DistributedConfig(mode="auto", source="--distributed=auto")

  nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
  slurm_count = env_int("SLURM_NTASKS")
  if nodelist and slurm_count is not None and slurm_count > 1 and env.get("SLURM_PROCID", "").strip():
    first_host = expand_slurm_nodelist(nodelist)[0]
    port = env_int("PUNIFIED_COORDINATOR_PORT")
    if port is None:
      job_id = env_int("SLURM_JOB_ID")
      port = DEFAULT_PORT if job_id is None else _SLURM_PORT_BASE + job_id % _SLURM_PORT_SPAN
    addresses.append((f"{first_host}:{port}", "SLURM nodelist"))
    counts.append((slurm_count, "SLURM_NTASKS"))
    ranks.append((env_int("SLURM_PROCID"), "SLURM_PROCID"))
    device_ids.append((_slurm_local_device_ids(env), "SLURM_LOCALID"))

  def first(candidates):
    for value, source in candidates:
      if value is not None:
        return value, source
    return None, None

  address, address_source = first(addresses)
  count, count_source = first(counts)
  rank, rank_source = first(ranks)
  ids, _ = first(device_ids)
  if address is None:
    if count is not None or rank is not None:
      given = count_source or rank_source
      raise ValueError(f"distributed setup: {given} is set but no coordinator address "
                       "(--coordinator_address, PUNIFIED_COORDINATOR, JAX_COORDINATOR_ADDRESS or SLURM)")
    return DistributedConfig(mode="single", source="no distributed settings found")
  if count is None:
    raise ValueError(f"distributed setup: coordinator from {address_source} but no number of processes "
                     "(--num_processes, PUNIFIED_NUM_PROCESSES, JAX_NUM_PROCESSES or SLURM_NTASKS)")
  if rank is None:
    raise ValueError(f"distributed setup: coordinator from {address_source} but no process id "
                     "(--process_id, PUNIFIED_PROCESS_ID, JAX_PROCESS_ID or SLURM_PROCID)")
  if count < 1:
    raise ValueError(f"distributed setup: number of processes from {count_source} must be >= 1, got {count}")
  if not 0 <= rank < count:
    raise ValueError(f"distributed setup: process id {rank} ({rank_source}) is outside [0, {count})")
  return DistributedConfig(mode="explicit", coordinator_address=_with_port(address, DEFAULT_PORT),
                           num_processes=count, process_id=rank, local_device_ids=ids,
                           source=address_source)


def _slurm_local_device_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
  """One process per GPU under SLURM: pin this process to GPU SLURM_LOCALID.

  Only when several tasks share a node AND the process still sees several GPUs (when SLURM
  binds one GPU per task via CUDA_VISIBLE_DEVICES, the process's only GPU is already device 0).
  """
  local_id = env.get("SLURM_LOCALID")
  tasks_per_node = env.get("SLURM_NTASKS_PER_NODE", "")
  several_per_node = False
  if re.fullmatch(r"\d+", tasks_per_node):
    several_per_node = int(tasks_per_node) > 1
  elif env.get("SLURM_NNODES") and env.get("SLURM_NTASKS"):
    several_per_node = _parse_int(env["SLURM_NTASKS"], "SLURM_NTASKS") > _parse_int(env["SLURM_NNODES"], "SLURM_NNODES")
  visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
  if local_id is None or not several_per_node or len(visible) == 1:
    return None
  return (_parse_int(local_id, "SLURM_LOCALID"),)


_initialized_config: DistributedConfig | None = None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, mode: str | None = None,
               local_device_ids: Sequence[int] | None = None) -> DistributedConfig:
  """Initialises JAX's distributed runtime once (no-op for a single process). Returns the config.

  Must run before anything touches devices (jax.devices(), array creation).
  """
  global _initialized_config
  config = resolve_distributed_config(coordinator_address, num_processes, process_id, mode=mode,
                                      local_device_ids=local_device_ids)
  if _initialized_config is not None:
    if config != _initialized_config:
      logger.warning("distributed runtime already initialised (%s); ignoring %s", _initialized_config, config)
    return _initialized_config
  import jax  # pylint: disable=g-import-not-at-top
  if config.mode == "explicit":
    logger.info("jax.distributed.initialize from %s: process %d of %d, coordinator %s", config.source,
                config.process_id, config.num_processes, config.coordinator_address)
    jax.distributed.initialize(**config.initialize_kwargs())
  elif config.mode == "auto":
    logger.info("jax.distributed.initialize() with automatic cluster detection")
    jax.distributed.initialize()
  _initialized_config = config
  return config


def add_flags(parser) -> None:
  """Adds the distributed flags to an argparse parser (train.py and eval.py share them)."""
  group = parser.add_argument_group("multi-host")
  group.add_argument("--coordinator_address", default=None,
                     help="host:port of process 0's coordinator (else PUNIFIED_COORDINATOR, JAX_*, SLURM)")
  group.add_argument("--num_processes", type=int, default=None, help="total number of processes")
  group.add_argument("--process_id", type=int, default=None, help="this process's index")
  group.add_argument("--local_device_ids", default=None,
                     help="comma-separated local device ids this process uses (one process per GPU)")
  group.add_argument("--distributed", choices=("auto", "off"), default=None,
                     help="auto: jax.distributed.initialize() with no arguments (TPU pods); off: single process")


def initialize_from_args(args) -> DistributedConfig:
  ids = None
  if args.local_device_ids:
    ids = _parse_ids(args.local_device_ids, "--local_device_ids")
  return initialize(args.coordinator_address, args.num_processes, args.process_id, mode=args.distributed,
                    local_device_ids=ids)


# ------------------------------------------------------------------------------------------------
# Start-up agreement: every process must see the same settings (e.g. the data source).
# ------------------------------------------------------------------------------------------------

_KV_TIMEOUT_MS = 120_000  # every process publishes at start-up; a late host gets two minutes


class SettingsMismatchError(ValueError):
  """Processes of one run see different settings (e.g. different data directories)."""


def settings_fingerprint(settings: Mapping) -> str:
  """sha256 of the settings' canonical JSON (sorted keys): equal settings, equal fingerprints."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def describe_mismatch(what: str, by_process: Sequence[Mapping]) -> str | None:
  """None when every process's settings are equal, else a message naming the differing keys
  and each process's value (pure, so the wording is unit-tested without processes)."""
  fingerprints = [settings_fingerprint(s) for s in by_process]
  if len(set(fingerprints)) <= 1:
    return None
  keys = sorted({k for s in by_process for k in s})
  differing = [k for k in keys if len({settings_fingerprint({"v": s.get(k)}) for s in by_process}) > 1]
  lines = [f"the {len(by_process)} processes of this run see different {what} "
           f"(fingerprints {', '.join(f[:12] for f in fingerprints)}); every host must be given the "
           "same settings (same environment variables and gin files). Differences:"]
  for key in differing:
    values = "; ".join(f"process {i}: {s.get(key)!r}" for i, s in enumerate(by_process))
    lines.append(f"  {key}: {values}")
  return "\n".join(lines)


def check_same_settings(what: str, settings: Mapping, *, key: str = "settings") -> None:
  """Exchanges `settings` between all processes at start-up and raises SettingsMismatchError on
  EVERY process when any differ (so no process runs on to hang in a collective).

  Uses the coordination service's key-value store that `jax.distributed.initialize` started
  (each process publishes its settings as JSON under `punified/<key>/<index>` and reads all);
  a single process returns at once.
  """
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  count = jax.process_count()
  if count <= 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client
  text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
  if client is None:  # no coordination service (should not happen with process_count > 1)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    digest = np.frombuffer(bytes.fromhex(settings_fingerprint(settings)), np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(digest))
    if not (gathered == gathered[0]).all():
      raise SettingsMismatchError(f"the processes of this run see different {what} "
                                  f"(this is process {jax.process_index()}: {text})")
    return
  client.key_value_set(f"punified/{key}/{jax.process_index()}", text)
  by_process = [json.loads(client.blocking_key_value_get(f"punified/{key}/{index}", _KV_TIMEOUT_MS))
                for index in range(count)]
  message = describe_mismatch(what, by_process)
  if message:
    raise SettingsMismatchError(message)
  logger.info("all %d processes see the same %s (%s)", count, what, settings_fingerprint(settings)[:12])
