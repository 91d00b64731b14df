"""How tests/data/prechange/ was made (run from a scratch folder with genlab main 283b6b3, before
issue 10's refactor): make_fixture.sh trains runs/M for 4 steps (kept here) and full/M for 8 steps in
one go (only its weights' hash is kept), and samples 16 images from runs/M; this script records the
hashes test_prechange.py compares with."""
import hashlib
import json
import sys

import numpy as np
import torch
from safetensors.torch import load_file


def weights_sha256(path) -> str:
    h = hashlib.sha256()
    for k, v in sorted(load_file(path).items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    out = {"made_by": "genlab main 283b6b3, before issue 10 (make_fixture.sh + record.py)",
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
           "models": {}}
    for m in ("dcgan", "cgan", "vae"):
        with np.load(f"samples/{m}.npz") as f:
            img, lab = f["images"], (f["labels"].tolist() if "labels" in f.files else None)
        out["models"][m] = {"weights_step8_sha256": weights_sha256(f"full/{m}/ckpt-00000008/model.safetensors"),
                            "weights_step4_sha256": weights_sha256(f"runs/{m}/ckpt-00000004/model.safetensors"),
                            "sample_n16_seed5_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
                            "sample_shape": list(img.shape), "sample_labels": lab}
    json.dump(out, open(sys.argv[1], "w"), indent=1)
