"""The toy model's word-level tokenizer, built with `tokenizers` from the synthetic benchmark's words."""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers

from aim.data import synthetic as syn

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "<video>", "<image>"]
PROMPT_WORDS = "user video answer : ? what which how many is are there the object way does move appears first colour shape".split()


def vocabulary() -> list[str]:
    words = [*PROMPT_WORDS, *syn.COLOURS, *syn.SHAPES, *syn.DIRECTIONS, *syn.COUNT_WORDS, *syn.LETTERS]
    return SPECIAL_TOKENS + list(dict.fromkeys(words))


def build_tokenizer():
    """A `PreTrainedTokenizerFast` over a fixed word vocabulary (ids are stable across runs)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="<pad>",
        extra_special_tokens={"video_token": "<video>", "image_token": "<image>"},
    )
