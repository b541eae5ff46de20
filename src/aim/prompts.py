"""A benchmark's question as text, laid out the way lmms-eval's task for it does (its `doc_to_text`).

The dataset owns this text: each benchmark builds a `TaskPrompt` from its config fields (`pre_prompt`,
`post_prompt`: the defaults of the task yaml's `lmms_eval_specific_kwargs`) and its layout (what the task's
utils.py writes around the question and options); the sample carries it. The model adapter only puts the
text where its prompt template says (`{prompt}`) and wraps that in the model's chat template.

A layout is a format string over `{context}` (text a sample adds before the task's own instruction, e.g.
Video-MME's subtitles; "" for most), `{pre_prompt}`, `{question}`, `{options}` (the options, each written with
`option_format`, joined by `option_separator`) and `{post_prompt}`. Three layouts: `layout` for a question with
options, `open_layout` for one without (free-form VQA), `likelihood_layout` for likelihood scoring, where each
option's text is scored as the continuation and the options stay out of the prompt. `models` holds lmms-eval's
model-specific overrides of the task (its yaml's `lmms_eval_specific_kwargs.<model>`), keyed by the aim model
name, which is lmms-eval's model name for the models both have (`qwen3_vl`, `qwen2_vl`, `llava_onevision`, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."  # lmms-eval's MC post-prompt
SHORT_ANSWER = "Answer the question using a single word or phrase."  # its free-form (VQA) post-prompt
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class TaskPrompt:
    # the default: lmms-eval's generic multiple-choice text, "<question>\nA. <option>\n...\nAnswer with the
    # option's letter from the given choices directly." (its EgoSchema / Perception Test / ScienceQA layout)
    layout: str = "{context}{pre_prompt}{question}\n{options}{post_prompt}"
    pre_prompt: str = ""
    post_prompt: str = "\n" + MC_INSTRUCTION
    option_format: str = "{letter}. {option}"
    option_separator: str = "\n"
    open_layout: str = "{context}{pre_prompt}{question}"  # a question without options: no MC instruction
    likelihood_layout: str = "{context}{pre_prompt}{question}"
    context: str = ""
    # {model name: {field: value}}: the fields lmms-eval's task sets otherwise for that model
    models: dict = field(default_factory=dict)

    def __post_init__(self):
        known = {f.name for f in fields(self)} - {"models", "context"}
        for model, changes in self.models.items():
            unknown = set(changes) - known
            if unknown:
                raise ValueError(f"models.{model}: {sorted(unknown)} are not prompt fields; known: {sorted(known)}")

    def for_model(self, model: str) -> TaskPrompt:
        """This task's prompt as lmms-eval gives it to `model` (its override, else the default)."""
        changes = self.models.get(model)
        return replace(self, models={}, **changes) if changes else self

    def options_text(self, options: list[str]) -> str:
        return self.option_separator.join(self.option_format.format(letter=LETTERS[i], option=o)
                                          for i, o in enumerate(options))

    def text(self, question: str, options: list[str], scoring: str = "letter", model: str = "") -> str:
        """The task's text for one question: with its options (letter and generate scoring), without them
        (`likelihood` scoring; a question that has none)."""
        task = self.for_model(model)
        layout = task.likelihood_layout if scoring == "likelihood" else task.layout if options else task.open_layout
        return layout.format(context=task.context, pre_prompt=task.pre_prompt, question=question,
                             options=task.options_text(options), post_prompt=task.post_prompt)


GENERIC_MC = TaskPrompt()  # what a dataset without a layout of its own asks (video_mcq, image_mcq)
# lmms-eval's free-form (VQA-style) tasks: "<pre_prompt><question><post_prompt>", the post-prompt by default
# "\nAnswer the question using a single word or phrase." (VQAv2, GQA, MME, TextVQA, POPE)
FREE_FORM = TaskPrompt(open_layout="{context}{pre_prompt}{question}{post_prompt}", post_prompt="\n" + SHORT_ANSWER)
