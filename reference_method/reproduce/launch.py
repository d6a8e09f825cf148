"""How the heavy jobs of a reproduction run: in this process (the default), or each under
``accelerate launch`` with one of the shipped configs (or the user's own).

The shipped ``accelerate`` configs (``reference_method/launch/*.yaml``, in the package):

- ``ddp``: distributed data parallel on one machine (one process per GPU, the whole model in each);
- ``ddp-multinode``: the same over several machines;
- ``deepspeed-zero3``: DeepSpeed ZeRO stage 3 (needs ``pip install deepspeed``): parameters,
  gradients and optimizer states sharded over the processes, for full fine-tuning of 8-12B models;
- ``fsdp``: PyTorch FSDP, fully sharded, for the same.

A :class:`Launcher` turns a job's command line (``consistbench ref train ...``, ``consistbench eval
...``, the weights stage's worker) into the exact ``accelerate launch ...`` command, which
:func:`run_command` runs. Nothing here reimplements a launcher: the processes, their rendezvous and
the sharding are accelerate's (and torch.distributed's, DeepSpeed's).

Several machines: the machine with ``--machine-rank 0`` runs the reproduction and decides every job;
each other machine runs the same command with its own ``--machine-rank`` and *follows*: the leader
writes each launched job to ``RUN/launch/jobs.jsonl`` before launching it, a follower launches the same
job with its rank (:class:`JobBoard`). The run folder must be on storage every machine sees.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_jsonl

CONFIG_DIR = Path(__file__).resolve().parents[1] / "launch"
SHIPPED = ("ddp", "ddp-multinode", "deepspeed-zero3", "fsdp")
CLI_MODULE = "consistbench.benchmark.cli"  # what `consistbench` runs (pyproject.toml's [project.scripts])
# accelerate's distributed_type -> how the training state is laid out over the processes
SHARDING = {"NO": "none", "MULTI_GPU": "ddp", "MULTI_CPU": "ddp", "DEEPSPEED": "deepspeed", "FSDP": "fsdp"}


def config_path(name_or_file: str) -> Path:
    """A shipped config by name (``ddp``, ``ddp-multinode``, ``deepspeed-zero3``, ``fsdp``) or a YAML file."""
    if name_or_file in SHIPPED:
        return CONFIG_DIR / f"{name_or_file}.yaml"
    path = Path(name_or_file).expanduser()
    if not path.is_file():
        raise ConsistbenchError(f"--accelerate-config {name_or_file}: neither a shipped config "
                                f"({', '.join(SHIPPED)}) nor a file")
    return path.resolve()


def read_config(path: Path) -> dict:
    """The config's settings (YAML), checked by accelerate's own reader (unknown keys, bad types)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConsistbenchError(f"{path}: not a readable YAML file ({exc})") from None
    if not isinstance(doc, dict) or "distributed_type" not in doc:
        raise ConsistbenchError(f"{path}: not an accelerate config (no distributed_type)")
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        load_config_from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - accelerate raises ValueError, TypeError, KeyError ...
        raise ConsistbenchError(f"{path}: accelerate refuses this config ({type(exc).__name__}: {exc})") from None
    if doc["distributed_type"] not in SHARDING:
        raise ConsistbenchError(f"{path}: distributed_type {doc['distributed_type']!r} is not one this "
                                f"reproduction plans for ({', '.join(SHARDING)})")
    return doc


@dataclass(frozen=True)
class Launcher:
    """Where the heavy jobs run: ``kind`` ``none`` (this process) or ``accelerate``, with its config and the
    options that override it (``accelerate launch``'s own flags)."""

    kind: str = "none"
    config_file: str | None = None
    num_processes: int | None = None  # every process on every machine, as accelerate counts them
    num_machines: int | None = None
    machine_rank: int | None = None
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @classmethod
    def from_options(cls, kind: str | None, config: str | None, **overrides) -> Launcher:
        """The launcher the command line asks for (``--launcher``, ``--accelerate-config`` and overrides)."""
        kind = kind or ("accelerate" if config else "none")
        given = {k: v for k, v in overrides.items() if v is not None}
        if kind == "none":
            if config or given:
                raise ConsistbenchError("--accelerate-config and the process options need --launcher accelerate")
            return cls()
        if kind != "accelerate":
            raise ConsistbenchError(f"--launcher {kind}: expected none or accelerate")
        path = config_path(config or "ddp")
        launcher = cls(kind="accelerate", config_file=str(path), **given)
        launcher.settings()  # read and checked now, before any stage runs
        return launcher

    @property
    def active(self) -> bool:
        return self.kind == "accelerate"

    def settings(self) -> dict:
        """The layout of the processes: distributed type, sharding, processes (total and per machine), machines,
        this machine's rank, mixed precision, DeepSpeed's ZeRO stage and offloading."""
        if not self.active:
            return {"distributed_type": "NO", "sharding": "none", "num_processes": 1, "per_machine": 1,
                    "num_machines": 1, "machine_rank": 0, "mixed_precision": "no", "zero_stage": None, "offload": False}
        doc = read_config(Path(self.config_file))
        ds = doc.get("deepspeed_config") or {}
        machines = self.num_machines or int(doc.get("num_machines", 1))
        procs = self.num_processes or int(doc.get("num_processes", 1))
        if procs < 1 or machines < 1 or procs % machines:
            raise ConsistbenchError(f"{self.config_file}: {procs} processes do not split over {machines} machines")
        rank = self.machine_rank if self.machine_rank is not None else int(doc.get("machine_rank", 0))
        if not 0 <= rank < machines:
            raise ConsistbenchError(f"--machine-rank {rank}: expected 0..{machines - 1}")
        offload = any(str(ds.get(k, "none")) != "none" for k in ("offload_optimizer_device", "offload_param_device"))
        offload = offload or bool((doc.get("fsdp_config") or {}).get("fsdp_offload_params"))
        return {"distributed_type": doc["distributed_type"], "sharding": SHARDING[doc["distributed_type"]],
                "num_processes": procs, "per_machine": procs // machines, "num_machines": machines,
                "machine_rank": rank, "mixed_precision": str(doc.get("mixed_precision", "no")),
                "zero_stage": ds.get("zero_stage") if doc["distributed_type"] == "DEEPSPEED" else None,
                "offload": offload}

    @property
    def processes(self) -> int:
        return self.settings()["num_processes"]

    @property
    def follower(self) -> bool:
        """Whether this machine follows the main one (several machines, ``--machine-rank`` above 0)."""
        return self.active and self.settings()["machine_rank"] > 0

    def options(self) -> list[str]:
        """The command-line options that give this launcher to ``consistbench ref reproduce``."""
        if not self.active:
            return []
        name = Path(self.config_file).stem if Path(self.config_file).parent == CONFIG_DIR else self.config_file
        out = ["--launcher", "accelerate", "--accelerate-config", name]
        for flag, value in self._overrides():
            out += [flag.replace("_", "-"), str(value)]
        return out

    def _overrides(self) -> list[tuple[str, object]]:
        return [(f"--{k}", v) for k, v in (("num_processes", self.num_processes), ("num_machines", self.num_machines),
                                           ("machine_rank", self.machine_rank), ("main_process_ip", self.main_process_ip),
                                           ("main_process_port", self.main_process_port)) if v is not None]

    def command(self, argv: Sequence[str], *, module: bool = False) -> list[str]:
        """``argv`` (a program and its arguments, or ``-m module ...`` with ``module``) as run by this launcher;
        under ``accelerate launch`` a ``consistbench ...`` command runs as ``-m consistbench.benchmark.cli ...``
        (the same code; the printed command then works from any folder, whatever PATH holds)."""
        if not self.active:
            return [sys.executable, "-m", *argv] if module else list(argv)
        if not module and Path(argv[0]).name == "consistbench":
            argv, module = [CLI_MODULE, *argv[1:]], True
        out = [executable("accelerate"), "launch", "--config_file", str(self.config_file)]
        for flag, value in self._overrides():
            out += [flag, str(value)]
        return out + (["-m", *argv] if module else list(argv))

    def with_rank(self, rank: int) -> Launcher:
        return replace(self, machine_rank=rank)


def executable(name: str) -> str:
    """The console script ``name`` of this environment (beside the running Python), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ConsistbenchError(f"`{name}` is not installed in this environment")
    return found


def display(cmd: Sequence[str]) -> str:
    """A command as a shell line; this environment's console scripts by their bare names."""
    shown = []
    for part in cmd:
        path = Path(part)
        if path.parent == Path(sys.executable).parent and path.name in ("accelerate", "consistbench"):
            part = path.name
        elif part == sys.executable:
            part = "python"
        shown.append(part)
    return shlex.join(shown)


def run_command(cmd: Sequence[str], log: Callable[[str], None], env: dict | None = None) -> None:
    """Run ``cmd`` (its output goes to this process's), refusing a non-zero exit with one line."""
    log(f"$ {display(cmd)}")
    proc = subprocess.run(list(cmd), env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise ConsistbenchError(f"exit status {proc.returncode}: {display(cmd)}")


class JobBoard:
    """The launched jobs of a run on several machines, in order (``RUN/launch/jobs.jsonl``): the main
    machine opens a session, posts each job before launching it and marks it done after; the others
    launch the same jobs with their own rank, from the latest session on, until the session's end."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "launch" / "jobs.jsonl"

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _add(self, entry: dict) -> None:
        write_jsonl(self.path, [*self.entries(), entry])

    def start(self) -> None:
        self._add({"session": time.time()})

    def post(self, argv: Sequence[str], *, module: bool = False, env: dict | None = None) -> int:
        n = sum(1 for e in self.entries() if "argv" in e)
        self._add({"id": n, "argv": list(argv), "module": module, "env": env or {}})
        return n

    def done(self, n: int) -> None:
        self._add({"done": n})

    def end(self) -> None:
        self._add({"end": True})

    def follow(self, launcher: Launcher, log: Callable[[str], None], poll_s: float = 5.0,
               timeout_s: float | None = None) -> int:
        """Launch the leader's jobs of its current session (or of the next one, when the latest has
        ended already) until the session ends; return how many were run."""
        entries = self.entries()
        sessions = [i for i, e in enumerate(entries) if "session" in e]
        stale = sessions[-1] if sessions and any("end" in e for e in entries[sessions[-1]:]) else None
        ran: set[int] = set()
        waited = 0.0
        while True:
            entries = self.entries()
            sessions = [i for i, e in enumerate(entries) if "session" in e]
            if sessions and sessions[-1] != stale:
                tail = entries[sessions[-1] + 1:]
                done = {e["done"] for e in tail if "done" in e}
                job = next((e for e in tail if "argv" in e and e["id"] not in done | ran), None)
                if job is not None:
                    run_command(launcher.command(job["argv"], module=job["module"]), log, job["env"])
                    ran.add(job["id"])
                    waited = 0.0
                    continue
                if any("end" in e for e in tail):
                    return len(ran)
            if timeout_s is not None and waited >= timeout_s:
                raise ConsistbenchError(f"{self.path}: nothing from the main machine in {timeout_s:g} s")
            time.sleep(poll_s)
            waited += poll_s
