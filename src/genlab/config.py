"""Configuration: dataclasses are the single source of truth.

Defaults live in the dataclass fields; `add_flags` generates one CLI flag per field; `load_file` reads
TOML/JSON; `resolve` merges defaults < file < flags and validates, naming the fix for anything wrong.
A field's metadata may carry `help`, `choices`, `min` (inclusive lower bound), `budget=True`
(may change on --resume) and `parse` (a function str | list -> value, raising UsageError, for the
list-valued options: the flag is read as a string and parsed with the file's values).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from .precision import DEVICES, PRECISIONS
from .classes import parse_classes
from .registry import UsageError


def opt(default, help="", **meta):
    """A dataclass field with CLI metadata."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """What every run needs, whatever the model (the model's own recipe is its config class)."""
    data: str = opt("mnist-5k", "data source (genlab list shows them)")
    data_dir: str | None = opt(None, "folder (or file, for npz) holding the data")
    download: bool = opt(False, "download the data set when it is not found locally")
    image_size: int | None = opt(None, "resize images to SIZE x SIZE (default: native size)", min=8)
    out: str | None = opt(None, "run folder (default runs/<model>)", budget=True)
    max_steps: int | None = opt(None, "total generator steps of the run (default: the model's recipe)",
                                min=1, budget=True)
    max_seconds: float | None = opt(None, "wall-time limit of this invocation", min=0, budget=True)
    seed: int = opt(0, "the one seed of the run (data order, noise, initial weights)", min=0,
                    max=2 ** 63 - 1 - 1_000_003 * 2 ** 20)  # torch seeds are 64-bit; Batches adds epochs
    precision: str = opt("auto", "autocast precision of forward passes: auto = bf16 where the hardware "
                         "runs it natively, else fp32 (genlab info shows the choice)", choices=PRECISIONS)
    threads: int | None = opt(None, "torch CPU threads (default: all cores); recorded", min=1,
                              budget=True)
    device: str = opt("cpu", "cpu, cuda or auto", choices=DEVICES, budget=True)
    sample_every: int = opt(500, "write samples/step-XXXXXX.png every N steps (0: never)", min=0,
                            budget=True)
    ckpt_every: int = opt(1000, "commit a checkpoint every N steps (0: only at the end)", min=0,
                          budget=True)
    log_every: int = opt(50, "log losses to metrics.jsonl every N steps", min=1, budget=True)
    keep_last: int = opt(2, "checkpoints kept on disk", min=1, budget=True)
    eval_every: int = opt(0, "every N steps, score 1,000 samples (FD, class coverage) into "
                             "metrics.jsonl and warn on a coverage collapse (0: never)", min=0, budget=True)
    classes: list[int] | None = opt(None, "keep only the images with these labels, e.g. 0,1,2 "
                                    "(labelled data only; labels keep their values)",
                                    parse=parse_classes, metavar="0,1,2")
    strict: bool = opt(False, "folder data: fail on the first unreadable image instead of skipping "
                              "it (skipped ones are listed in RUN/skipped_images.txt)", budget=True)

    def validate(self):
        # torch's thread pool crashes (segfault) far past the core count; more than a few per core
        # only slows training down
        cap = 4 * (os.cpu_count() or 1)
        if self.threads is not None and self.threads > cap:
            raise UsageError(f"--threads must be <= {cap} (4 per core on this machine), got {self.threads}")


def _base_type(tp):
    """int | None -> int; the type argparse should parse."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return args[0]
    return tp


def _hints(cls):
    return typing.get_type_hints(cls)


def add_flags(parser: argparse.ArgumentParser, cls, title: str):
    """One `--field-name` flag per dataclass field; defaults are SUPPRESSed so that only the flags a
    user typed reach `resolve` (they override the config file)."""
    group = parser.add_argument_group(title)
    hints = _hints(cls)
    for f in fields(cls):
        tp = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{f.metadata.get('help', '')} (default: {default})"
        if "parse" in f.metadata:  # read as text; _check_value parses it (with the file's values)
            group.add_argument(flag, dest=f.name, type=str, default=argparse.SUPPRESS, help=help_,
                               metavar=f.metadata.get("metavar", "VALUE"))
        elif tp is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_)
        else:
            group.add_argument(flag, dest=f.name, type=tp, default=argparse.SUPPRESS,
                               choices=f.metadata.get("choices"), help=help_, metavar=tp.__name__.upper())


def load_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {path} not found")
    try:
        if p.suffix == ".toml":
            return tomllib.loads(p.read_text())
        if p.suffix == ".json":
            return json.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"config file {path} is not valid {p.suffix[1:].upper()}: {e}") from None
    raise UsageError(f"config file {path} must end in .toml or .json")


def _check_value(cls, name, value):
    known = {f.name: f for f in fields(cls)}
    if name not in known:  # e.g. a run saved by a genlab version that had this option
        close = difflib.get_close_matches(name, known, n=1)
        raise UsageError(f"unknown {cls.__name__} option {name!r}"
                         + (f"; did you mean {close[0]!r}?" if close else
                            f"; known: {', '.join(sorted(known))}"))
    f = known[name]
    tp = _hints(cls)[name]
    base = _base_type(tp)
    flag = "--" + name.replace("_", "-")
    if value is None:
        if type(None) not in typing.get_args(tp):
            raise UsageError(f"{flag} needs a value")
        return None
    if "parse" in f.metadata:
        return f.metadata["parse"](value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise UsageError(f"{flag} must be {base.__name__}, got {value!r}")
    if base is float and not math.isfinite(value):  # nan passes every comparison below
        raise UsageError(f"{flag} must be a finite number, got {value!r}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise UsageError(f"{flag} must be one of {', '.join(map(str, f.metadata['choices']))}, "
                         f"got {value!r}")
    if "min" in f.metadata and value < f.metadata["min"]:
        raise UsageError(f"{flag} must be >= {f.metadata['min']}, got {value!r}")
    if "max" in f.metadata and value > f.metadata["max"]:
        raise UsageError(f"{flag} must be <= {f.metadata['max']}, got {value!r}")
    return value


def split_keys(values: dict, classes: list, where: str) -> list[dict]:
    """Route flat keys to the dataclass that owns them; an unknown key is an error naming the
    closest known one."""
    known = {f.name: i for i, c in enumerate(classes) for f in fields(c)}
    parts = [{} for _ in classes]
    for k, v in values.items():
        key = k.replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
            raise UsageError(f"unknown option {k!r} in {where}{hint}")
        parts[known[key]][key] = v
    return parts


def build(cls, values: dict, preset: str | None = None):
    """Instantiate `cls` from defaults, an optional named preset (class attribute `presets`) and
    `values`, checking every value; then run the class's own `validate()` if it has one."""
    merged = {}
    if preset:
        presets = getattr(cls, "presets", {})
        if preset not in presets:
            raise UsageError(f"unknown preset {preset!r}; known: {', '.join(presets) or '(none)'}")
        merged.update(presets[preset])
    merged.update(values)
    cfg = cls(**{k: _check_value(cls, k, v) for k, v in merged.items()})
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def budget_fields(cls) -> set[str]:
    return {f.name for f in fields(cls) if f.metadata.get("budget")}
