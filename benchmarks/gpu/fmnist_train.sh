#!/usr/bin/env bash
# Train the shipped Fashion-MNIST UNet (width 64, bf16 autocast on one GPU) for MINUTES minutes and
# pack its EMA weights (fp16) with the loss curve and train.json into $OUT/fmnist (bench/models/fmnist).
set -euo pipefail
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
MINUTES=${MINUTES:-4}
DEVICE=${DEVICE:-cuda}
RUN=${RUN:-/tmp/fmnist-run}
python3 -m bench.cli images train --dataset fashion-mnist --data-root "$DATA" --out "$RUN" \
  --train-steps 200000 --batch 512 --lr 3e-4 --width 64 --device "$DEVICE" --max-minutes "$MINUTES" \
  --log-every 500 --checkpoint-every 100000
python3 -c "from bench.studies.images.ship import pack; pack('$RUN', '$OUT/fmnist')"
