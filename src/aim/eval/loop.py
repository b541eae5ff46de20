"""Evaluate one adapter + merger + pruner over a dataset, one sample at a time.

Scoring: `letter` compares the option letters' logits at the answer position (what multiple-choice
benchmarks do with real models); `generate` decodes greedily and scores the text by the sample's
`answer_format` (aim.eval.scoring: the first option letter, or a free-form answer normalised and scored
the way its benchmark does, e.g. VQA soft accuracy); `likelihood` leaves the options out of the prompt
and compares the next-token logits of each option's text (lmms-eval's log-likelihood multiple choice, for
single-token options). Free-form samples need `generate`. A record carries `correct` and, when generated,
the per-sample `score`; samples scored together (MME's image pairs, MMBench's circular shifts) carry their
`group`. A sample without an answer (unlabeled data) is answered but not scored: `correct` is None. A sample
that cannot be asked (`Sample.skip_reason`) or whose video cannot be decoded is recorded as skipped, with
the reason as its `error`. A record's `num_frames` is how many frames were sampled (at most the video's).
Generated records also carry what decoding cost (Adapter.generate_ids): `ttft_ms` (prefill to the first
token), `decode_tokens_per_s` (None when the first token ended the answer), `decode_tokens` and
`kv_cache_bytes` (the KV cache the pruned prefill leaves).
With a `Fidelity` (aim.eval.fidelity), a record also carries `agreement` with the unreduced model's answer,
`kl` (KL(full || reduced) over the answer options) and `reference_prediction`; the unreduced answer comes
from the reference cache, computed here (outside the timed prefill) when the cache lacks it.
Every sample becomes one record in `samples.jsonl` as soon as it is scored; samples already recorded
are skipped, so a rerun in the same output directory resumes.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from aim.data import VideoDecodeError
from aim.efficiency.analytic import fastv_prefill_flops, llm_prefill_flops
from aim.efficiency.fvcore_count import count_llm_prefill, count_visual
from aim.eval.fidelity import option_log_probs
from aim.eval.scoring import parse_letter, score_response
from aim.merging import NoMerge
from aim.pruning.hooks import TokenPruner
from aim.tokens import QUESTION_TEXT

__all__ = ["FlopsCache", "evaluate", "parse_letter", "predict"]


UNREDUCED = NoMerge()  # the reference answer: every visual token, no pruning hooks attached


class FlopsCache:
    """FLOPs per distinct layout, counted by fvcore once per layout, not per sample: the LLM prefill
    (with the analytic model beside it), the importance scoring, the lm_head, and per shape of the tower's
    input (frames or images at the tower's resolution) the vision tower, projector and merger. All in
    TFLOPs, 2 FLOPs per multiply-add; `tflops_fastv` is the LLM prefill in FastV's convention
    (aim.efficiency.analytic.fastv_prefill_flops) beside the real `tflops`."""

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
                # FastV's convention at the same counts (4nd^2 + 2n^2d + 2ndm per layer), for other papers' tables
                "tflops_fastv": fastv_prefill_flops(self.adapter.text_config, tokens_per_layer) / 1e12,
                "importance_tflops": counted["importance_flops"] / 1e12,
                "lm_head_tflops": counted["lm_head_flops"] / 1e12,
            }
        visual_key = (modality, tuple(self.adapter.pixel_values(frames, modality).shape))
        if visual_key not in self._visual:
            # the prompt's text as the LLM sees it after the visual tokens, for a merger that needs it (CDPruner)
            text = inputs.inputs_embeds[0, (inputs.token_roles == QUESTION_TEXT).to(inputs.inputs_embeds.device)]
            counted = count_visual(self.adapter, frames, self.merger, modality, text)
            self._visual[visual_key] = {
                "vision_tower_tflops": counted["vision_tower_flops"] / 1e12,
                "projector_tflops": counted["projector_flops"] / 1e12,
                "merge_tflops": counted["merge_flops"] / 1e12,
            }
        return {**self._llm[key], **self._visual[visual_key]}


def predict(adapter, sample, mode: str, logits=None, response: str | None = None) -> dict:
    """What a model answered, without the label: {"prediction", "log_probs"}. Scoring by logits (letter,
    likelihood): the option with the highest logit and the options' log-softmax; generated: the response
    as the sample's answer format reads it (a letter, a normalised VQA answer, yes / no), no log_probs."""
    if mode == "generate":
        answer_format = getattr(sample, "answer_format", "letter")
        read = score_response(answer_format, response, "", [], len(sample.options), sample.options,
                              getattr(sample, "letter_reader", "first_letter"))["prediction"]
        return {"prediction": read, "log_probs": None}
    ids = adapter.option_token_ids(len(sample.options)) if mode == "letter" else adapter.option_text_ids(sample.options)
    option_logits = logits[ids]
    return {"prediction": chr(ord("A") + int(torch.argmax(option_logits))),
            "log_probs": option_log_probs(option_logits)}


def labelled(sample) -> bool:
    """Whether the sample has a reference answer to score against (unlabeled data: `answer` None or "")."""
    return bool(sample.answer) or bool(getattr(sample, "answers", None))


def evaluate(adapter, dataset, merger, pruner, records, mode: str = "letter", max_new_tokens: int = 8,
             progress: bool = True, on_record=None, fidelity=None, per_sample=None) -> None:
    """`fidelity`: an aim.eval.fidelity.Fidelity, or None to measure none. `per_sample`: budget mode per
    sample (aim.budget.SampleBudget), which gives each sample its own merger and pruner (in place of
    `merger`, `pruner`) and a `budget` field for its record; None: the same for every sample."""
    flops = FlopsCache(adapter, merger, pruner)
    pruning = TokenPruner(adapter.decoder_layers, pruner)
    per_setting = {}  # per_sample: each chosen (merger, pruner)'s FLOPs cache and hook, built once
    warmed = False
    todo = [s for s in dataset if s.id not in records]
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="evaluating", disable=not progress, unit="sample")
    for sample in todo:
        answer_format = getattr(sample, "answer_format", "letter")
        if answer_format != "letter" and mode != "generate":
            raise ValueError(f"sample {sample.id}: {answer_format!r} answers are free-form text, scored after "
                             f"generating; use eval.mode=generate, not {mode}")
        skip = getattr(sample, "skip_reason", "")  # a question that cannot be asked; or, below, an undecodable video
        if not skip:
            try:
                frames, question = sample.load()  # the question text may carry subtitles at the sampled frames
            except VideoDecodeError as exc:
                skip = str(exc)
        if skip:
            records.append({"id": sample.id, "skipped": True, "error": skip})
            bar.update(1)
            continue
        modality = sample.modality  # "image": frames is the one image, [1, H, W, 3]
        frame_times = getattr(sample, "frame_times", None)  # when the loaded frames were shown (Qwen2.5-VL reads it)
        budget_fields = {}
        if per_sample is not None:  # chosen for this sample's own frames and prompt length
            merger, pruner, budget_fields["budget"] = per_sample(adapter, frames, question, sample.options, mode, modality,
                                                                 getattr(sample, "prompt", None))
            if (merger, pruner) not in per_setting:
                per_setting[merger, pruner] = FlopsCache(adapter, merger, pruner), TokenPruner(adapter.decoder_layers, pruner)
            flops, pruning = per_setting[merger, pruner]
        task = getattr(sample, "prompt", None)  # the benchmark's prompt layout (aim.prompts); None: the generic one
        inputs = adapter.prepare(frames, question, sample.options, merger, scoring=mode, modality=modality,
                                 frame_times=frame_times, task=task)
        with pruning.attached(inputs.token_roles) as trace:
            if not warmed:  # the first call pays for allocations and kernel selection: not timed
                adapter.prefill_logits(inputs)
                warmed = True
            adapter.synchronize()
            start = time.perf_counter()
            logits = adapter.prefill_logits(inputs)
            adapter.synchronize()
            prefill_ms = (time.perf_counter() - start) * 1e3
            decoding = {}  # generate: ttft_ms, kv_cache_bytes, decode_tokens, decode_tokens_per_s (Adapter.generate_ids)
            response = adapter.generate_text(inputs, max_new_tokens, decoding) if mode == "generate" else None
        visual_per_layer = trace.visual_tokens_per_layer or [inputs.visual_tokens] * adapter.num_layers
        answer = predict(adapter, sample, mode, logits, response)
        if mode in ("letter", "likelihood"):
            response = answer["prediction"]
            scored = {"prediction": answer["prediction"], "correct": answer["prediction"] == sample.answer}
        else:
            scored = score_response(answer_format, response, sample.answer or "", getattr(sample, "answers", []),
                                    len(sample.options), sample.options, getattr(sample, "letter_reader", "first_letter"))
        if not labelled(sample):
            scored = {**scored, "correct": None, **({"score": None} if "score" in scored else {})}
        fidelity_fields = {}
        if fidelity is not None:
            def reference(sample=sample, frames=frames, question=question, modality=modality, times=frame_times,
                          task=task):
                full = adapter.prepare(frames, question, sample.options, UNREDUCED, scoring=mode, modality=modality,
                                       frame_times=times, task=task)
                if mode == "generate":
                    text = adapter.generate_text(full, max_new_tokens)
                    return {**predict(adapter, sample, mode, response=text), "response": text}
                return predict(adapter, sample, mode, adapter.prefill_logits(full))

            own = {**answer, **({"response": response} if mode == "generate" else {})}
            fidelity_fields = fidelity.measure(sample.id, own, reference)
        group = getattr(sample, "group", "")
        per_layer = [inputs.text_tokens + v for v in visual_per_layer]
        counted = flops(inputs, frames, per_layer, modality)
        records.append({
            "id": sample.id, "question_type": sample.question_type, "categories": sample.categories,
            "answer": sample.answer,
            "prediction": scored["prediction"], "response": response, "correct": scored["correct"],
            **({"score": scored["score"]} if "score" in scored else {}), **({"group": group} if group else {}),
            "num_frames": len(frames),  # sampled: fewer than dataset.num_frames when the video has fewer
            "visual_tokens": inputs.visual_tokens, "text_tokens": inputs.text_tokens,
            "visual_tokens_per_frame": inputs.visual_per_group,  # per merger group; ragged for a clip reducer
            "tokens_per_layer": per_layer, "visual_tokens_per_layer": visual_per_layer,
            **counted, "prefill_ms": prefill_ms, **decoding, **fidelity_fields, **budget_fields,
        })
        bar.update(1)
        if on_record is not None:
            on_record(records.records)
    bar.close()
