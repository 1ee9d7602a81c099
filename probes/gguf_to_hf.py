"""A released GGUF read back by transformers (`gguf_file=`) and saved as an HF model folder:
how dayone turns the real small weights that a package on the index ships into a model every
engine can load. Runs in the GGUF reader's environment (probes/engines:GGUF_READER); the host
says where the file came from (`--meta`, kept in the folder's dayone.json).

    python -m probes.gguf_to_hf FILE.gguf OUT_DIR --dtype bfloat16 --meta '{"id": ...}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gguf", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--dtype", default="bfloat16", help="the release's own dtype, as the weights are saved")
    p.add_argument("--meta", default="{}", help="dayone.json fields (JSON): id, family, lineage ...")
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = args.gguf.parent, args.gguf.name
    # GGUF is untrusted input like any config: no remote code, the file only.
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=args.dtype)
    # Read back, the weights are plain dequantized tensors; transformers still marks the model
    # as quantized "gguf" and refuses to save it: the mark goes, the tensors stay.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    meta = {**json.loads(args.meta), "weights": "real", "dtype": args.dtype}
    (args.out / "dayone.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {
                "out": str(args.out),
                "architecture": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "chat_template": bool(getattr(tok, "chat_template", None)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
