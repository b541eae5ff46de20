"""Issue #24's two-GPU check: the same model on one GPU and spread over two by `model.device_map` gives the same
answers, unreduced and with every pruning path the hook has (AIM's PageRank with merging, FastV, HoliTom's merge,
PDrop), prefill and cached decoding.

    python benchmarks/device_map_logits.py [--out DIR] [--frames 32] [--split balanced] [--checkpoint DIR]
    python benchmarks/device_map_logits.py --cpu-check      # the same code on the tiny preset, CPU only

Needs two CUDA GPUs with room for LLaVA-OneVision-7B in bf16 (~16 GB; each holds about half when split). Steps:
1. `model=llava_onevision_7b model.random_init=true` (seed 0) on GPU 0; saved with `save_pretrained` to
   --checkpoint (default a temporary dir; ~16 GB of disk);
2. per row: 32 random frames (seeded) through the vision tower, the merger and the LLM prefill under the row's
   pruner (`aim.models` adapter calls, no tokenizer: random prompt ids), the next-token logits, the visual tokens
   each layer kept, and 8 greedily decoded tokens;
3. the model freed, the checkpoint loaded again through `from_pretrained(device_map=--split)` over GPUs 0 and 1
   (the path `model.device_map` takes), the same rows run, and compared: the largest logit difference
   (relative to the logits' spread), the same argmax, the same kept indices at every layer, the same decoded ids.
Writes `device_map_logits.json` under --out and prints one line per row; exits 1 when a row differs beyond
`--tolerance` (relative logit difference) or in its kept tokens or decoded ids. Not run yet (no machine with two
GPUs was lent); `--cpu-check` runs the same steps on `llava_onevision_tiny` with an explicit map of "cpu" entries.
"""
from __future__ import annotations

import argparse
import gc
import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from aim.config import validate
from aim.merging import MERGERS
from aim.models import MODELS
from aim.paths import CONF_DIR
from aim.pruning import PRUNERS
from aim.pruning.hooks import TokenPruner

ROWS = {  # label -> (merger fields, pruner fields); layers of a 28-layer LLM (the tiny preset scales them)
    "unreduced": ({"name": "none"}, {"name": "none"}),
    "AIM: merge 25% + PageRank 14/22": ({"name": "aim", "ratio": 0.25}, {"name": "aim", "l1": 14, "l2": 22}),
    "FastV k=2 keep 50%": ({"name": "none"}, {"name": "fastv", "k": 2, "keep": 0.5}),
    "HoliTom's inner merge k=18": ({"name": "none"}, {"name": "holitom", "k": 18, "keep": 0.5}),
    "PDrop": ({"name": "none"}, {"name": "pdrop"}),
}
TINY_LAYERS = {"l1": 1, "l2": 3, "k": 1}  # the tiny preset's 4 layers


def composed(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def run_rows(adapter, frames: int, rows: dict, new_tokens: int, seed: int = 0) -> dict:
    """Each row's logits (on the host, fp32), kept indices per layer and greedy ids, from seeded random frames."""
    out = {}
    rng = np.random.default_rng(seed)
    size = adapter.image_size
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    ids = torch.randint(0, adapter.text_config.vocab_size, (100,), generator=torch.Generator().manual_seed(seed)).tolist()
    before, after = ids[:10], ids[10:99]
    for label, (merger_fields, pruner_fields) in rows.items():
        m, p = dict(merger_fields), dict(pruner_fields)
        merger, pruner = MERGERS.build(m.pop("name"), **m), PRUNERS.build(p.pop("name"), **p)
        with torch.no_grad():
            encoded = adapter.encode_frames(adapter.pixel_values(video), needs=getattr(merger, "needs", ()))
            features = encoded.pop("features")
            inputs = adapter.assemble_clip(before, adapter.reduce(merger, after, features, **encoded), len(features), after)
            with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles) as trace:
                logits = adapter.prefill_logits(inputs).float().cpu()
            with TokenPruner(adapter.decoder_layers, pruner).attached(inputs.token_roles):
                decoded = adapter.generate_ids(inputs, new_tokens, stop_at_eos=False)
        out[label] = {"logits": logits, "kept": {i: k.cpu() for i, k in trace.kept_indices.items()}, "ids": decoded,
                      "visual_tokens_per_layer": trace.visual_tokens_per_layer}
    return out


def compare(one: dict, split: dict, tolerance: float) -> dict:
    rows = {}
    for label, a in one.items():
        b = split[label]
        diff = float((a["logits"] - b["logits"]).abs().max())
        spread = float(a["logits"].std())
        same_kept = a["kept"].keys() == b["kept"].keys() and all(torch.equal(a["kept"][i], b["kept"][i]) for i in a["kept"])
        rows[label] = {"max_abs_logit_diff": diff, "relative_diff": diff / spread, "same_argmax":
                       int(a["logits"].argmax()) == int(b["logits"].argmax()), "same_kept_tokens": same_kept,
                       "same_decoded_ids": a["ids"] == b["ids"], "visual_tokens_per_layer": a["visual_tokens_per_layer"]}
        rows[label]["ok"] = (rows[label]["relative_diff"] <= tolerance and same_kept and rows[label]["same_decoded_ids"]
                             and rows[label]["same_argmax"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/device_map_logits")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--split", default="balanced", help="the device_map strategy over GPUs 0 and 1")
    ap.add_argument("--checkpoint", default=None, help="where the random checkpoint is saved (default: a temp dir)")
    ap.add_argument("--tolerance", type=float, default=1e-2, help="largest logit difference / the logits' std")
    ap.add_argument("--cpu-check", action="store_true", help="the tiny preset on the CPU with an explicit map")
    args = ap.parse_args(argv)

    if args.cpu_check:
        valid = composed(["model=llava_onevision_tiny"])
        rows = {k: (m, {f: TINY_LAYERS.get(f, v) for f, v in p.items()}) for k, (m, p) in ROWS.items()}
        layers = valid.model.architecture["text_config"]["num_hidden_layers"]
        split_map = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu", "model.image_newline": "cpu",
                     "model.language_model.embed_tokens": "cpu", "model.language_model.rotary_emb": "cpu",
                     **{f"model.language_model.layers.{i}": "cpu" for i in range(layers)},
                     "model.language_model.norm": "cpu", "lm_head": "cpu"}
        split_fields = {"device_map": split_map}
        args.frames = min(args.frames, 4)
    else:
        if torch.cuda.device_count() < 2:
            raise SystemExit(f"device_map_logits: needs two CUDA GPUs, this machine has {torch.cuda.device_count()}")
        valid = composed(["model=llava_onevision_7b", "model.random_init=true", "model.device=cuda:0"])
        rows = ROWS
        split_fields = {"device_map": args.split, "device": "cuda", "gpus": 2}
    adapter_class = MODELS.get(valid.model.name)

    torch.manual_seed(0)
    one = adapter_class.from_config(**asdict(valid.model))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint or tmp)
        one.model.save_pretrained(checkpoint)
        on_one = run_rows(one, args.frames, rows, args.new_tokens)
        del one
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

        cfg = replace(adapter_class.config_class(**asdict(valid.model)), pretrained=str(checkpoint), random_init=False,
                      architecture=None, **split_fields)
        model = getattr(__import__("transformers"), adapter_class.hf_model_class).from_pretrained(
            checkpoint, dtype=one_dtype(cfg), attn_implementation=cfg.attn_implementation,
            device_map=cfg.device_map, max_memory=cfg.max_memory)
        placed = sorted({str(t.device) for t in model.parameters()})
        split = adapter_class(model, None, cfg)
        on_split = run_rows(split, args.frames, rows, args.new_tokens)
    result = compare(on_one, on_split, args.tolerance)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": valid.model.pretrained, "frames": args.frames, "split": split_fields["device_map"]
              if isinstance(split_fields["device_map"], str) else "explicit", "devices": placed,
              "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "rows": result}
    (out / "device_map_logits.json").write_text(json.dumps(record, indent=1))
    print(f"{valid.model.pretrained}: one device vs {record['split']} over {placed}, {args.frames} frames")
    for label, r in result.items():
        print(f"{'ok  ' if r['ok'] else 'DIFF'} {label:<34} max |dlogit| {r['max_abs_logit_diff']:.3g} "
              f"({r['relative_diff']:.2g} of std), argmax {r['same_argmax']}, kept {r['same_kept_tokens']}, "
              f"decoded {r['same_decoded_ids']}")
    return 0 if all(r["ok"] for r in result.values()) else 1


def one_dtype(cfg):
    from aim.models.base import DTYPES

    return DTYPES[cfg.dtype]


if __name__ == "__main__":
    raise SystemExit(main())
