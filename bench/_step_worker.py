"""One side of ``bench.step_ab``: a training step of one model from one source tree, timed on request.

Run as a script, ``python bench/_step_worker.py ROOT MODEL BATCH SOURCE``: ``ROOT``'s ``cesaa``
package is imported (it goes first on ``sys.path``), so two workers can run two revisions side by
side.  Only APIs every revision has are used (``cesaa.data.load_data``, ``cesaa.models``'
``build_model`` / ``default_config``, ``cesaa.train.make_optimizer``, ``cesaa.allocator``).

Protocol, one JSON line each way: the worker first prints ``{"cesaa": path, "parameters": n,
"loss": first step's loss}`` (seed 0, the same batch in every tree); then for each request line
``THREADS STEPS`` it runs one untimed step and ``STEPS`` timed ones at ``THREADS`` torch threads
and prints their seconds; ``quit`` ends it.
"""

from __future__ import annotations

import json
import sys
import time


def main(root: str, model_name: str, batch: int, source: str) -> None:
    sys.path.insert(0, root)
    import torch
    import torch.nn.functional as F

    import cesaa
    from cesaa.allocator import retain_freed_memory
    from cesaa.data import load_data
    from cesaa.models import build_model, default_config
    from cesaa.train import make_optimizer

    retain_freed_memory()
    data = load_data(source, seed=0)
    table = data.train
    torch.manual_seed(0)
    model = build_model(default_config(model_name), data.spec)
    opt = make_optimizer(model, lr=1e-3, weight_decay=1e-5)
    model.train()
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        b = table.subset(torch.randint(len(table), (batch,), generator=gen))
        out = model(b.cat, b.num, b.domain)
        loss = F.binary_cross_entropy_with_logits(out.logit, b.label) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"cesaa": cesaa.__file__, "parameters": params, "loss": step()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        threads, steps = (int(x) for x in line.split())
        torch.set_num_threads(threads)
        step()  # untimed: the thread count's workers started and awake
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
