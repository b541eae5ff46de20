"""Budget mode (aim.budget): the chosen setting fits the budget, a recorded trade-off's most accurate fitting
point is chosen, the default policy's order, impossible budgets fail before anything runs, the paper's
LLaVA-OneVision-7B budget, and per-sample choices that give longer prompts more reduction."""
import dataclasses
import json
import os
import time

import pytest
from hydra import compose, initialize_config_dir

from aim.budget import BudgetPlan, Limit, SampleBudget, Setting, apply_budget, candidates, policy_order
from aim.config import ConfigError, validate
from aim.paths import CONF_DIR
from aim.pruning import budget_window as window
from aim.tradeoff import find_tradeoff, load_tradeoff
from tests.in_process import run_in_process  # `python -m aim.run ...` (aim.flops ...) in this process

OV7B = ["model=llava_onevision_7b", "dataset.num_frames=32", "merger=aim", "pruner=aim"]


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plan_for(*overrides, frames=None, text_tokens=100) -> BudgetPlan:
    """A plan for 100 text tokens (the paper's figure) unless told otherwise."""
    return BudgetPlan(validate(composed(*overrides)), frames, text_tokens)


# --- the policy ----------------------------------------------------------------------------------------
def test_the_papers_15_tflops_budget_gets_the_papers_own_setting():
    """LLaVA-OneVision-7B, 32 frames, 100 text tokens: 25% merging with l1=14, l2=22 costs 14.76 TFLOPs; the
    policy's step before it (l1=15, l2=23) does not fit 15."""
    plan = plan_for(*OV7B, "budget.tflops=15", "budget.tradeoff=policy")
    assert plan.choice.setting.knobs() == {"merger": {"name": "aim", "ratio": 0.25},
                                           "pruner": {"name": "aim", "l1": 14, "l2": 22}}
    assert round(plan.choice.cost.tflops, 2) == 14.76 and plan.choice.chosen_by == "policy"
    order = policy_order(plan.merger, plan.pruner, 28)
    before = order[order.index(plan.choice.setting) - 1]
    assert plan.model(32, 100).cost(before).tflops > 15


@pytest.mark.parametrize("pruner", ["aim", "random", "fastv", "pdrop", "vtw", "prunevid", "none"])
@pytest.mark.parametrize("merger", ["aim", "pool", "none"])
def test_policy_order_merges_first_then_prunes_later_layers_first_and_costs_only_fall(merger, pruner):
    plan = plan_for("model=llava_onevision_7b", "dataset.num_frames=32", f"merger={merger}", f"pruner={pruner}",
                    "budget.tflops=15")
    model = plan.model(32, 100)
    order = policy_order(plan.merger, plan.pruner, 28)
    costs = [model.cost(s) for s in order]
    assert costs[0].tflops == pytest.approx(model.full.tflops)  # it starts unreduced
    for a, b in zip(costs, costs[1:]):  # each step removes tokens from some layer and adds none
        assert all(x >= y for x, y in zip(a.tokens_per_layer, b.tokens_per_layer))
        assert a.tflops >= b.tflops and a.prefill_ms >= b.prefill_ms
    if merger != "none":  # merge to 25% before any pruning
        ratios = [s.merger["ratio"] for s in order]
        assert ratios[:5] == [1.0, 0.75, 0.5, 0.375, 0.25]
        assert all(model.retention(s) == [1.0] * 28 for s in order[:5])
    if pruner in ("aim", "random"):
        pruned = [s.pruner for s in order if model.retention(s) != [1.0] * 28]
        assert [(p["l1"], p["l2"]) for p in pruned[:3]] == [(27, 27 + window(28)), (26, 26 + window(28)), (25, 33)]


def test_policy_for_the_bundled_4_layer_model():
    plan = plan_for("budget.tflops=1", "budget.tradeoff=policy")
    order = [s.knobs() for s in policy_order(plan.merger, plan.pruner, 4)]
    assert [(k["merger"]["ratio"], k["pruner"].get("l1"), k["pruner"].get("l2")) for k in order] == [
        (1.0, None, None), (0.75, None, None), (0.5, None, None), (0.375, None, None), (0.25, None, None),  # merge only
        (0.25, 3, 5), (0.25, 2, 4), (0.25, 1, 3), (0.25, 1, 2),  # a 2-layer window moving earlier, narrowed
        (0.2, 1, 2), (0.15, 1, 2), (0.125, 1, 2), (0.1, 1, 2), (0.075, 1, 2), (0.05, 1, 2)]  # merge further
    assert all(k["pruner"] == {"name": "none"} for k in order[:5])  # no pruning is pruner none, not aim l1=4


@pytest.mark.parametrize("pruner", ["aim", "random", "fastv", "pdrop", "vtw", "dart", "prunevid"])
def test_budget_mode_never_chooses_a_pruner_setting_that_removes_nothing(pruner):
    """Every setting of the policy and of the grid either is pruner none or removes visual tokens on the
    model's LLM, so a budget run is never labelled pruned while pruning nothing."""
    from aim.pruning import PRUNERS, removes_tokens

    plan = plan_for("merger=aim", f"pruner={pruner}", "budget.fraction=0.9", "budget.tradeoff=policy")
    for setting in policy_order(plan.merger, plan.pruner, 4) + candidates(plan.merger, plan.pruner, 4):
        p = setting.pruner
        assert p["name"] == "none" or removes_tokens(PRUNERS.build(p["name"], **p), 4), setting.label()
    cfg = composed("merger=aim", f"pruner={pruner}", "budget.fraction=0.95", "budget.tradeoff=policy", "budget.text_tokens=100")
    apply_budget(cfg, validate(cfg))  # merging alone fits 95%: the run says pruner none
    assert cfg.pruner == {"name": "none"} and validate(cfg).pruner.name == "none"


@pytest.mark.parametrize("unit", ["tflops", "fraction", "prefill_ms"])
@pytest.mark.parametrize("scale", [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_the_chosen_setting_fits_every_budget_of_a_grid(unit, scale):
    """Budgets from 5% to 100% of the unreduced cost, in each unit: the policy's first fitting setting is
    within budget, and the policy step before it is not."""
    probe = plan_for(*OV7B, "budget.tflops=1")
    full = probe.model(32, 100).full
    value = {"tflops": scale * full.tflops, "fraction": scale, "prefill_ms": scale * full.prefill_ms}[unit]
    plan = plan_for(*OV7B, f"budget.{unit}={value!r}", "budget.tradeoff=policy")
    limit, model, choice = plan.limit, plan.model(32, 100), plan.choice
    assert limit.amount(choice.cost, model) <= value * (1 + 1e-9)
    assert choice.cost == model.cost(choice.setting)
    order = policy_order(plan.merger, plan.pruner, 28)
    index = order.index(choice.setting)
    assert index == 0 or limit.amount(model.cost(order[index - 1]), model) > value


def test_fastv_vtw_pdrop_dart_holitom_and_prunevid_get_their_own_knobs():
    for pruner, knobs in (("fastv", {"k", "keep"}), ("vtw", {"k"}), ("pdrop", {"boundaries", "lam"}), ("dart", {"k", "keep"}),
                          ("holitom", {"k", "keep"}), ("prunevid", {"layer", "alpha"})):
        plan = plan_for("model=llava_onevision_7b", "dataset.num_frames=32", "merger=none", f"pruner={pruner}",
                        "budget.fraction=0.4", "budget.tradeoff=policy")
        assert set(plan.choice.setting.knobs()["pruner"]) == {"name"} | knobs
        assert plan.choice.cost.tflops <= 0.4 * plan.model(32, 100).full.tflops


def test_prunevid_budget_moves_its_selection_layer_then_alpha_and_fits_the_budget():
    """PruneVid on LLaVA-OneVision-7B (28 layers), its merger and its pruner: the policy merges to 25%, moves the
    selecting layer earlier at the configured alpha 0.4 (layer 26 ... 0), then lowers alpha at layer 0. At 15%
    of the unreduced prefill it chooses the official layer 10, alpha 0.4: it fits and the step before does not."""
    plan = plan_for("model=llava_onevision_7b", "dataset.num_frames=32", "merger=prunevid", "pruner=prunevid",
                    "budget.fraction=0.15", "budget.tradeoff=policy")
    model, choice = plan.model(32, 100), plan.choice
    assert choice.setting.knobs() == {"merger": {"name": "prunevid", "ratio": 0.25},
                                      "pruner": {"name": "prunevid", "layer": 10, "alpha": 0.4}}
    assert choice.cost == model.cost(choice.setting) and choice.cost.tflops <= 0.15 * model.full.tflops
    order = policy_order(plan.merger, plan.pruner, 28)
    assert model.cost(order[order.index(choice.setting) - 1]).tflops > 0.15 * model.full.tflops
    pruned = [s.pruner for s in order if s.pruner["name"] == "prunevid"]
    assert [(p["layer"], p["alpha"]) for p in pruned[:2]] == [(26, 0.4), (25, 0.4)]  # layer 27 would prune nothing
    assert [(p["layer"], p["alpha"]) for p in pruned[26:29]] == [(0, 0.4), (0, 0.375), (0, 0.25)]
    grid = candidates(plan.merger, plan.pruner, 28)  # selecting in layer 0 .. 26 (27 prunes nothing: pruner none)
    assert {s.pruner.get("layer") for s in grid} == set(range(27)) | {None}


@pytest.mark.parametrize("layer, alpha", [(0, 0.375), (10, 0.4), (26, 0.1)])
def test_prunevid_is_costed_with_its_selecting_layer_unpruned(layer, alpha):
    """PruneVid's layer l computes the attention that selects, so layers 0..l see every merged visual token and
    layers l + 1 on see floor(alpha V): the cost of FastV pruning before layer k = l + 1 to keep = alpha."""
    plan = plan_for("model=llava_onevision_7b", "dataset.num_frames=32", "merger=prunevid", "pruner=prunevid",
                    "budget.fraction=0.5", "budget.tradeoff=policy")
    model = plan.model(32, 100)
    merger = {**plan.merger, "ratio": 0.25}
    prunevid = model.cost(Setting.of(merger, {"name": "prunevid", "layer": layer, "alpha": alpha}))
    visual = prunevid.visual_tokens
    assert visual == 32 * 196 // 4
    expected = [visual + 100] * (layer + 1) + [int(alpha * visual) + 100] * (27 - layer)
    assert list(prunevid.tokens_per_layer) == expected
    fastv = model.cost(Setting.of(merger, {"name": "fastv", "k": layer + 1, "keep": alpha}))
    assert prunevid.tflops == fastv.tflops and prunevid.prefill_ms == fastv.prefill_ms


def test_dycoke_is_refused_because_its_pruning_happens_while_decoding_outside_the_prefill_cost():
    """DyCoke's pruner removes visual KV entries only while decoding; its prefill keeps every visual token, so
    budget mode, which costs the prefill, refuses it (saying so) rather than choose knobs that change no cost,
    even were its class to declare some. Its merger, whose count the prefill cost sees, is planned with
    pruner=none."""
    from aim.pruning import DycokePruner

    why = (r"pruner.name: budget mode cannot tune pruner 'dycoke': it removes visual KV entries while decoding only, "
           r"and budget mode costs the LLM prefill \(aim.efficiency.cost\), in which it keeps every visual token, so "
           r"no value of its knobs changes the cost a budget limits; use pruner=none to plan for the merger alone, "
           r"or a pruner it knows: aim, .*prunevid")
    args = ("model=llava_onevision_7b", "dataset.num_frames=32", "merger=dycoke", "pruner=dycoke", "eval.mode=generate",
            "budget.fraction=0.5", "budget.tradeoff=policy")
    with pytest.raises(ConfigError, match=why) as refused:
        plan_for(*args)
    assert "dycoke" not in str(refused.value).split("it knows:")[1]
    with pytest.MonkeyPatch.context() as patch:  # declaring knobs does not make decode-time pruning a prefill cost
        patch.setattr(DycokePruner, "budget_knobs", ("layer", "p"), raising=False)
        patch.setattr(DycokePruner, "budget_candidates", classmethod(lambda cls, fields, num_layers: None), raising=False)
        with pytest.raises(ConfigError, match=why):
            plan_for(*args)
    merged = plan_for(*args[:3], "pruner=none", "budget.fraction=0.6", "budget.tradeoff=policy")
    assert merged.choice.setting.knobs() == {"merger": {"name": "dycoke"}, "pruner": {"name": "none"}}
    assert merged.choice.cost.visual_tokens == 8 * (196 + 3 * 58)  # TTM at prune 0.7: windows of 4 frames


def test_the_analytic_costs_are_the_roofline_and_aim_flops_figures():
    from aim.efficiency.analytic import llm_prefill_flops
    from aim.efficiency.roofline import LLMShape, prefill_estimate

    plan = plan_for(*OV7B, "budget.tflops=15")
    model = plan.model(32, 100)
    for setting in candidates(plan.merger, plan.pruner, 28)[::397]:
        cost = model.cost(setting)
        text_config = plan.hf_config.text_config
        est = prefill_estimate(LLMShape.from_text_config(text_config), list(cost.tokens_per_layer), "a100_40gb")
        assert cost.tflops == pytest.approx(est.tflops, rel=1e-12)
        assert cost.prefill_ms == pytest.approx(est.prefill_ms, rel=1e-12)
        assert cost.tflops_analytic * 1e12 == pytest.approx(llm_prefill_flops(text_config, list(cost.tokens_per_layer)))
    grid = candidates(plan.merger, plan.pruner, 28)
    for unit in ("tflops", "fraction", "prefill_ms"):
        limit = Limit(unit, 1.0)
        vectorized = model.amounts(grid, limit)
        assert vectorized[::101] == pytest.approx([limit.amount(model.cost(s), model) for s in grid[::101]], rel=1e-12)


# --- a recorded trade-off ---------------------------------------------------------------------------------
FIXTURE_POINTS = [  # (ratio, l1, l2, accuracy, agreement); tflops as recorded at 16 frames (stale for 32)
    (1.0, 28, 29, 0.70, 1.00), (0.5, 28, 29, 0.69, 0.95), (0.25, 28, 29, 0.68, 0.93), (0.25, 20, 26, 0.675, 0.91),
    (0.25, 14, 22, 0.672, 0.92), (0.25, 10, 18, 0.60, 0.85), (0.125, 14, 22, 0.64, 0.88), (0.5, 10, 18, 0.62, 0.90),
    (0.125, 4, 10, 0.50, 0.70), (0.05, 1, 2, 0.30, 0.40), (0.25, 8, 16, None, 0.99),
]


@pytest.fixture
def tradeoff_file(tmp_path):
    points = [{"merger": {"name": "aim", "ratio": r, "keep_order": True}, "pruner": {"name": "aim", "l1": l1, "l2": l2},
               "tflops": 1.0, "accuracy": acc, "agreement": agr, "kl": None, "num_samples": 100, "pareto": False}
              for r, l1, l2, acc, agr in FIXTURE_POINTS]
    points.append({"merger": {"name": "none"}, "pruner": {"name": "fastv", "k": 2, "keep": 0.1}, "tflops": 0.1,
                   "accuracy": 0.99, "agreement": 0.99, "kl": None, "num_samples": 100, "pareto": True})
    path = tmp_path / "ov7b_videomme.json"
    path.write_text(json.dumps({"model": "llava_onevision_7b", "pretrained": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
                                "dataset": "videomme", "num_frames": 16, "objective": "accuracy",
                                "source": "outputs/sweeps/x", "points": points}))
    return path


@pytest.mark.parametrize("budget", [3, 6, 10, 14.76, 15, 20, 30, 50, 99.7])
@pytest.mark.parametrize("objective", ["accuracy", "agreement"])
def test_the_most_accurate_fitting_recorded_point_is_chosen(tradeoff_file, budget, objective):
    plan = plan_for(*OV7B, f"budget.tflops={budget}", f"budget.tradeoff={tradeoff_file}", f"budget.objective={objective}")
    model = plan.model(32, 100)
    choice = plan.choice
    assert choice.cost.tflops <= budget * (1 + 1e-9)
    assert choice.chosen_by == f"tradeoff {tradeoff_file}" and choice.recorded[objective] is not None
    # no recorded point that fits (cost re-evaluated at 32 frames, not the file's 16) scores higher; the
    # other family's point (FastV, 0.99) is not a candidate for merger=aim pruner=aim
    scored = [(p[:3], p[3] if objective == "accuracy" else p[4]) for p in FIXTURE_POINTS]
    fitting = [(knobs, value) for knobs, value in scored
               if value is not None and model.cost(plan_setting(plan, *knobs)).tflops <= budget]
    best = max(fitting, key=lambda t: t[1])[0]
    knobs = choice.setting.knobs()
    if best[1] >= 28:  # a recorded point that prunes nothing on 28 layers (l1=28) is chosen as pruner none
        assert knobs["pruner"] == {"name": "none"} and knobs["merger"]["ratio"] == best[0]
    else:
        assert (knobs["merger"]["ratio"], knobs["pruner"]["l1"], knobs["pruner"]["l2"]) == best


def plan_setting(plan, ratio, l1, l2):
    return Setting.of({**plan.merger, "ratio": ratio}, {**plan.pruner, "l1": l1, "l2": l2})


def test_a_tradeoff_with_no_fitting_point_falls_back_to_the_policy(tradeoff_file):
    data = json.loads(tradeoff_file.read_text())
    data["points"] = [p for p in data["points"] if p["merger"].get("ratio") == 1.0]  # only the unreduced point
    tradeoff_file.write_text(json.dumps(data))
    plan = plan_for(*OV7B, "budget.tflops=2", f"budget.tradeoff={tradeoff_file}")
    assert plan.choice.chosen_by == "policy" and "no accuracy-scored point" in plan.choice.note
    assert plan.choice.cost.tflops <= 2


def test_the_bundled_model_chooses_from_its_bundled_tradeoff_by_default():
    """The search's trade-off for the bundled model and benchmark ships with aim: a budget picks its most
    accurate recorded setting that fits (re-costed for this input), and `budget.tradeoff=policy` opts out."""
    bundled = find_tradeoff("aim:toy_llava_ov", "synthetic_video", 4)
    assert bundled is not None and bundled.parent.name == "tradeoffs"
    plan = plan_for("budget.fraction=0.2", text_tokens=19)
    choice = plan.choice
    assert choice.chosen_by == f"tradeoff {bundled}"
    model = plan.model(4, 19)
    assert choice.cost.tflops <= 0.2 * model.full.tflops
    same_family = [p for p in load_tradeoff(bundled).points if (p["merger"]["name"], p["pruner"]["name"]) == ("aim", "aim")]
    fitting = [p["accuracy"] for p in same_family
               if model.cost(Setting.of({**plan.merger, **p["merger"]}, {**plan.pruner, **p["pruner"]})).tflops
               <= 0.2 * model.full.tflops]
    assert len(fitting) < len(same_family) and choice.recorded["accuracy"] == max(fitting)
    assert plan_for("budget.fraction=0.2", "budget.tradeoff=policy", text_tokens=19).choice.chosen_by == "policy"


def test_tradeoff_files_are_found_by_checkpoint_and_dataset(tradeoff_file, tmp_path):
    pretrained = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    assert find_tradeoff(pretrained, "videomme", 32, tmp_path) == tradeoff_file
    assert find_tradeoff(pretrained, "mlvu_dev", 32, tmp_path) is None
    assert find_tradeoff("aim:toy_llava_ov", "videomme", 32, tmp_path) is None
    assert find_tradeoff(pretrained, "videomme", 32, tmp_path / "absent") is None
    assert len(load_tradeoff(tradeoff_file).points) == len(FIXTURE_POINTS) + 1


def test_a_damaged_bundled_tradeoff_is_left_out_with_a_warning_naming_it(tradeoff_file, tmp_path):
    """One unreadable file among the bundled trade-offs was skipped in silence; the others still serve."""
    pretrained = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    (tmp_path / "a_damaged.json").write_text('{"pretrained": "llava-hf/llava-onev')  # a truncated copy
    with pytest.warns(UserWarning, match=r"a_damaged.json unreadable \(.*\); budget mode leaves this "
                                         "bundled trade-off out"):
        assert find_tradeoff(pretrained, "videomme", 32, tmp_path) == tradeoff_file


@pytest.mark.parametrize("content,message", [
    ("not json", "not JSON"), ('{"points": 3}', "a `points` list"),
    ('{"points": [{"merger": {"name": "aim"}}]}', "points[0] needs `merger` and `pruner`"),
    ('{"objective": "speed", "points": []}', "objective 'speed'"),
])
def test_a_malformed_tradeoff_file_is_a_config_error(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"budget.tradeoff: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        load_tradeoff(path)


# --- config errors and impossible budgets -----------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["budget.tflops=15", "budget.fraction=0.1"], "budget.tflops: give one of tflops, fraction, prefill_ms; got tflops and fraction"),
    (["budget.fraction=1.5"], r"budget.fraction: must be in \(0, 1\]"),
    (["budget.tflops=0"], r"budget.tflops: must be in \(0, inf\)"),
    (["budget.prefill_ms=60", "budget.hardware=tpu"], "budget.hardware: 'tpu' is not allowed"),
    (["budget.fraction=0.5", "budget.per_sample=true"], "budget.per_sample: needs budget.tflops"),
    (["budget.tflops=1", "budget.objective=speed"], "budget.objective: 'speed' is not allowed"),
])
def test_budget_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(composed(*overrides))


def test_an_impossible_budget_names_the_smallest_achievable_cost_and_its_setting():
    with pytest.raises(ConfigError) as err:
        plan_for(*OV7B, "budget.tflops=1").choice
    message = str(err.value)
    assert "budget.tflops: no setting of merger aim + pruner aim meets 1 TFLOPs" in message
    assert "the smallest achievable is 1.447 TFLOPs" in message and "merger aim ratio=0.05, pruner aim l1=1 l2=2" in message
    with pytest.raises(ConfigError, match="merger.name: budget mode .*prumerge keeps an adaptive number"):
        plan_for(*OV7B, "merger=prumerge", "budget.tflops=15")


@pytest.mark.slow
def test_a_budget_on_anyres_images_is_refused_and_on_fixed_grid_images_planned_for_one_image(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.name: image_mcq holds images; their token count on .* is not "
                                          r"modelled by budget mode"):
        plan_for("model=llava_onevision_7b", "dataset=image_mcq", f"dataset.root={tmp_path}", "budget.tflops=5")
    plan = plan_for("model=llava_1.5_7b", "dataset=image_mcq", f"dataset.root={tmp_path}", "budget.fraction=0.5")
    assert plan.frames == 1 and plan.choice.cost.tflops <= 0.5 * plan.model(1, 100).full.tflops


def test_aim_run_fails_fast_on_an_impossible_budget(tmp_path):
    start = time.monotonic()
    proc = run_in_process("aim.run", "budget.tflops=1e-12", "budget.text_tokens=100",
                          f"hydra.run.dir={tmp_path / 'run'}", "logger=none",
                          env={**os.environ, "AIM_DATA_DIR": str(tmp_path / "data")})
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "budget.tflops: no setting of merger aim + pruner aim meets 1e-12 TFLOPs" in proc.stderr
    assert "the smallest achievable is 0.0001835 TFLOPs" in proc.stderr  # the bundled model, 4 frames, 100 text
    assert not (tmp_path / "run" / "run_spec.json").exists() and not (tmp_path / "data").exists()  # nothing ran
    assert elapsed < 120  # the model's config only (about a second of CPU; a fresh process adds its imports)


# --- the text length planned for -------------------------------------------------------------------------
def test_aim_run_plans_for_the_datasets_own_prompt_length_measured_as_the_run_lays_it_out(small_benchmark):
    """budget.text_tokens null: the median text tokens of the dataset's prompts, as the loop counts them
    (inputs.text_tokens of the real adapter), not the paper's 100."""
    import statistics

    from aim.budget import dataset_text_tokens
    from aim.data import VideoMCQDataset
    from aim.merging import MERGERS
    from aim.models import MODELS

    valid = validate(composed("dataset=video_mcq", f"dataset.root={small_benchmark}", "budget.fraction=0.5"))
    assert valid.budget.text_tokens is None  # the default
    tokens, measured = dataset_text_tokens(valid)
    adapter = MODELS.get(valid.model.name).from_config(**dataclasses.asdict(valid.model))
    laid_out = [adapter.prepare(s.load()[0], s.question, s.options, MERGERS.build("none")).text_tokens
                for s in VideoMCQDataset(small_benchmark, num_frames=4)]
    assert tokens == statistics.median_high(laid_out) and 10 < tokens < 40  # ~20 tokens: far from 100
    assert measured == {"dataset": "video_mcq", "median_of": 10, "skipped": 0, "min": min(laid_out), "max": max(laid_out)}
    plan = BudgetPlan(valid)
    record = plan.record()
    assert record["text_tokens"] == tokens and record["text_tokens_from"] == {"median of the prompts": measured}
    explicit = BudgetPlan(validate(composed("dataset=video_mcq", f"dataset.root={small_benchmark}", "budget.fraction=0.5",
                                            "budget.text_tokens=100")))
    assert (explicit.text_tokens, explicit.record()["text_tokens_from"]) == (100, "budget.text_tokens")


def test_prompts_that_cannot_be_asked_are_skipped_when_measuring(small_benchmark, tmp_path):
    import shutil

    from aim.budget import dataset_text_tokens

    root = tmp_path / "bench"
    shutil.copytree(small_benchmark, root)
    rows = json.loads((root / "questions.json").read_text())
    rows[0]["options"] = []  # a letter question without options cannot be asked
    (root / "questions.json").write_text(json.dumps(rows))
    valid = validate(composed("dataset=video_mcq", f"dataset.root={root}", "budget.fraction=0.5"))
    _, measured = dataset_text_tokens(valid)
    assert measured["skipped"] == 1 and measured["median_of"] == len(rows) - 1
    for row in rows:
        row["options"] = []
    (root / "questions.json").write_text(json.dumps(rows))
    with pytest.raises(ConfigError, match=r"budget.text_tokens: .*none of the first 100 prompts of dataset video_mcq .*"
                                          r"10 skipped.*options.*give budget.text_tokens"):
        dataset_text_tokens(valid)


def test_the_bundled_budgets_fit_once_planned_for_the_bundled_prompts(bundled_env, monkeypatch):
    """With the bundled prompts' ~19 tokens (not 100), fraction 0.2 is achievable and tflops=1e-4 fits the
    default setting; planned for 100 tokens, 0.2 is refused (smallest achievable: 0.2803)."""
    monkeypatch.setenv("AIM_DATA_DIR", bundled_env["AIM_DATA_DIR"])
    for budget in ("budget.fraction=0.2", "budget.fraction=0.3", "budget.tflops=1e-4"):
        plan = BudgetPlan(validate(composed(budget, "dataset.num_samples=8")))
        assert isinstance(plan.text_tokens_from, dict) and plan.text_tokens < 25
        assert plan.limit.fits(plan.choice.cost, plan.model(4, plan.text_tokens))
    with pytest.raises(ConfigError, match="the smallest achievable is 0.2803 of the unreduced TFLOPs"):
        BudgetPlan(validate(composed("budget.fraction=0.2", "budget.text_tokens=100"))).choice


# --- aim.flops, aim.bench, aim.run ---------------------------------------------------------------------
def test_aim_flops_with_the_papers_budget_on_llava_onevision_7b(tmp_path):
    proc = run_in_process("aim.flops", "model=llava_onevision_7b", "dataset.num_frames=32", "budget.tflops=15",
                          "flops.json=true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tflops"] <= 15 and result["budget"]["tflops"] == pytest.approx(result["tflops"])
    assert result["budget"]["setting"]["merger"]["ratio"] == 0.25
    assert result["budget"]["asked"] == {"tflops": 15.0} and result["budget"]["chosen_by"] == "policy"
    assert "budget tflops=15: merger aim ratio=0.25, pruner aim l1=14 l2=22 (policy): 14.76 TFLOPs" in proc.stdout


@pytest.mark.parametrize("budget,check", [
    ("budget.fraction=0.15", lambda r: r["tflops"] <= 0.15 * r["tflops_full"]),
    ("budget.prefill_ms=60", lambda r: r["budget"]["prefill_ms"] <= 60 and r["budget"]["hardware"] == "h100_sxm"),
])
def test_aim_flops_budgets_in_other_units(budget, check):
    from aim.efficiency.cost import flops, model_configs, sample_frames

    cfg = composed("model=llava_onevision_7b", "dataset.num_frames=32", budget, "budget.hardware=h100_sxm")
    valid = validate(cfg)
    plan = apply_budget(cfg, valid, sample_frames(valid, model_configs(valid.model)[1]), valid.flops.text_tokens)
    result = {**flops(validate(cfg)), "budget": plan.record()}
    assert check(result)
    assert result["budget"]["tflops"] == pytest.approx(result["tflops"])  # the run's config holds the choice
    assert cfg.merger.ratio == result["budget"]["setting"]["merger"]["ratio"]


def test_the_paper_setting_fits_60_ms_on_an_h100_and_the_choice_is_milder():
    """60 ms on an H100-SXM allows more than the A100's 55 ms setting: the policy chooses less reduction."""
    plan = plan_for(*OV7B, "budget.prefill_ms=60", "budget.hardware=h100_sxm", "budget.tradeoff=policy")
    assert plan.choice.cost.prefill_ms <= 60 and plan.choice.cost.tflops > 14.76


def test_aim_bench_times_the_chosen_setting():
    """The budget counts every operator (aim.flops's `tflops`); aim.bench reports the matmuls only, whose
    ratio to the unreduced count differs slightly: the token layout it ran is the one planned."""
    from aim.bench import bench

    cfg = composed("budget.fraction=0.5", "budget.tradeoff=policy", "bench.frames=2", "bench.repeats=1", "bench.warmup=0")
    valid = validate(cfg)
    plan = apply_budget(cfg, valid, valid.bench.frames, valid.bench.text_tokens)
    record = plan.record()
    result = bench(validate(cfg))
    assert record["fraction"] <= 0.5 and record["frames"] == 2 and record["text_tokens"] == 100
    assert [v + result["text_tokens"] for v in result["visual_tokens_per_layer"]] == record["tokens_per_layer"]
    assert result["tflops"] == pytest.approx(record["tflops_analytic"], rel=1e-12)
    assert result["tflops_full"] < record["tflops_full"]  # matmuls only, against every operator


def test_apply_budget_writes_the_knobs_into_the_config_and_leaves_it_alone_without_one():
    cfg = composed(*OV7B, "budget.tflops=15", "budget.tradeoff=policy")
    plan = apply_budget(cfg, validate(cfg), 32, 100)
    assert (cfg.merger.ratio, cfg.pruner.l1, cfg.pruner.l2) == (0.25, 14, 22) and plan.record()["tflops"] <= 15
    assert cfg.pruner.tau == 0.1 and cfg.merger.averaging == "size_weighted"  # other fields as configured
    plain = composed(*OV7B, "merger.ratio=0.5")
    assert apply_budget(plain, validate(plain)) is None and plain.merger.ratio == 0.5


def test_aim_run_meets_a_fraction_of_0_2_on_the_bundled_model_and_records_the_text_length(tmp_path, bundled_env):
    out = tmp_path / "run"
    proc = run_in_process("aim.run", "budget.fraction=0.2", f"hydra.run.dir={out}", "dataset.num_samples=8",
                          "dataset.limit=2", "eval.progress=false", "logger=none",
                          env={**bundled_env, "AIM_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    entry = results["budget"]
    assert entry["fraction"] <= 0.2 and entry["asked"] == {"fraction": 0.2}
    assert entry["text_tokens_from"]["median of the prompts"]["dataset"] == "synthetic_video"
    measured = entry["text_tokens_from"]["median of the prompts"]
    assert measured["median_of"] == 8  # every prompt of the 8-question benchmark, not only the 2 of dataset.limit
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(measured["min"] <= r["text_tokens"] <= measured["max"] for r in records)  # measured as the run counts
    assert measured["min"] <= entry["text_tokens"] <= measured["max"] < 25
    assert results["config"]["budget"]["text_tokens"] is None
    assert "text tokens (the dataset's median prompt)" in proc.stdout


@pytest.mark.slow
def test_aim_run_records_the_budget_and_per_sample_choices(tmp_path, bundled_env):
    out = tmp_path / "run"
    plan = plan_for("budget.tflops=1", "budget.tradeoff=policy")  # the bundled model's policy costs at 4 frames
    model = plan.model(4, 100)
    budget = model.cost(policy_order(plan.merger, plan.pruner, 4)[6]).tflops
    proc = run_in_process("aim.run", f"hydra.run.dir={out}", "dataset.num_samples=8", "dataset.limit=2",
                          "eval.progress=false", "logger=none", f"budget.tflops={budget!r}", "budget.tradeoff=policy",
                          "budget.per_sample=true", "budget.text_tokens=100",
                          env={**bundled_env, "AIM_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    entry = results["budget"]
    assert entry["asked"] == {"tflops": budget} and entry["chosen_by"] == "policy" and entry["per_sample"]
    assert entry["setting"] == {"merger": {"name": "aim", "ratio": 0.25}, "pruner": {"name": "aim", "l1": 2, "l2": 4}}
    assert (results["config"]["merger"]["ratio"], results["config"]["pruner"]["l1"], results["config"]["pruner"]["l2"]) == (0.25, 2, 4)
    assert entry["samples"]["num_samples"] == 2 and entry["samples"]["within_budget"] == 2
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for r in records:  # the prompts (about 20 tokens) are shorter than the planned 100: milder reductions
        assert r["budget"]["tflops"] <= budget and r["tflops_analytic"] <= budget
        assert r["budget"]["text_tokens"] == r["text_tokens"] and r["budget"]["visual_tokens"] == r["visual_tokens"]
        assert r["visual_tokens"] > 4 * 12


# --- per sample ----------------------------------------------------------------------------------------
def test_per_sample_budgets_reduce_longer_prompts_more_and_every_sample_fits(tiny_adapter, small_benchmark, tmp_path):
    from aim.data import VideoMCQDataset
    from aim.eval import evaluate
    from aim.merging import MERGERS
    from aim.pruning import PRUNERS
    from aim.tracking.records import SampleRecords

    base = list(VideoMCQDataset(small_benchmark, num_frames=4, limit=2))
    long_question = base[0].question + " please look closely at every frame of the video" * 3
    samples = [base[0], dataclasses.replace(base[0], id="long", question=long_question),
               dataclasses.replace(base[1], id="more_frames", num_frames=8)]
    probe = BudgetPlan(validate(composed("budget.tflops=1", "budget.tradeoff=policy")), frames=4, text_tokens=20)
    assert probe.hf_config.text_config.hidden_size == tiny_adapter.text_config.hidden_size
    counts = [SampleBudget(probe).counts(tiny_adapter, s.load()[0], s.question, s.options, "letter", "video")[:2]
              for s in samples]
    assert counts[1][1] > counts[0][1] + 20 and counts[2][0] == 8  # the long prompt; the 8-frame sample
    # the budget: midway between the short and the long prompt's cost at 25% merging, no pruning
    order = policy_order(probe.merger, probe.pruner, 4)
    budget = (probe.model(4, counts[0][1]).cost(order[4]).tflops + probe.model(4, counts[1][1]).cost(order[4]).tflops) / 2
    plan = BudgetPlan(validate(composed(f"budget.tflops={budget!r}", "budget.per_sample=true", "budget.tradeoff=policy")),
                      frames=4, text_tokens=20)
    per_sample = plan.sample_budget()
    records = SampleRecords(tmp_path / "samples.jsonl")
    nominal = plan.choose(4, 20).setting
    evaluate(tiny_adapter, samples, MERGERS.build(nominal.merger["name"], **nominal.merger),
             PRUNERS.build(nominal.pruner["name"], **nominal.pruner), records, progress=False, per_sample=per_sample)
    by_id = {r["id"]: r for r in records.records}
    for r in by_id.values():  # the prediction is what the run did, and it fits
        assert r["budget"]["within_budget"] and r["budget"]["tflops"] <= budget
        assert r["tflops_analytic"] == pytest.approx(r["budget"]["tflops_analytic"]) and r["tflops_analytic"] <= budget
        assert (r["visual_tokens"], r["text_tokens"]) == (r["budget"]["visual_tokens"], r["budget"]["text_tokens"])
    reduced = {k: sum(r["visual_tokens_per_layer"]) for k, r in by_id.items()}
    assert reduced["long"] < reduced[base[0].id]  # the longer prompt is reduced more
    rank = {k: order.index(plan.choose(r["budget"]["frames"], r["budget"]["text_tokens"]).setting) for k, r in by_id.items()}
    assert rank["long"] > rank[base[0].id] and rank["more_frames"] >= rank[base[0].id]


def test_pooling_on_a_non_square_frame_is_costed_on_its_own_grid():
    """Qwen2-VL frames of 112 x 208 px: 5 x 9 tokens per temporal patch, pooled at 0.25 to 2 x 6."""
    plan = plan_for("model=qwen2_vl_tiny", "model.frame_size=[112,208]", "merger=pool", "merger.ratio=0.25",
                    "pruner=none", "budget.tflops=1", "budget.tradeoff=policy", frames=4)
    model = plan.model(4, 100, (112, 208))
    assert (model.groups, model.per_group) == (2, 45)
    assert model.kept_per_group(Setting.of({"name": "pool", "ratio": 0.25}, {"name": "none"})) == 12
