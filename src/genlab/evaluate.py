"""`genlab eval`: score a trained run (or an npz of samples) against a held-out reference set.

    genlab eval runs/dc                                   # 10,000 samples vs the reference split
    genlab eval runs/dc --metrics fd,kid,pr,score,coverage --n 10000 --json out.json
    genlab eval samples.npz --ref mnist --data-dir ../shared/data/mnist
    genlab eval runs/vae --metrics nll --k 5000           # IWAE NLL on 1,000 test images
    genlab eval runs/stacked --protocol stacked-mnist     # modes out of 1000, KL to uniform

    from genlab.evaluate import evaluate, reference_stats, health
    report = evaluate("runs/dc", metrics="fd,kid", n=2000)           # the dict the JSON holds

Reference set = the test split of the run's data (mnist-5k, a subset of MNIST's training images, is
scored against the MNIST test split); `memorisation` compares with the run's training split. The
reference statistics and their on-disk cache ($GENLAB_CACHE/ref) are in reference.py.

Every score in the JSON carries its N, the feature extractor (name + weights sha256), the reference
set and the protocol.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from .io import atomic_write_json, sha256_file
from .registry import UsageError
from .reference import _load_reference_images, reference_info, reference_source, reference_stats
# re-exported: `from genlab.evaluate import reference_stats` (train.py, tests, benchmarks) and the
# names that lived here before reference.py keep working
from .reference import ARRAYS, CACHE_VERSION, NO_TEST_SPLIT, REFERENCE_DATA, cache_dir  # noqa: F401

ALIASES = {"score": "cs", "coverage": "classes"}
MODEL_METRICS = ("nll",)              # functions of the model, not of features
DEFAULT_N = 10_000
DEFAULT_NLL_N = 1_000
STACKED_N = 26_000

SAMPLING = ("{n} samples drawn with seed {seed} in batches of {batch} (conditional models: labels "
            "i % K), quantised to uint8 by round((x + 1) * 127.5)")
PROTOCOLS = {  # fd's is the extractor's own (Extractor.protocol_fd)
    "kid": "unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3, 100 subsets of min(1000, N), "
           "RandomState(2020), as torch-fidelity (Binkowski et al. 2018)",
    "pr": "improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. "
          "2020) from k=3 nearest-neighbour balls, Euclidean in feature space",
    "cs": "classifier score: the Inception Score computed with the domain classifier, 10 splits after "
          "a RandomState(2020) shuffle",
    "classes": "argmax-class histogram of the samples; KL to uniform in nats; coverage = share of "
               "classes with >= 10% of their fair share; confident = max p(y|x) >= 0.9",
    "accuracy": "share of samples whose argmax class equals the label they were generated for",
    "memorisation": "nearest-neighbour distances in feature space to the training split, of samples "
                    "vs of held-out reference images (ratio ~1: no copying)",
}


# ----------------------------------------------------------------------------------- metric names
def known_metrics() -> list[str]:
    from .metrics import METRICS
    return sorted(list(METRICS) + list(MODEL_METRICS))


def parse_metrics(spec, conditional: bool = False) -> list[str]:
    """'fd,kid,score' -> registered names (aliases resolved, order kept, duplicates dropped);
    None / 'default' -> the defaults (+ accuracy for conditional samples); 'all' -> the defaults."""
    from .metrics import DEFAULT_METRICS, METRICS
    if spec is None or spec in ("default", "all", ["all"]):
        return list(DEFAULT_METRICS) + (["accuracy"] if conditional else [])
    names = [m.strip() for m in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for m in names:
        if not m:
            continue
        name = ALIASES.get(m, m)
        if name not in METRICS and name not in MODEL_METRICS:
            aliases = ", ".join(f"{a} (= {b})" for a, b in ALIASES.items())
            raise UsageError(f"unknown metric {m!r}; known: {', '.join(known_metrics())}; aliases: {aliases}")
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError(f"--metrics is empty; known: {', '.join(known_metrics())}")
    return out


# ------------------------------------------------------------------------------- training health
def health(model, ref_stats: dict, n: int = 1000, seed: int = 0, batch_size: int = 500) -> dict:
    """Quick check for the training loop (`--eval-every N`): n samples -> FD against the cached
    reference statistics and the class histogram's coverage / KL to uniform.

    `ref_stats` = reference_stats(data, "test", data_dir, image_size) computed once before training.
    Returns {"fd", "class_coverage", "class_kl_uniform", "confident_fraction", "n", "seconds"}; FD
    from 1,000 samples is biased upwards relative to 10,000 (compare values at equal n only). The
    model's train/eval mode and the global RNG state are left as they were.
    """
    import torch
    from .data import to_uint8
    from .metrics import class_balance, extract, frechet_distance_from_stats
    from .metrics.fid import feature_stats
    from .sample import draw
    from .metrics.threads import blas_threads
    t0 = time.perf_counter()
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            x, _ = draw(model, n, seed, None, batch_size)
    finally:
        model.train(was)
    f = extract(ref_stats["name"], to_uint8(x))
    with blas_threads(torch.get_num_threads()):
        mu, sigma = feature_stats(f["features"])
        bal = class_balance(f["probs"])
        fd = frechet_distance_from_stats(mu, sigma, ref_stats["mu"], ref_stats["sigma"])
    return {"fd": fd, "class_coverage": bal["class_coverage"], "class_kl_uniform": bal["class_kl_uniform"],
            "confident_fraction": bal["confident_fraction"], "n": int(n),
            "seconds": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------- sources
def _model_name(model) -> str:
    from .models import MODELS
    return next((k for k, v in MODELS.items() if type(model.config) is v), type(model).__name__)


def _load_samples_npz(path: Path):
    import numpy as np
    import torch
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files:
                raise UsageError(f"{path} has no 'images' array (keys: {', '.join(f.files) or 'none'}); "
                                 f"make one with genlab sample RUN --out FILE.npz")
            x = f["images"]
            y = f["labels"] if "labels" in f.files else None
    except (ValueError, OSError) as e:
        raise UsageError(f"{path} could not be read as a plain npz ({e})") from None
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise UsageError(f"{path}: 'images' must be non-empty uint8 (N, H, W) or (N, C, H, W), "
                         f"got {x.dtype} {x.shape}")
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise UsageError(f"{path}: {len(y)} labels for {len(x)} images")
    x = torch.from_numpy(np.ascontiguousarray(x if x.ndim == 4 else x[:, None]))
    return x, (None if y is None else torch.from_numpy(y.astype(np.int64)))


# ------------------------------------------------------------------------------------ evaluation
def evaluate(source, metrics=None, n: int | None = None, seed: int = 0, ref: str | None = None,
             data_dir: str | None = None, features: str | None = None, protocol: str = "auto",
             k: int = 5000, batch_size: int = 500, nll_batch: int = 2500, json_path=None,
             progress=None, weights=None) -> dict:
    """Score a run folder (or checkpoint folder) or an npz of samples; returns the JSON report and
    writes it to `json_path` when given. See the module docstring and `genlab eval --help`."""
    import torch
    from .metrics.threads import blas_threads
    with blas_threads(torch.get_num_threads()):
        return _evaluate(source, metrics, n, seed, ref, data_dir, features, protocol, k, batch_size,
                         nll_batch, json_path, progress, weights)


def _evaluate(source, metrics, n, seed, ref, data_dir, features, protocol, k, batch_size, nll_batch,
              json_path, progress, weights=None) -> dict:
    import torch
    from .metrics import FEATURES
    t_start = time.perf_counter()
    source = Path(source)
    is_npz = source.suffix == ".npz"
    if is_npz and not source.is_file():
        raise UsageError(f"samples file {source} not found")
    if not is_npz and not source.is_dir():
        raise UsageError(f"{source} is neither a run folder nor an .npz of samples")
    if n is not None and n < 2:
        raise UsageError(f"--n must be >= 2, got {n}")
    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    if protocol not in ("auto", "standard", "stacked-mnist"):
        raise UsageError(f"unknown protocol {protocol!r}; known: auto, standard, stacked-mnist")
    extractor = FEATURES[features] if features else None  # None: the data's default
    if weights is not None and (extractor is None or extractor.locate is None):
        raise UsageError("; ".join(f"{e.weights_flag} is for --features {e.name} ({e.flag_hint})"
                                   for e in FEATURES.values() if e.locate) or "no extractor takes a weights file")

    model, images, labels = None, None, None
    if is_npz:
        images, labels = _load_samples_npz(source)
        src_info = {"kind": "npz", "path": str(source), "sha256": sha256_file(source),
                    "n_images": len(images)}
        if ref is None:
            raise UsageError("scoring an npz of samples needs --ref DATA (e.g. --ref mnist "
                             "--data-dir ../shared/data/mnist)")
        data, train_dir, image_size = ref, data_dir, None
    else:
        from .run import load
        model = load(source)
        tc = getattr(model, "train_config", {}) or {}
        data = ref or tc.get("data")
        if not data:
            raise UsageError(f"{source}: the run does not record its data; pass --ref DATA")
        # the run's own data folder is used for its own data only
        train_dir = data_dir if data_dir is not None else (tc.get("data_dir") if data == tc.get("data") else None)
        image_size = tc.get("image_size") if data == tc.get("data") else None
        src_info = {"kind": "run", "path": str(source), "model": _model_name(model),
                    "checkpoint": str(getattr(model, "checkpoint", "")), "step": getattr(model, "step", None),
                    "data": tc.get("data"), "num_classes": int(getattr(model, "num_classes", 0) or 0)}
    data_dir = train_dir
    if protocol == "auto":
        protocol = "stacked-mnist" if data == "stacked-mnist" and metrics is None else "standard"

    report = {"genlab_eval": 1, "source": src_info, "protocol": protocol, "seed": seed, "scores": {}}
    if protocol == "stacked-mnist":
        if metrics is not None:
            raise UsageError("--protocol stacked-mnist reports modes and KL only; drop --metrics")
        report["scores"]["stacked-mnist"] = _stacked(model, images, labels, n or STACKED_N, seed, batch_size)
    else:
        conditional = bool(labels is not None if is_npz else getattr(model, "num_classes", 0))
        names = parse_metrics(metrics, conditional and (not is_npz or _labels_fit(labels)))
        if extractor is not None and not extractor.has_probs:
            names = _without_class_metrics(names, features, explicit=metrics is not None)
        if "nll" in names:
            if model is None:
                raise UsageError("the nll metric needs a VAE run folder, not an npz of samples")
            report["scores"]["nll"] = _nll(model, data, data_dir, image_size, n or DEFAULT_NLL_N, k, seed,
                                           nll_batch, progress)
        feature_names = [m for m in names if m not in MODEL_METRICS]
        if feature_names:
            report["scores"].update(_feature_scores(feature_names, model, images, labels, n, seed, data,
                                                    data_dir, image_size, features, batch_size, conditional,
                                                    weights, progress))
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    report["torch_threads"] = torch.get_num_threads()
    if json_path:
        report["json"] = str(atomic_write_json(json_path, report, durable=False))
    return report


def _without_class_metrics(names: list[str], features: str, explicit: bool) -> list[str]:
    """An extractor of features only (no class probabilities): the default set loses cs, classes and
    accuracy; asking for them is an error."""
    from .metrics import NEEDS_NO_REAL  # = the metrics of class probabilities
    asked = [m for m in names if m in NEEDS_NO_REAL]
    if asked and explicit:
        raise UsageError(f"--features {features} gives no class probabilities, so no {', '.join(asked)}; "
                         f"use --metrics fd (standard FID), kid, pr or memorisation")
    return [m for m in names if m not in NEEDS_NO_REAL]


def _labels_fit(labels, k: int = 10) -> bool:
    return labels is not None and len(labels) > 0 and int(labels.min()) >= 0 and int(labels.max()) < k


def _draw(model, images, labels, n, seed, batch_size):
    """uint8 samples + requested labels: drawn from the model, or the first n of an npz."""
    if model is None:
        n = len(images) if n is None else min(n, len(images))
        return images[:n], (None if labels is None else labels[:n]), n
    from .data import to_uint8
    from .sample import draw  # imports torchvision (seconds): only when sampling
    x, y = draw(model, n, seed, None, batch_size)
    return to_uint8(x), y, n


def _feature_scores(names, model, images, labels, n, seed, data, data_dir, image_size, features,
                    batch_size, conditional, weights=None, progress=None) -> dict:
    from .metrics import FEATURES, compute, extract
    if "accuracy" in names and not conditional:
        raise UsageError("the accuracy metric needs a conditional model (or an npz with 'labels')")
    options, path = {}, None
    if features:  # weights located and verified before sampling: a missing file fails fast
        options, _, path = FEATURES[features].resolve(weights, progress)
    ref = reference_stats(data, "test", data_dir, image_size, features, weights=path, progress=progress)
    train = None
    if "memorisation" in names:
        train = reference_stats(data, "train", data_dir, image_size, ref["name"], weights=path,
                                progress=progress)
    ext = FEATURES[ref["name"]]
    x, y, n = _draw(model, images, labels, n or DEFAULT_N, seed, batch_size)
    fake = extract(ref["name"], x, **options)
    fake["labels"] = None if y is None else y.numpy()
    ref_info = reference_info(ref)
    feat_info = {"name": ref["name"], "weights_sha256": ref["weights_sha256"], **ext.report,
                 **({"weights_file": path} if path else {})}
    sampling = (SAMPLING.format(n=n, seed=seed, batch=batch_size) if model is not None else
                f"the first {n} images of the npz") + f"; {ext.input_rule}"
    header = {"features", "weights_sha256", "n_fake", "n_real", "n_train"}
    scores = {}
    for name in names:
        values = {k: v for k, v in compute([name], fake, ref, train).items() if k not in header}
        entry = {"values": values, "n": n, "n_reference": ref_info["n"], "features": feat_info,
                 "reference": ref_info, "protocol": f"{ext.protocol(name, PROTOCOLS.get(name, name))}; {sampling}"}
        if name == "memorisation":
            entry["train"] = reference_info(train)
        scores[name] = entry
    return scores


def _stacked(model, images, labels, n, seed, batch_size) -> dict:
    from .metrics import FEATURES
    from .metrics.stacked import classify_channels, mode_stats
    x, y, n = _draw(model, images, labels, n, seed, batch_size)
    modes = classify_channels(x)
    values = mode_stats(modes)
    if y is not None and len(y) and int(y.max()) < 1000 and int(y.min()) >= 0:
        values["conditional_accuracy"] = float((modes == y.numpy()).mean())
    return {"values": values, "n": n, "features": {"name": "mnist-cnn", "weights_sha256": FEATURES["mnist-cnn"].weights_sha256},
            "reference": {"data": "uniform over the 1000 stacked-MNIST modes"},
            "protocol": "Stacked MNIST (Metz et al. 2017; Lin et al. 2018): each RGB channel classified "
                        "by the MNIST classifier, mode = 100 d_r + 10 d_g + d_b; modes = modes with >= 1 "
                        f"sample; KL(mode histogram || uniform over 1000) in nats; "
                        + (SAMPLING.format(n=n, seed=seed, batch=batch_size) if model is not None
                           else f"the first {n} images of the npz")}


def _nll(model, data, data_dir, image_size, n, k, seed, batch, progress) -> dict:
    import torch
    from .metrics.nll import iwae_log_likelihood, nll_report, prepare
    lik = getattr(model, "likelihood", None)
    if not all(hasattr(model, a) for a in ("encode", "decode", "log_likelihood")) or lik is None:
        raise UsageError("the nll metric needs a VAE (a model with encode/decode/log_likelihood); "
                         "this run is a GAN, whose likelihood is not defined")
    src, sp = reference_source(data, "test")
    ds = _load_reference_images(data, src, sp, data_dir, image_size)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    x = prepare(ds.images[idx], lik, g)
    t0 = time.perf_counter()
    parts, step = [], max(1, min(100, len(x)))
    for i in range(0, len(x), step):
        parts.append(iwae_log_likelihood(model, x[i:i + step], k, g, batch))
        if progress:
            progress(f"nll: {i + len(parts[-1])}/{len(x)} images, {time.perf_counter() - t0:.0f} s")
    log_px = torch.cat(parts)
    dims = math.prod(x.shape[1:])
    binar = ("test images dynamically binarised (pixel ~ Bernoulli(grey/255), one draw per image, "
             "Burda et al. 2016)" if lik == "bernoulli" else
             "uint8 test images under the discretised gaussian (256 bins per pixel); bits/dim = "
             "NLL / (C*H*W ln 2)")
    return {"values": nll_report(log_px, lik, dims), "n": len(x), "n_reference": len(ds),
            "features": None, "likelihood": lik, "k": k,
            "reference": {"data": src, "split": sp, "n": len(ds), "image_size": image_size},
            "protocol": f"IWAE bound (Burda et al. 2016, eq. 8) with k={k} importance samples from q(z|x), "
                        f"prior N(0, I), in nats per image (an upper bound on the true NLL); {binar}; "
                        f"{len(x)} test images chosen by torch.randperm (seed {seed}); decoder passes of "
                        f"<= {batch} rows"}


# ------------------------------------------------------------------------------------------- CLI
def add_eval_parser(sub):
    """Register `genlab eval` on the CLI's subparsers."""
    e = sub.add_parser("eval", help="score a run or an npz of samples (FD, KID, PR, ...; NLL)",
                       description="Score a trained run (or an npz of samples) against a held-out "
                                   "reference set; prints a table and writes JSON.")
    e.add_argument("source", help="run folder, ckpt-XXXXXXXX folder, or FILE.npz of samples")
    e.add_argument("--metrics", help="comma-separated: fd, kid, pr, cs (alias score), classes "
                                     "(alias coverage), accuracy, memorisation, nll "
                                     "(default: fd,kid,pr,cs,classes [+ accuracy])")
    e.add_argument("--n", type=int, help=f"samples to draw (default {DEFAULT_N:,}; nll: test images, "
                                          f"default {DEFAULT_NLL_N:,}; stacked-mnist: {STACKED_N:,})")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--ref", help="reference data (default: the run's data); required for an npz")
    e.add_argument("--data-dir", help="folder of the reference data (default: the run's, else the "
                                      "default data root)")
    from .metrics import FEATURES
    e.add_argument("--features", help="feature extractor (default: the data's domain classifier); "
                   + "; ".join(f"{n}: {(x.fn.__doc__ or '').strip().splitlines()[0]}" for n, x in sorted(FEATURES.items())))
    for x in FEATURES.values():  # extractors whose weights file the user names (e.g. not shipped)
        if x.weights_flag:
            e.add_argument(x.weights_flag, metavar="PATH", dest="weights", help=x.weights_help)
    e.add_argument("--protocol", default="auto", choices=("auto", "standard", "stacked-mnist"),
                   help="stacked-mnist: count modes over 1000 (auto: for stacked-mnist runs)")
    e.add_argument("--k", type=int, default=5000, help="importance samples per image for nll (default 5000)")
    e.add_argument("--json", help="output file (default: RUN/eval.json, or SAMPLES.eval.json)")
    e.add_argument("--batch-size", type=int, default=500, help="samples per generator call")
    e.add_argument("--nll-batch", type=int, default=2500, help="rows per decoder pass for nll")
    e.add_argument("--threads", type=int, help="torch and BLAS CPU threads (default: all cores)")
    return e


def default_json_path(source: Path) -> Path:
    if source.suffix == ".npz":
        return source.with_suffix(".eval.json")
    if (source / "MANIFEST.json").is_file():  # a checkpoint folder: keep its contents as committed
        return source.parent / f"eval-{source.name}.json"
    return source / "eval.json"


def cmd_eval(args) -> None:
    source = Path(args.source)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    report = evaluate(source, metrics=args.metrics, n=args.n, seed=args.seed, ref=args.ref,
                      data_dir=args.data_dir, features=args.features, protocol=args.protocol, k=args.k,
                      batch_size=args.batch_size, nll_batch=args.nll_batch,
                      weights=args.weights,
                      json_path=args.json or default_json_path(source),
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(report))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + " ".join("-" if a is None else f"{a:.3g}" for a in v) + "]"
    return "-" if v is None else str(v)


def format_table(report: dict) -> str:
    s = report["source"]
    what = (f"{s['path']} ({s['model']}, step {s['step']})" if s["kind"] == "run" else s["path"])
    lines = [f"genlab eval {what}: protocol {report['protocol']}, seed {report['seed']}, "
             f"{report['seconds']:.1f} s"]
    lines.append(f"{'metric':13s} {'value':24s} {'':>12s}  N / reference / features")
    for name, e in report["scores"].items():
        ref = e.get("reference") or {}
        feat = e.get("features") or {}
        where = f"{ref.get('data')}/{ref.get('split')}" if ref.get("split") else ref.get("data", "")
        tail = f"N={e['n']} vs {where}" + (f" ({ref['n']})" if ref.get("n") else "") + \
               (f", {feat['name']} {feat['weights_sha256'][:12]}" if feat else "") + \
               (f" {feat['resize']}" if feat.get("resize") else "") + \
               (f", k={e['k']}" if "k" in e else "")
        for i, (key, v) in enumerate(e["values"].items()):
            lines.append(f"{name if i == 0 else '':13s} {key:24s} {_fmt(v):>12s}  {tail if i == 0 else ''}")
    if "json" in report:
        lines.append(f"json: {report['json']}")
    return "\n".join(lines)
