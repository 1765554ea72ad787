"""The allocator's effect on a training step: `python -m bench.allocator` (also run by `pytest bench`).

Each setting runs in a fresh process (the allocator is process-wide): default glibc malloc, and
`training.runtime.tune_malloc` (what train.py applies). Prints seconds per batch-32 training step of V2 1.0
at 224 (median of 3 after one warm-up) and the peak resident memory.
"""

import json
import subprocess
import sys

CHILD = r"""
import json, re, sys, time, torch, torch.nn.functional as F
from training.runtime import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else False
from mobilenet import create_model
torch.manual_seed(0)
model = create_model("v2", num_classes=200).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(32, 3, 224, 224), torch.randint(0, 200, (32,))
times = []
for i in range(4):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    times.append(time.perf_counter() - start)
# this process's high-water mark (VmHWM, reset by exec); ru_maxrss would include the parent's at the fork
peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1])
print(json.dumps({"step_s": sorted(times[1:])[1], "peak_mb": peak_kb / 1024, "applied": applied}))
"""


def measure(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> dict:
    results = {setting: measure(setting) for setting in ("default", "tuned")}
    for setting, r in results.items():
        print(f"{setting:>8}: {r['step_s']:.2f} s per training step, peak {r['peak_mb']:.0f} MB")
    print(f"speed-up {results['default']['step_s'] / results['tuned']['step_s']:.2f}x")
    return results


if __name__ == "__main__":
    main()
