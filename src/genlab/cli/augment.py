"""`genlab augment RUN --per-class N --out DIR`: a synthetic labelled data set in torchvision's
ImageFolder layout (DIR/<class>/<index>.png) + DIR/manifest.json, from a trained run (apps/augment.py)."""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import UsageError
from .base import Parser, command


@command("augment", "write a synthetic labelled data set (ImageFolder layout) from a trained run")
def augment(argv: list[str]) -> None:
    s = Parser(prog="genlab augment")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder)")
    s.add_argument("--per-class", type=int, required=True, help="images per class")
    s.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--classifier", default=None,
                   help="mnist, fashion-mnist, or PATH.safetensors (its sha256 read from PATH.json): labels "
                        "an unconditional model's samples (default mnist) and applies --min-confidence")
    s.add_argument("--min-confidence", type=float, default=0.0,
                   help="keep a sample only if the classifier's p(label|x) >= this (default 0: keep all)")
    s.add_argument("--max-draws", type=int, help="samples to generate at most (default 20 x per-class x classes)")
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = s.parse_args(argv)
    for flag, v, lo in (("--batch-size", args.batch_size, 1), ("--max-draws", args.max_draws, 1),
                        ("--seed", args.seed, 0)):
        if v is not None and (v < lo or v > 2 ** 63 - 1):
            raise UsageError(f"{flag} must be in {lo}..{2 ** 63 - 1}, got {v}")
    import torch
    from ..apps.augment import check_out, check_request, check_space, manifest, save_image_folder
    from ..apps.augment import augment as draw_set
    from ..run import load
    out = check_out(args.out, args.overwrite)  # before any work: refuse a non-empty --out early
    model = load(args.run)
    name = args.classifier or ("mnist" if not model.num_classes else None)
    if name is None and args.min_confidence:
        name = "mnist"
    classifier, about = _classifier(name) if name else (None, None)
    k = check_request(model, args.per_class, args.min_confidence, classifier)
    check_space(args.per_class, k, model.shape, out)
    result = draw_set(model, args.per_class, torch.Generator().manual_seed(args.seed), classifier,
                      args.min_confidence, args.batch_size, args.max_draws)
    info = manifest(model, result, args.seed, about)
    info["command"] = "genlab augment " + " ".join(argv)
    save_image_folder(result, out, info, args.overwrite)
    print(json.dumps({"out": str(out), "images": len(result.images), "drawn": result.drawn,
                      "rejected": result.rejected, "labels_from": result.labels_from}))


def _classifier(name: str):
    """(Classifier, its manifest record) for a pinned name or PATH.safetensors (+ PATH.json's sha256,
    the record `python -m genlab.metrics.classifier` writes beside its weights)."""
    from ..metrics.classifier import PINNED, load_classifier
    if name in PINNED:
        return load_classifier(name), {"name": name, "sha256": PINNED[name][1]}
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"--classifier {name!r} is neither a file nor one of {', '.join(PINNED)}")
    record = path.with_suffix(".json")
    try:
        sha = json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--classifier {path} needs {record} with its sha256 (as written by "
                         f"python -m genlab.metrics.classifier)") from None
    return load_classifier(str(path), sha), {"path": str(path.resolve()), "sha256": sha}
