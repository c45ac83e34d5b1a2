"""Data-parallel training: with ``train.processes`` above 1, or ``train.accelerate_config``, one training run is
relaunched in several processes under ``accelerate launch``, and the transformers Trainer inside each does the
DDP (or the FSDP / DeepSpeed that the config file sets up).

``distill.transfer.training.train`` calls ``launch`` (so the train stage's student, its plain-SFT baseline and
every sweep point go the same way): what the run trains on is written to a private scratch file (it holds the
training rows: 0600, removed even after a kill, distill/lifetime.py), then

    python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m distill.transfer.parallel SPEC

starts N processes that each load the same student from the same seed and run the same ``train()``; process 0
writes the model (whole or not at all) and hands the loss log back. The launched processes carry the stage's
lifetime token, so a killed stage takes them with it.

``train.batch_size`` stays the batch of one optimizer step: each process takes ``batch_size / processes`` rows
of it (refused at load unless it divides). accelerate's sampler draws the rows in one seeded order and deals
the small batches round-robin (batch i to process i mod N), so an optimizer step averages the gradients of the
same rows one process would see, in the same order; a row's features (kd's teacher log-probs) are columns of
the same dataset row, so they travel with it. The Trainer's checkpoints hold one RNG state per process, so a
killed run resumes with the same number of processes (the count is part of the checkpoint key).

On a CPU the processes talk over gloo and share the cores (threads per process = cores / N, or
OMP_NUM_THREADS / N); on GPUs NCCL, one GPU per process.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from distill import params as params_module
from distill.entry import StageError, guarded
from distill.io import write_json
from distill.lifetime import private_file, scratch

WORKER = "DISTILL_TRAIN_WORKER"  # set in the launched processes: they train, they do not launch again
ROOT = Path(__file__).resolve().parents[2]  # the project, put on the launched processes' PYTHONPATH


def wanted(params: params_module.TrainParams) -> bool:
    return params.processes > 1 or params.accelerate_config is not None


def inside() -> bool:
    """Whether this process is one of the launched training processes."""
    return os.environ.get(WORKER) == "1"


def is_main() -> bool:
    return int(os.environ.get("RANK") or 0) == 0


def planned(params: params_module.TrainParams) -> int:
    """The number of processes a launch starts: train.processes, else the config file's num_processes."""
    if params.accelerate_config is not None:
        config = Path(params.accelerate_config)
        if not config.is_file():
            raise StageError(f"train.accelerate_config={params.accelerate_config}: no such file; write one with "
                             "`accelerate config --config_file <path>`, or set it to null")
        if params.processes == 1:
            return int((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("num_processes") or 1)
    import torch

    if torch.cuda.is_available() and params.processes > torch.cuda.device_count():
        raise StageError(f"train.processes={params.processes} but torch sees {torch.cuda.device_count()} GPUs: one "
                         "process per GPU; set train.processes to at most that")
    return params.processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(params: params_module.TrainParams, processes: int, spec: Path) -> list[str]:
    """``accelerate launch`` for ``processes`` processes running this module on ``spec``."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if params.accelerate_config is not None:
        launch += ["--config_file", params.accelerate_config]
        if params.processes > 1:
            launch += ["--num_processes", str(params.processes)]
    else:  # --multi_gpu is torchrun's launcher; on a CPU the Trainer (use_cpu) then sets up gloo
        launch += ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"]  # precision: the Trainer's (train.precision)
    cores = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    return launch + ["--num_cpu_threads_per_process", str(max(1, cores // processes)),
                     "--main_process_port", str(free_port()),  # not the default 29500: two runs may share a machine
                     "-m", "distill.transfer.parallel", str(spec)]


def launch(data, params: params_module.TrainParams, model_dir: Path, start: str | None) -> list[dict]:
    """Train in several processes (``distill.transfer.training.train``'s arguments); the Trainer's log history,
    its summary entry carrying ``processes``."""
    processes = planned(params)
    if params.batch_size % processes:
        raise StageError(f"train.batch_size={params.batch_size} does not split evenly over the {processes} processes "
                         f"of train.accelerate_config={params.accelerate_config}: set train.batch_size to a multiple "
                         "of its num_processes, or set train.processes")
    with scratch("train") as folder:
        spec, result = folder / "run.pickle", folder / "history.json"
        with os.fdopen(private_file(spec), "wb") as out:
            pickle.dump({"data": data, "params": params, "model_dir": str(model_dir), "start": start,
                         "result": str(result)}, out)
        run = command(params, processes, spec)
        print(f"train: {model_dir} in {processes} processes, each taking {params.batch_size // processes} of every "
              f"{params.batch_size} rows: {shlex.join(['accelerate', 'launch', *run[3:]])}", flush=True)
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        finished = subprocess.run(run, env=os.environ | {WORKER: "1", "PYTHONPATH": path})
        if finished.returncode or not result.is_file():
            raise StageError(f"the {processes} training processes under accelerate launch failed (exit "
                             f"{finished.returncode}) training {model_dir}; their output is above")
        return json.loads(result.read_text(encoding="utf-8"))


def main(argv: list[str]) -> None:
    """One launched process: the same ``train()`` as every other; process 0 hands the log history back."""
    from distill.transfer.training import train

    spec = pickle.loads(Path(argv[0]).read_bytes())
    history = train(spec["data"], spec["params"], Path(spec["model_dir"]), spec["start"])
    if is_main():
        write_json(history, Path(spec["result"]))


if __name__ == "__main__":
    guarded("train", lambda: main(sys.argv[1:]))
