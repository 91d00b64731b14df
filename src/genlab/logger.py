"""Everything a run writes about itself while training: metrics.jsonl, the progress bar, TensorBoard
events (when tensorboard is installed) and losses.png. One place, so that under torchrun only rank 0
needs to construct it."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    def __init__(self, run: Path, start_step: int, total: int, loss_stats=(), quiet: bool = False):
        self.run, self.path = Path(run), Path(run) / "metrics.jsonl"
        self.loss_stats = tuple(loss_stats)  # plotted in losses.png (the model's Trainable.loss_stats)
        self._truncate_after(start_step)
        self.file = open(self.path, "a")
        self.quiet = quiet  # genlab.train(quiet=True): metrics.jsonl only, nothing on the terminal
        self.bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty())
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.run / "tb"), purge_step=start_step)
        except ImportError:
            pass
        self.t_last, self.step_last = time.perf_counter(), start_step

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint we resume from (they will be written
        again) and a half-written last line left by a kill; rewritten atomically."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        from .io import atomic_write_text
        atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def log(self, step: int, stats: dict, batch_size: int) -> None:
        now = time.perf_counter()
        row = {"step": step, **{k: round(float(v), 5) for k, v in stats.items()}}
        row["img_s"] = round((step - self.step_last) * batch_size / max(now - self.t_last, 1e-9), 1)
        self.t_last, self.step_last = now, step
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)
        self.bar.set_postfix({k: v for k, v in row.items() if k != "step"}, refresh=False)
        if self.bar.disable and not self.quiet:
            print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def note(self, msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        plot_losses(self.path, self.run / "losses.png", self.loss_stats)


def plot_losses(metrics: Path, out: Path, loss_stats=()) -> None:
    rows = [json.loads(l) for l in Path(metrics).read_text().splitlines() if l.strip()]
    keys = [k for k in loss_stats if rows and k in rows[0]]
    if not keys:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    for k in keys:
        ax.plot(steps, [r.get(k) for r in rows], label=k, lw=1)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
