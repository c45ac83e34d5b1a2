"""Where the student runs outside training (evaluation, sampling, IFD, reward scoring, held-out KL,
forgetting): ``student.device``. ``auto`` is the GPU when there is one, else the CPU; on a GPU the
weights are cast to bf16 where the card has it (fp16 otherwise), which halves memory and is how
inference runs in practice. Training places the model itself (the trainer's own device logic)."""

from __future__ import annotations

from distill.entry import StageError


def resolve(setting: str = "auto") -> str:
    """``cuda`` or ``cpu`` for ``student.device``; asking for cuda without one is an error naming the key."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise StageError("student.device is cuda but no GPU is visible to torch: set student.device: auto or cpu")
    return setting


def for_inference(model, setting: str = "auto"):
    """The model in eval mode on the resolved device, in bf16/fp16 on a GPU and as loaded (fp32) on the CPU."""
    import torch

    device = resolve(setting)
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return model.to(device=device, dtype=dtype).eval()
    return model.to(device).eval()


def use_all_cores() -> None:
    """CPU work (training, sampling, IFD, reward scoring) on every core, or on ``OMP_NUM_THREADS`` when that is set
    (the standard knob: e.g. two processes sharing a machine each take their share)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
