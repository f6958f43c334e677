"""Training throughput, side by side on the same random CIFAR-shaped data and the same network:

  fp32 eager       a plain PyTorch loop as a user would write it by hand (the reference)
  + channels_last  the same loop, NHWC memory layout
  project numerics the same loop with the `cifar` experiment's numerics (bf16 autocast + channels_last)
  project path     the real thing: `+experiment=cifar` composed with Hydra's compose API, instantiated,
                   trained by the Lightning Trainer (its own overhead = this vs the line above)
  data path        batches alone: index the uint8 tensor, random crop + flip, normalise

Every loop draws the same batches through the project's data path and uses the experiment's optimizer,
schedule and loss. Warm-up steps are not timed; the repeats of all contenders are interleaved and each
figure is the median over repeats.
`make benchmark-train ARGS="--steps 10 --batch-size 256"`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from project.config import config_dir
from project.data.augment import normalize

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="cifar_fast", help="conf/model/ option (cifar_fast, resnet18)")
parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's data.batch_size")
parser.add_argument("--steps", type=int, default=4, help="timed training steps per repeat")
parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, oneDNN kernels)")
args = parser.parse_args()
for name in ("lightning.pytorch", "lightning.fabric"):  # the Trainer's start-up chatter, once per fit
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore")

workdir = tempfile.TemporaryDirectory(prefix="train_speed-")  # the config's output paths; removed at exit
tmp = workdir.name
overrides = ["+experiment=cifar", f"model={args.model}", f"paths.output_dir={tmp}", f"paths.log_dir={tmp}"]
if args.batch_size:
    overrides.append(f"data.batch_size={args.batch_size}")
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=overrides)
bs = cfg.data.batch_size
total_steps = args.warmup + args.repeats * args.steps  # the plain loops' schedule length
bf16 = cfg.trainer.precision == "bf16-mixed"


def make_datamodule() -> L.LightningDataModule:
    """The experiment's data module with its arrays swapped for random uint8 images of CIFAR's shape."""
    dm = instantiate(cfg.data, val_size=bs)
    rng = np.random.default_rng(0)
    n_train = bs * (args.steps + 2) + bs
    x, y = rng.integers(0, 256, (n_train, 3, 32, 32), np.uint8), rng.integers(0, 10, n_train)
    dm.load_arrays = lambda: (x, y, x[:bs], y[:bs])
    dm.setup()
    return dm


def forever(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def plain_loop(channels_last: bool, autocast: bool) -> Callable[[int], float]:
    """A hand-written loop: augment + normalise, forward (autocast optional), backward, SGD, schedule.
    Returns `run(n)`: the seconds `n` more steps take."""
    dm = make_datamodule()
    torch.manual_seed(cfg.seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = instantiate(cfg.model.net).to(memory_format=layout)
    optimizer = instantiate(cfg.model.optimizer)(params=net.parameters())
    scheduler = instantiate(cfg.model.scheduler)(optimizer=optimizer, total_steps=total_steps)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.model.label_smoothing)
    batches = forever(dm.train_dataloader())

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            images, labels = next(batches)
            x = normalize(dm.augment(images), dm.hparams.mean, dm.hparams.std, channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = criterion(net(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        return time.perf_counter() - start

    return run


class StepClock(L.Callback):
    """The time every training step ends, to time the Trainer's steady state without its start-up."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *_: object) -> None:
        self.ends.append(time.perf_counter())


def project_path() -> Callable[[int], float]:
    """`+experiment=cifar` through the Lightning Trainer (loggers, checkpoints, progress bar, val off).
    Each `run(n)` is one `fit` of n + 1 steps on the same module; the first step is not timed."""
    dm, model = make_datamodule(), instantiate(cfg.model)

    def run(n: int) -> float:
        clock = StepClock()
        trainer = instantiate(
            cfg.trainer,
            max_steps=n + 1,
            limit_val_batches=0,
            logger=False,
            callbacks=[clock],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=dm)
        return clock.ends[-1] - clock.ends[0]

    return run


def data_path(spread: int = 10) -> Callable[[int], float]:
    """Index + augment + normalise alone; a batch takes milliseconds, so time `spread`× more of them."""
    dm = make_datamodule()
    batches = forever(dm.train_dataloader())

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n * spread):
            dm.preprocess(dm.augment(next(batches)[0]))
        return (time.perf_counter() - start) / spread

    return run


print(
    f"{args.model}, batch {bs}, {torch.get_num_threads()} threads, precision {cfg.trainer.precision}, "
    f"median of {args.repeats}×{args.steps} steps after {args.warmup} warm-up"
)
runners = {
    "fp32 eager (plain loop)": plain_loop(channels_last=False, autocast=False),
    "fp32 + channels_last (plain loop)": plain_loop(channels_last=True, autocast=False),
    "project numerics (plain loop)": plain_loop(channels_last=cfg.model.channels_last, autocast=bf16),
    "project path (Lightning Trainer)": project_path(),
    "data path alone": data_path(),
}
# warm up everything, then interleave the timed repeats so a busy machine slows all contenders alike
for run in runners.values():
    run(args.warmup)
times: dict[str, list[float]] = {name: [] for name in runners}
for _ in range(args.repeats):
    for name, run in runners.items():
        times[name].append(run(args.steps))
for name, t in times.items():
    print(f"{name:36s} {args.steps * bs / statistics.median(t):10.1f} img/s")


def speedup(fast: str, slow: str) -> float:
    """Median over repeats of the paired ratio: repeat r of both ran back to back, so load drift cancels."""
    return statistics.median(s / f for f, s in zip(times[fast], times[slow], strict=True))


FP32, SAME, OURS, DATA = (list(runners)[i] for i in (0, 2, 3, 4))
print(f"project path / fp32 eager   {speedup(OURS, FP32):7.2f}x   (target >= 2.0)")
print(f"Lightning overhead          {100 * (speedup(SAME, OURS) - 1):+7.1f}%   (target <= 3%: vs the same numerics)")
print(f"data path / project path    {speedup(DATA, OURS):7.1f}x   (target >= 20)")
