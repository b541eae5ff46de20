"""Evaluate one adapter + merger + pruner over a dataset.

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
are skipped (never decoded), so a rerun in the same output directory resumes.

Throughput (changes no result): `num_workers` processes of a torch DataLoader decode the samples ahead of
the model, in dataset order (a video that cannot be decoded comes back as a skipped sample, as it does
with 0 workers, where the main process decodes each sample just before it is evaluated). `batch_size`
consecutive samples are prepared one by one (vision tower, merger) and those holding equally many visual
tokens share one LLM prefill: as they are when their token layouts are equal, else left-padded, the pads
masked out and marked PADDING so that the pruning hook prunes each row as it would alone
(aim.pruning.hooks). Samples with further LLM inputs (`Adapter.batched_prefill = False`: Qwen3-VL's DeepStack)
and pruners whose choices depend on the batch (`batch_invariant = False`: the random control) are prefilled one
at a time (aim.run refuses eval.batch_size > 1 for them, as unread: aim.config.UNREAD_KNOBS); generated
answers are decoded one sample at a time after the batched prefill. Records come in dataset order whatever
the batching; a batched record's `prefill_ms` is its batch's prefill time divided by `batch_size` (both in
the record, with `batch_prefill_ms`), so per-sample timings of batched and unbatched runs are not alike.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from aim.data import VideoDecodeError
from aim.efficiency.analytic import fastv_prefill_flops, llm_prefill_flops
from aim.efficiency.fvcore_count import count_llm_prefill, count_visual
from aim.eval.fidelity import option_log_probs
from aim.eval.scoring import parse_letter, score_response
from aim.merging import NoMerge
from aim.pruning.hooks import TokenPruner
from aim.tokens import PADDING, QUESTION_TEXT

__all__ = ["FlopsCache", "Loaded", "evaluate", "load_ahead", "parse_letter", "predict", "stack_prefills"]


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


@dataclass
class Loaded:
    """One sample as decoding left it: its frames and prompt question, or why it is skipped (`skip`: a
    question that cannot be asked, or a video that cannot be decoded). `sample` carries the `frame_times`
    that loading set (a copy of the dataset's sample when a worker process loaded it)."""

    sample: object
    frames: np.ndarray | None = None
    question: str = ""
    skip: str = ""


def load(sample) -> Loaded:
    """Decode one sample; a VideoDecodeError becomes its skip reason (it never stops the run)."""
    skip = getattr(sample, "skip_reason", "")  # a question that cannot be asked; or an undecodable video
    if skip:
        return Loaded(sample, skip=skip)
    try:
        frames, question = sample.load()  # the question text may carry subtitles at the sampled frames
    except VideoDecodeError as exc:
        return Loaded(sample, skip=str(exc))
    return Loaded(sample, frames, question)


class _Loading(torch.utils.data.Dataset):
    def __init__(self, samples: list):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Loaded:
        return load(self.samples[i])


def _as_is(item):  # the DataLoader's collate_fn: a Loaded stays one (module level: worker processes pickle it)
    return item


def load_ahead(samples: list, num_workers: int):
    """`Loaded` samples in the order given: decoded by `num_workers` DataLoader worker processes ahead of
    the caller (each holds up to two samples decoded ahead), or by this process on demand (0)."""
    if num_workers == 0 or not samples:
        yield from map(load, samples)
        return
    # forkserver, not fork: a forked worker would inherit this process's open files, among them the run dir's
    # lock (aim.tracking.rundir), and hold it after this process is killed; nor would it inherit CUDA state
    context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    loader = torch.utils.data.DataLoader(_Loading(samples), batch_size=None, shuffle=False, collate_fn=_as_is,
                                         num_workers=min(num_workers, len(samples)), prefetch_factor=2,
                                         multiprocessing_context=context)
    yield from loader


@dataclass
class Prepared:
    """A loaded sample ready for the LLM prefill, with the merger's FLOPs cache and pruning hook it uses."""

    loaded: Loaded
    inputs: object  # aim.models.PreparedInputs
    flops: FlopsCache
    pruning: TokenPruner
    batchable: bool
    budget_fields: dict = field(default_factory=dict)
    # set by the prefill
    logits: torch.Tensor | None = None
    visual_per_layer: list[int] = field(default_factory=list)
    timing: dict = field(default_factory=dict)


def stack_prefills(inputs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Several samples' `PreparedInputs` as one batch: (embeds [B, N, D], position ids [B, N] or [axes, B, N],
    attention mask [B, N] or None, token roles). Equal token layouts (the same roles at every position) stack
    as they are, sharing one row of roles [N] and no mask; others are left-padded to the longest (zero
    embeddings at position 0, mask 0, role PADDING; roles [B, N]), so every row's last token is its own
    answer position."""
    roles = [i.token_roles for i in inputs]
    same = all(r.shape == roles[0].shape and torch.equal(r, roles[0]) for r in roles)
    if same:
        return (torch.cat([i.inputs_embeds for i in inputs]), torch.cat([i.position_ids for i in inputs], -2),
                None, roles[0])
    n = max(r.shape[0] for r in roles)
    embeds, positions, masks, padded = [], [], [], []
    for i, r in zip(inputs, roles):
        pad = n - r.shape[0]
        e, p = i.inputs_embeds, i.position_ids
        embeds.append(torch.cat([e.new_zeros(1, pad, e.shape[2]), e], 1))
        positions.append(torch.cat([p.new_zeros(*p.shape[:-1], pad), p], -1))
        masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(r.shape[0], dtype=torch.long)]))
        padded.append(torch.cat([torch.full((pad,), PADDING, dtype=r.dtype, device=r.device), r]))
    mask = torch.stack(masks).to(embeds[0].device)
    return torch.cat(embeds), torch.cat(positions, -2), mask, torch.stack(padded)


def batch_groups(prepared: list[Prepared]) -> list[list[Prepared]]:
    """The prefills of a window of prepared samples: those that can share one (the same pruning hook,
    equally many visual tokens, the same kind of positions and embedding width) together, in the order of
    their first sample; the others alone."""
    groups: dict = {}
    for n, p in enumerate(prepared):
        e = p.inputs.inputs_embeds
        key = (id(p.pruning), p.inputs.visual_tokens, p.inputs.position_ids.dim(), e.shape[-1], e.dtype) \
            if p.batchable else ("alone", n)
        groups.setdefault(key, []).append(p)
    return list(groups.values())


class _Prefill:
    """Runs and times the prefills: the first of each batch size is run once untimed before (allocations
    and kernel selection)."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.warmed: set[int] = set()

    def __call__(self, group: list[Prepared]) -> None:
        adapter, size = self.adapter, len(group)
        if size == 1:
            inputs = group[0].inputs
            roles, run = inputs.token_roles, lambda: adapter.prefill_logits(inputs)[None]
        else:
            embeds, positions, mask, roles = stack_prefills([p.inputs for p in group])
            run = lambda: adapter.prefill_logits_batch(embeds, positions, mask)  # noqa: E731
        with group[0].pruning.attached(roles) as trace:
            if size not in self.warmed:
                run()
                self.warmed.add(size)
            adapter.synchronize()
            start = time.perf_counter()
            logits = run()
            adapter.synchronize()
            batch_ms = (time.perf_counter() - start) * 1e3
        visual = group[0].inputs.visual_tokens
        per_layer = list(trace.visual_tokens_per_layer) or [visual] * adapter.num_layers
        for row, p in enumerate(group):
            p.logits, p.visual_per_layer = logits[row], per_layer
            # the batch's time shared equally: per-sample timings of batched runs are not batch 1's
            p.timing = {"prefill_ms": batch_ms / size, "batch_size": size, "batch_prefill_ms": batch_ms}


def evaluate(adapter, dataset, merger, pruner, records, mode: str = "letter", max_new_tokens: int = 8,
             progress: bool = True, on_record=None, fidelity=None, per_sample=None, batch_size: int = 1,
             num_workers: int = 0) -> None:
    """`fidelity`: an aim.eval.fidelity.Fidelity, or None to measure none. `per_sample`: budget mode per
    sample (aim.budget.SampleBudget), which gives each sample its own merger and pruner (in place of
    `merger`, `pruner`) and a `budget` field for its record; None: the same for every sample.
    `batch_size`: samples prefilled together (see the module docstring); `num_workers`: processes decoding
    ahead (0: decode in this process)."""
    flops = FlopsCache(adapter, merger, pruner)
    pruning = TokenPruner(adapter.decoder_layers, pruner)
    per_setting = {}  # per_sample: each chosen (merger, pruner)'s FLOPs cache and hook, built once
    prefill = _Prefill(adapter)
    todo = [s for s in dataset if s.id not in records]
    rule = getattr(getattr(adapter, "cfg", None), "frame_sampling", None)  # model.frame_sampling
    for s in todo if rule is not None else ():  # decode the frames the model's lmms-eval class would see
        if hasattr(s, "frame_sampling"):  # a video sample (images have none)
            s.frame_sampling = rule
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(todo), desc="evaluating", disable=not progress, unit="sample")
    window: list = []  # Loaded (skipped) or Prepared samples, in dataset order, not yet recorded

    def flush():
        prepared = [p for p in window if isinstance(p, Prepared)]
        for group in batch_groups(prepared):
            prefill(group)
        for item in window:
            if isinstance(item, Loaded):
                records.append({"id": item.sample.id, "skipped": True, "error": item.skip})
            else:
                records.append(_record(adapter, item, mode, max_new_tokens, fidelity))
            bar.update(1)
            if on_record is not None and isinstance(item, Prepared):
                on_record(records.records)
        window.clear()

    for loaded in load_ahead(todo, num_workers):
        sample = loaded.sample
        answer_format = getattr(sample, "answer_format", "letter")
        if answer_format != "letter" and mode != "generate":
            raise ValueError(f"sample {sample.id}: {answer_format!r} answers are free-form text, scored after "
                             f"generating; use eval.mode=generate, not {mode}")
        if loaded.skip:
            window.append(loaded)
            if not any(isinstance(p, Prepared) for p in window):
                flush()  # nothing ahead of it waits for a prefill: recorded at once
            continue
        modality = sample.modality  # "image": frames is the one image, [1, H, W, 3]
        frame_times = getattr(sample, "frame_times", None)  # when the loaded frames were shown (Qwen2.5-VL reads it)
        budget_fields = {}
        setting_merger, setting = merger, (flops, pruning)
        if per_sample is not None:  # chosen for this sample's own frames and prompt length
            setting_merger, chosen_pruner, budget_fields["budget"] = per_sample(
                adapter, loaded.frames, loaded.question, sample.options, mode, modality, getattr(sample, "prompt", None))
            if (setting_merger, chosen_pruner) not in per_setting:
                per_setting[setting_merger, chosen_pruner] = (FlopsCache(adapter, setting_merger, chosen_pruner),
                                                              TokenPruner(adapter.decoder_layers, chosen_pruner))
            setting = per_setting[setting_merger, chosen_pruner]
        task = getattr(sample, "prompt", None)  # the benchmark's prompt layout (aim.prompts); None: the generic one
        inputs = adapter.prepare(loaded.frames, loaded.question, sample.options, setting_merger, scoring=mode,
                                 modality=modality, frame_times=frame_times, task=task)
        batchable = batch_size > 1 and adapter.batched_prefill and getattr(setting[1].pruner, "batch_invariant", True)
        window.append(Prepared(loaded, inputs, *setting, batchable, budget_fields))
        if sum(isinstance(p, Prepared) for p in window) == batch_size:
            flush()
    flush()
    bar.close()


def _record(adapter, p: Prepared, mode: str, max_new_tokens: int, fidelity) -> dict:
    """The record of a prefilled sample: its answer scored (generated, in generate mode, one sample at a
    time with its own pruning hook attached), fidelity, FLOPs, token counts and timing."""
    sample, frames, question = p.loaded.sample, p.loaded.frames, p.loaded.question
    inputs, modality = p.inputs, sample.modality
    frame_times = getattr(sample, "frame_times", None)
    answer_format = getattr(sample, "answer_format", "letter")
    task = getattr(sample, "prompt", None)  # as loading left it (Video-MME's subtitles are its context)
    response = None
    decoding = {}  # generate: ttft_ms, kv_cache_bytes, decode_tokens, decode_tokens_per_s (Adapter.generate_ids)
    if mode == "generate":
        with p.pruning.attached(inputs.token_roles):
            response = adapter.generate_text(inputs, max_new_tokens, decoding)
    answer = predict(adapter, sample, mode, p.logits, response)
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
    visual_per_layer = p.visual_per_layer
    per_layer = [inputs.text_tokens + v for v in visual_per_layer]
    counted = p.flops(inputs, frames, per_layer, modality)
    return {
        "id": sample.id, "question_type": sample.question_type, "categories": sample.categories,
        "answer": sample.answer,
        "prediction": scored["prediction"], "response": response, "correct": scored["correct"],
        **({"score": scored["score"]} if "score" in scored else {}), **({"group": group} if group else {}),
        "num_frames": len(frames),  # sampled: fewer than dataset.num_frames when the video has fewer
        "visual_tokens": inputs.visual_tokens, "text_tokens": inputs.text_tokens,
        "visual_tokens_per_frame": inputs.visual_per_group,  # per merger group; ragged for a clip reducer
        "tokens_per_layer": per_layer, "visual_tokens_per_layer": visual_per_layer,
        # prefill_ms: this sample's share of its batch's prefill (batch_prefill_ms / batch_size)
        **counted, **p.timing, **decoding, **fidelity_fields, **p.budget_fields,
    }
