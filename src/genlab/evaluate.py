"""Scoring a trained run (or an npz of samples) against a held-out reference set: a library function
returning the report as a dict (`genlab eval` is its command line, in cli/eval.py).

    from genlab.evaluate import evaluate
    report = evaluate("runs/dc", metrics="fd,kid", n=2000)           # the dict the JSON holds
    report = evaluate("samples.npz", ref="mnist", data_dir="../shared/data/mnist")
    report = evaluate("runs/vae", metrics="nll", k=5000)              # IWAE NLL on 1,000 test images
    report = evaluate("runs/stacked", protocol="stacked-mnist")        # modes out of 1000, KL to uniform

Reference set = the test split of the run's data (mnist-5k, a subset of MNIST's training images, is
scored against the MNIST test split); `memorisation` compares with the run's training split. The
reference statistics and their on-disk cache ($GENLAB_CACHE/ref) are in reference.py, the sources
and the model-level scores (NLL, Stacked MNIST) in scores.py, the training loop's quick health check
in metrics/health.py.

Every score in the JSON carries its N, the feature extractor (name + weights sha256), the reference
set and the protocol.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .io import atomic_write_json
from .reference import reference_info, reference_stats
from .registry import UsageError

ALIASES = {"score": "cs", "coverage": "classes"}
MODEL_METRICS = ("nll",)              # functions of the model, not of features
PROTOCOL_NAMES = ("auto", "standard", "stacked-mnist")
DEFAULT_N = 10_000
DEFAULT_NLL_N = 1_000
STACKED_N = 26_000

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


@dataclass
class EvalOptions:
    """How to score; the fields are `genlab eval`'s options (see `genlab eval --help`)."""
    metrics: str | list | None = None   # None: the defaults (+ accuracy for conditional samples)
    n: int | None = None                # samples (nll: test images); None: the metric's default
    seed: int = 0
    ref: str | None = None              # reference data (default: the run's data; npz: required)
    data_dir: str | None = None
    features: str | None = None         # a FEATURES name; None: the reference data's default
    weights: str | None = None          # weights file of an extractor that locates its own
    protocol: str = "auto"              # auto, standard or stacked-mnist
    k: int = 5000                       # importance samples per image (nll)
    batch_size: int = 500               # samples per generator call
    nll_batch: int = 2500               # rows per decoder pass (nll)
    json_path: str | Path | None = None  # write the report here too
    progress: Callable[[str], None] | None = None

    def check(self, features) -> None:
        if self.n is not None and self.n < 2:
            raise UsageError(f"--n must be >= 2, got {self.n}")
        if self.k < 1:
            raise UsageError(f"--k must be >= 1, got {self.k}")
        if self.protocol not in PROTOCOL_NAMES:
            raise UsageError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOL_NAMES)}")
        extractor = features[self.features] if self.features else None  # unknown: one-line error
        if self.weights is not None and (extractor is None or extractor.locate is None):
            raise UsageError("; ".join(f"{e.weights_flag} is for --features {e.name} ({e.flag_hint})"
                                       for e in features.values() if e.locate) or "no extractor takes a weights file")


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


# ------------------------------------------------------------------------------------ evaluation
def evaluate(source, options: EvalOptions | None = None, **kwargs) -> dict:
    """Score a run folder (or checkpoint folder) or an npz of samples; returns the JSON report and
    writes it to `json_path` when given. Options: an EvalOptions, or its fields as keywords."""
    import torch
    from .metrics.threads import blas_threads
    o = EvalOptions(**{**(asdict(options) if options else {}), **kwargs})
    with blas_threads(torch.get_num_threads()):
        return _evaluate(Path(source), o)


def _evaluate(source: Path, o: EvalOptions) -> dict:
    import torch
    from .metrics import FEATURES
    from .scores import open_source, nll_score, stacked_score
    t_start = time.perf_counter()
    if source.suffix == ".npz" and not source.is_file():
        raise UsageError(f"samples file {source} not found")
    if source.suffix != ".npz" and not source.is_dir():
        raise UsageError(f"{source} is neither a run folder nor an .npz of samples")
    o.check(FEATURES)
    src = open_source(source, o.ref, o.data_dir)
    protocol = o.protocol
    if protocol == "auto":
        protocol = "stacked-mnist" if src.data == "stacked-mnist" and o.metrics is None else "standard"
    report = {"genlab_eval": 1, "source": src.info, "protocol": protocol, "seed": o.seed, "scores": {}}
    if protocol == "stacked-mnist":
        if o.metrics is not None:
            raise UsageError("--protocol stacked-mnist reports modes and KL only; drop --metrics")
        report["scores"]["stacked-mnist"] = stacked_score(src, o.n or STACKED_N, o.seed, o.batch_size)
    else:
        names = parse_metrics(o.metrics, src.conditional and (src.model is not None or _labels_fit(src.labels)))
        if o.features and not FEATURES[o.features].has_probs:
            names = _without_class_metrics(names, o.features, explicit=o.metrics is not None)
        if "nll" in names:
            report["scores"]["nll"] = nll_score(src, o.n or DEFAULT_NLL_N, o.k, o.seed, o.nll_batch, o.progress)
        feature_names = [m for m in names if m not in MODEL_METRICS]
        if feature_names:
            report["scores"].update(_feature_scores(feature_names, src, o))
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    report["torch_threads"] = torch.get_num_threads()
    if o.json_path:  # a write error keeps the scores: the report says why, the CLI prints them first
        try:
            report["json"] = str(atomic_write_json(o.json_path, report, durable=False))
        except OSError as e:
            report["json_error"] = f"cannot write {o.json_path}: {e.strerror or e}"
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


def _feature_scores(names: list[str], src, o: EvalOptions) -> dict:
    from .metrics import FEATURES, compute, extract
    if "accuracy" in names and not src.conditional:
        raise UsageError("the accuracy metric needs a conditional model (or an npz with 'labels')")
    options, path = {}, None
    if o.features:  # weights located and verified before sampling: a missing file fails fast
        options, _, path = FEATURES[o.features].resolve(o.weights, o.progress)
    where = (src.data, src.data_dir, src.image_size)
    ref = reference_stats(where[0], "test", *where[1:], o.features, weights=path, progress=o.progress)
    train = None
    if "memorisation" in names:
        train = reference_stats(where[0], "train", *where[1:], ref["name"], weights=path, progress=o.progress)
    ext = FEATURES[ref["name"]]
    x, y, n = src.draw(o.n or DEFAULT_N, o.seed, o.batch_size)
    fake = extract(ref["name"], x, **options)
    fake["labels"] = None if y is None else y.numpy()
    notes = comparability_warnings(tuple(x.shape[1:]), ref, n, fake["features"].shape[1], names)
    for w in notes:
        warnings.warn(w)
    ref_info = reference_info(ref)
    feat_info = {"name": ref["name"], "weights_sha256": ref["weights_sha256"], **ext.report,
                 **({"weights_file": path} if path else {})}
    sampling = f"{src.sampling(n, o.seed, o.batch_size)}; {ext.input_rule}"
    header = {"features", "weights_sha256", "n_fake", "n_real", "n_train"}
    scores = {}
    for name in names:
        values = {k: v for k, v in compute([name], fake, ref, train).items() if k not in header}
        scores[name] = {"values": values, "n": n, "n_reference": ref_info["n"], "features": feat_info,
                        "reference": ref_info,
                        "protocol": f"{ext.protocol(name, PROTOCOLS.get(name, name))}; {sampling}"}
        if name == "memorisation":
            scores[name]["train"] = reference_info(train)
        if notes:
            scores[name]["warnings"] = notes
    return scores


def comparability_warnings(shape: tuple, ref: dict, n: int, dim: int, names: list[str]) -> list[str]:
    """What makes a score hard to compare, said once: samples whose channels or size differ from the
    reference images (the extractor converts them, so the score mixes that conversion in), and an N
    too small for a metric (FD's covariance of `dim`-dim features is singular below N = dim and biased
    upwards at any finite N, Chong & Forsyth 2020; PR's k=3 neighbourhoods need N > 3)."""
    out = []
    if tuple(ref.get("shape") or shape) != shape:
        c, h, w = shape
        rc, rh, rw = ref["shape"]
        out.append(f"samples are {c}x{h}x{w} but the reference {ref['data']}/{ref['split']} is "
                   f"{rc}x{rh}x{rw}: the extractor converts both, so the scores include that conversion")
    if "fd" in names and n < 2 * dim:
        out.append(f"fd from N={n:,} samples of {dim}-dim features is strongly biased (N < {2 * dim:,}); "
                   f"compare FDs only at equal N, or use kid (unbiased)")
    if "pr" in names and n <= 3:
        out.append(f"pr needs more than 3 samples (k=3 neighbours), got N={n}")
    return out
