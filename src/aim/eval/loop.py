"""Evaluate one adapter + merger + pruner over a dataset, one sample at a time.

Scoring: `letter` compares the option letters' logits at the answer position (what multiple-choice
benchmarks do with real models); `generate` decodes greedily and scores the text by the sample's
`answer_format` (aim.eval.scoring: the first option letter, or a free-form answer normalised and scored
the way its benchmark does, e.g. VQA soft accuracy); `likelihood` leaves the options out of the prompt
and compares the next-token logits of each option's text (lmms-eval's log-likelihood multiple choice, for
single-token options). Free-form samples need `generate`. A record carries `correct` and, when generated,
the per-sample `score`; samples scored together (MME's image pairs, MMBench's circular shifts) carry their
`group`.
Every sample becomes one record in `samples.jsonl` as soon as it is scored; samples already recorded
are skipped, so a rerun in the same output directory resumes.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from aim.data import VideoDecodeError
from aim.efficiency.analytic import llm_prefill_flops
from aim.efficiency.fvcore_count import count_llm_prefill, count_visual
from aim.eval.scoring import parse_letter, score_response
from aim.pruning.hooks import TokenPruner

__all__ = ["FlopsCache", "evaluate", "parse_letter"]


class FlopsCache:
    """FLOPs per distinct layout, counted by fvcore once per layout, not per sample: the LLM prefill
    (with the analytic model beside it), the importance scoring, the lm_head, and per shape of the tower's
    input (frames or images at the tower's resolution) the vision tower, projector and merger. All in
    TFLOPs, 2 FLOPs per multiply-add."""

    def __init__(self, adapter, merger, pruner):
        self.adapter, self.merger, self.pruner = adapter, merger, pruner
        self._llm: dict[tuple[int, ...], dict] = {}
        self._visual: dict[tuple[int, ...], dict] = {}

    def __call__(self, inputs, frames, tokens_per_layer: list[int], modality: str = "video") -> dict:
        key = tuple(tokens_per_layer)
        if key not in self._llm:
            counted = count_llm_prefill(self.adapter, inputs, self.pruner)
            self._llm[key] = {
                "tflops": counted["llm_prefill_flops"] / 1e12,
                "tflops_analytic": llm_prefill_flops(self.adapter.text_config, tokens_per_layer) / 1e12,
                "importance_tflops": counted["importance_flops"] / 1e12,
                "lm_head_tflops": counted["lm_head_flops"] / 1e12,
            }
        visual_key = (modality, tuple(self.adapter.pixel_values(frames, modality).shape))
        if visual_key not in self._visual:
            counted = count_visual(self.adapter, frames, self.merger, modality)
            self._visual[visual_key] = {
                "vision_tower_tflops": counted["vision_tower_flops"] / 1e12,
                "projector_tflops": counted["projector_flops"] / 1e12,
                "merge_tflops": counted["merge_flops"] / 1e12,
            }
        return {**self._llm[key], **self._visual[visual_key]}


def evaluate(adapter, dataset, merger, pruner, records, mode: str = "letter", max_new_tokens: int = 8,
             progress: bool = True, on_record=None) -> None:
    flops = FlopsCache(adapter, merger, pruner)
    pruning = TokenPruner(adapter.decoder_layers, pruner)
    warmed = False
    todo = [s for s in dataset if s.id not in records]
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="evaluating", disable=not progress, unit="sample")
    for sample in todo:
        answer_format = getattr(sample, "answer_format", "letter")
        if answer_format != "letter" and mode != "generate":
            raise ValueError(f"sample {sample.id}: {answer_format!r} answers are free-form text, scored after "
                             f"generating; use eval.mode=generate, not {mode}")
        try:
            frames, question = sample.load()  # the question text may carry subtitles at the sampled frames
        except VideoDecodeError as exc:
            records.append({"id": sample.id, "skipped": True, "error": str(exc)})
            bar.update(1)
            continue
        modality = sample.modality  # "image": frames is the one image, [1, H, W, 3]
        inputs = adapter.prepare(frames, question, sample.options, merger, scoring=mode, modality=modality)
        with pruning.attached(inputs.token_roles) as trace:
            if not warmed:  # the first call pays for allocations and kernel selection: not timed
                adapter.prefill_logits(inputs)
                warmed = True
            adapter.synchronize()
            start = time.perf_counter()
            logits = adapter.prefill_logits(inputs)
            adapter.synchronize()
            prefill_ms = (time.perf_counter() - start) * 1e3
            response = adapter.generate_text(inputs, max_new_tokens) if mode == "generate" else None
        visual_per_layer = trace.visual_tokens_per_layer or [inputs.visual_tokens] * adapter.num_layers
        if mode in ("letter", "likelihood"):
            ids = adapter.option_token_ids(len(sample.options)) if mode == "letter" else adapter.option_text_ids(sample.options)
            prediction = chr(ord("A") + int(torch.argmax(logits[ids])))
            response = prediction
            scored = {"prediction": prediction, "correct": prediction == sample.answer}
        else:
            scored = score_response(answer_format, response, sample.answer, getattr(sample, "answers", []),
                                    len(sample.options))
        group = getattr(sample, "group", "")
        per_layer = [inputs.text_tokens + v for v in visual_per_layer]
        counted = flops(inputs, frames, per_layer, modality)
        records.append({
            "id": sample.id, "question_type": sample.question_type, "categories": sample.categories,
            "answer": sample.answer,
            "prediction": scored["prediction"], "response": response, "correct": scored["correct"],
            **({"score": scored["score"]} if "score" in scored else {}), **({"group": group} if group else {}),
            "visual_tokens": inputs.visual_tokens, "text_tokens": inputs.text_tokens,
            "tokens_per_layer": per_layer, "visual_tokens_per_layer": visual_per_layer,
            **counted, "prefill_ms": prefill_ms,
        })
        bar.update(1)
        if on_record is not None:
            on_record(records.records)
    bar.close()
