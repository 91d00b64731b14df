set -e
PY="/work/main/.venv/bin/python"
export PYTHONPATH=/work/house/src
cd /tmp/fx
$PY - <<'P'
import numpy as np
rng = np.random.default_rng(0)
x = rng.integers(0, 40, size=(40, 1, 16, 16), dtype=np.uint8)
y = np.arange(40) % 10
for i, k in enumerate(y):
    x[i, 0, k + 3:k + 5] = 250
np.savez("data.npz", images=x, labels=y)
P
for m in dcgan cgan vae; do
  extra=""; [ $m != vae ] && extra="--ngf 2 --ndf 2 --z-dim 4 --lr-g 0.05 --lr-d 0.05"
  common="$m --preset tiny --data npz --data-dir data.npz --precision fp32 --threads 1 --seed 3 --sample-every 0 --ckpt-every 0 --log-every 1 $extra"
  $PY -m genlab.cli train $common --max-steps 4 --out runs/$m >/dev/null 2>&1
  $PY -m genlab.cli train $common --max-steps 8 --out full/$m >/dev/null 2>&1
  $PY -m genlab.cli sample runs/$m --n 16 --seed 5 --out samples/$m.npz
done
