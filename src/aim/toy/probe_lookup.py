"""Can a small Qwen2 learn the answer-to-letter step on its own? A text-only probe for the toy model.

    python -m aim.toy.probe_lookup --layers 4 --hidden 128 --format letter_first --steps 6000

Each example lists four colour options with their letters and then gives the answer word itself:
"<s> what colour is the circle ? A red B blue C green D cyan blue answer :" -> "B". No video: this
is only the lookup that the bundled model must do after it knows the answer. Measured on this CPU
(batch 32, AdamW lr 1e-3, from scratch, about 0.05 s per step): 4 layers x 128 with letters first
("A red") sit near 0.6 until about 1,500 steps, then learn it suddenly (loss 0.14 at 1,750; batch
accuracy 0.9-1.0 from 2,750 on). Letters after the words ("red A") were still at 0.6 after 2,500 steps;
6 x 192 was not faster; lr 3e-3 did not learn. The multimodal runs so far gave the letter loss at most
about 1,000 steps, diluted by the other losses: pretraining this lookup on text first is the next step.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from aim.data import synthetic as syn
from aim.toy.tokenizer import build_tokenizer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--format", choices=("letter_first", "word_first"), default="letter_first")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    letters = [tok.convert_tokens_to_ids(x) for x in syn.LETTERS]
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        rows, targets = [], []
        for _ in range(args.batch):
            options = list(rng.choice(list(syn.COLOURS), 4, replace=False))
            answer = int(rng.integers(4))
            words = ["<s>", *"what colour is the circle ?".split()]
            for word, letter in zip(options, syn.LETTERS):
                words += [letter, word] if args.format == "letter_first" else [word, letter]
            words += [options[answer], "answer", ":"]
            rows.append(tok.convert_tokens_to_ids(words))
            targets.append(letters[answer])
        logits = model(input_ids=torch.tensor(rows)).logits[:, -1]
        target = torch.tensor(targets)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps - 1:
            acc = (logits.argmax(-1) == target).float().mean().item()
            print(f"step {step} loss {loss.item():.3f} batch accuracy {acc:.2f}", flush=True)


if __name__ == "__main__":
    main()
