"""VisionZip as a specification: dominant tokens are the most attended, the rest merge into evenly spaced
contextual targets by key similarity; counts as configured, positions kept."""
import pytest
import torch

from aim.merging import MERGERS, kept_tokens
from tests.test_diversity import merge_flops


def test_dominant_tokens_are_the_most_attended():
    x, keys = torch.randn(2, 49, 8), torch.randn(2, 49, 4)
    attention = torch.rand(2, 49) * 0.01
    attention[0, [3, 17, 40]] = 1.0
    attention[1, [0, 5, 48]] = 1.0
    out = MERGERS.build("visionzip", ratio=3 / 49, dominant=1.0)(x, metric=keys, attention=attention)
    assert out.token_index.tolist() == [[3, 17, 40], [0, 5, 48]]
    torch.testing.assert_close(out.features, x.gather(1, out.token_index.unsqueeze(-1).expand(-1, -1, 8)))


def test_contextual_tokens_are_evenly_spaced_targets_plus_the_mean_of_their_key_nearest_tokens():
    """8 tokens, token 0 dominant; the other 7 hold 2 contextual targets, every 3rd: tokens 1 and 4. Keys:
    tokens 2, 3, 5 point like target 1's key, tokens 6, 7 like target 4's."""
    x = torch.arange(8, dtype=torch.float32)[None, :, None].expand(1, 8, 2).clone()
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    keys = torch.stack([e1, e1, e1, e1, e2, e1, e2, e2])[None]
    attention = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0]])
    out = MERGERS.build("visionzip", ratio=3 / 8, dominant=1 / 3)(x, metric=keys, attention=attention)
    assert out.token_index.tolist() == [[0, 1, 4]]
    torch.testing.assert_close(out.features[0, :, 0], torch.tensor([0.0, 1 + (2 + 3 + 5) / 3, 4 + (6 + 7) / 2]))


@pytest.mark.parametrize("tokens,ratio,dominant,split", [(576, 64 / 576, 0.84375, (54, 10)), (576, 128 / 576, 0.84375, (108, 20)),
                                                         (196, 0.25, 0.84375, (41, 8)), (49, 1.0, 1.0, (49, 0))])
def test_counts_as_configured_at_original_positions(tokens, ratio, dominant, split):
    merger = MERGERS.build("visionzip", ratio=ratio, dominant=dominant)
    assert merger.split(tokens) == split  # the paper's 54 + 10 of 64 and 108 + 20 of 128 on LLaVA-1.5
    x = torch.randn(3, tokens, 8)
    out = merger(x, metric=torch.randn(3, tokens, 4), attention=torch.rand(3, tokens))
    k = kept_tokens(tokens, ratio)
    assert out.features.shape == (3, k, 8) and out.token_index.shape == (3, k)
    assert (out.token_index.diff(dim=1) > 0).all()


def test_frames_are_zipped_independently():
    x, keys, attention = torch.randn(2, 49, 8), torch.randn(2, 49, 4), torch.rand(2, 49)
    merger = MERGERS.build("visionzip", ratio=0.25)
    both, second = merger(x, metric=keys, attention=attention), merger(x[1:], metric=keys[1:], attention=attention[1:])
    assert torch.equal(both.token_index[1:], second.token_index)
    torch.testing.assert_close(both.features[1:], second.features)


def test_visionzip_without_tower_signals_is_a_clear_error():
    with pytest.raises(ValueError, match="visionzip needs the vision tower's keys and attention"):
        MERGERS.build("visionzip")(torch.randn(1, 49, 8))


def test_the_key_similarities_are_counted_as_merge_flops():
    merger = MERGERS.build("visionzip", ratio=0.25)  # 49 tokens: 12 kept, 10 dominant, 2 contextual targets
    counted = merge_flops(merger, torch.randn(1, 49, 8), metric=torch.randn(1, 49, 4), attention=torch.rand(1, 49))
    assert counted >= 2 * (49 - 12) * 2 * 4
