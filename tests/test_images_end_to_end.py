"""Images through the evaluation loop on every adapter with an image path: an image benchmark (image_mcq) merged
and pruned gives letter answers and records the visual tokens each layer saw, and fvcore's FLOPs agree with the
analytic count. Tiny random models of the presets (tests/tiny_models.py)."""
import json

import pytest
from PIL import Image

from aim.data import DATASETS
from aim.eval import evaluate
from aim.merging import MERGERS
from aim.pruning import PRUNERS
from aim.tracking.records import SampleRecords
from tests.tiny_models import OPTIONS, QUESTION, build, noise

WIDE_AND_TALL = [(100, 150), (150, 100)]


# preset, image sizes (H, W), visual tokens of each image after merging 25% of each group (pruning: l1=2, l2=4)
@pytest.mark.parametrize("name,sizes,kept", [
    ("qwen2_vl_tiny", WIDE_AND_TALL, [10, 10]),  # 5 x 8 (8 x 5) tokens
    ("qwen2_5_vl_tiny", WIDE_AND_TALL, [10, 10]),
    ("llava_onevision_tiny", WIDE_AND_TALL, [125, 125]),  # anyres: the base image's 49 and 38 of each crop's 154
    ("internvl3_tiny", [(100, 150), (112, 112)], [7 * 16, 1 * 16]),  # 7 tiles (6 and the thumbnail), 1 tile: 16 of 64
])
def test_images_end_to_end_through_the_evaluation_loop(tmp_path, name, sizes, kept):
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, size in enumerate(sizes):
        Image.fromarray(noise(*size, seed=i)[0]).save(root / "images" / f"{i}.png")
        rows.append({"id": f"q{i}", "image": f"{i}.png", "question": QUESTION, "options": OPTIONS, "answer": "A"})
    (root / "questions.json").write_text(json.dumps(rows))
    records = SampleRecords(tmp_path / "samples.jsonl")
    evaluate(build(name), DATASETS.build("image_mcq", root=str(root)), MERGERS.build("aim", ratio=0.25),
             PRUNERS.build("aim", l1=2, l2=4), records, mode="letter", progress=False)
    records.close()
    assert len(records.records) == 2
    for r, n in zip(records.records, kept):
        assert r["prediction"] in "ABCD" and r["visual_tokens"] == n
        assert r["visual_tokens_per_layer"] == [n, n, n // 2, 0]
        assert r["tflops"] == pytest.approx(r["tflops_analytic"], rel=0.01) and r["vision_tower_tflops"] > 0
