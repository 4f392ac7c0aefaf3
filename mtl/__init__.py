"""mtl: multi-task transfer learning for text (one shared encoder, a head per task)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout holding conf/ and data/
