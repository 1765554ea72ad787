"""`torchrun ... tests/ddp_train.py ARGS`: train.py's main, then a check that every rank holds the same weights.

Prints "weights identical on all N ranks: True|False" on rank 0 (read by tests/test_train.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import train`

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import train  # noqa: E402
from training.state import RunState  # noqa: E402


def weights_in_sync(model: torch.nn.Module) -> bool:
    """True when every rank holds exactly the same parameters and buffers (compared through a checksum)."""
    flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    positions = torch.arange(1, flat.numel() + 1, dtype=torch.float64).remainder(9973)
    signature = torch.stack([flat.sum(), (flat * positions).sum()])
    gathered = [torch.zeros_like(signature) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, signature)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def keep_the_model(end_epoch, kept: dict):
    """Wrap RunState.end_epoch so that each rank keeps a reference to its own model (not rank 0's file)."""

    def wrapped(self, epoch, row, model, *rest):
        kept["model"] = model
        return end_epoch(self, epoch, row, model, *rest)

    return wrapped


if __name__ == "__main__":
    kept: dict = {}
    RunState.end_epoch = keep_the_model(RunState.end_epoch, kept)
    train.main(sys.argv[1:])
    in_sync = weights_in_sync(kept["model"])
    if dist.get_rank() == 0:
        print(f"weights identical on all {dist.get_world_size()} ranks: {in_sync}", flush=True)
    dist.destroy_process_group()
