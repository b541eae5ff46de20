"""AIM's PageRank importance without any N x N matrix: the blockwise algorithm (PyTorch, every device) and its
Triton kernel (the GPU path, checked here under Triton's interpreter on CPU tensors) give the scores of the
dense computation and keep the same tokens, with pad tokens, grouped-query heads and any block size."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import aim
from aim.pruning import PRUNERS
from aim.pruning.importance import pagerank, pagerank_blockwise, pagerank_dense, pagerank_from_qk, rows_per_block

from tests.pruning_reference import reference_pagerank

N = 50


def qk(heads=4, kv_heads=2, n=N, d=8, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, n, d, generator=g), torch.randn(batch, kv_heads, n, d, generator=g)


def padded():
    """Row 0 left-padded (7 pads first), row 1 right-padded (5 pads last), both at once."""
    valid = torch.ones(2, N, dtype=torch.bool)
    valid[0, :7] = False
    valid[1, -5:] = False
    return valid


def same_kept_tokens(a, b, valid=None):
    """The tokens a pruning step would keep, at several budgets: the same under either score."""
    if valid is not None:
        a, b = a.masked_fill(~valid, -1), b.masked_fill(~valid, -1)
    for keep in (5, 13, 30):
        assert torch.equal(a.topk(keep, dim=1).indices.sort(1).values, b.topk(keep, dim=1).indices.sort(1).values)


def assert_scores_equal(got, expected):
    """1e-5 relative (fp32 sums in another order; every fp32 path is ~1e-5 from float64 at tau = 0.1), and
    1e-7 absolute for the smallest scores (the mean score is 1/N = 0.02; test_pruning_parts allows 1e-6)."""
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=1e-5)


def test_blockwise_equals_the_papers_definition():
    """Against the float64 loops of the paper's definition (tests/pruning_reference.py), GQA keys repeated."""
    q, k = qk(n=12, seed=1)
    logits = q.double() @ k.double().repeat_interleave(2, 1).transpose(-1, -2) / 8**0.5
    assert_scores_equal(pagerank_blockwise(q, k, tau=0.1, block_rows=5), reference_pagerank(logits, tau=0.1).float())


@pytest.mark.parametrize("block_rows", [3, 16, N, 64])  # 3 and 16 do not divide N; 64 is more than N
@pytest.mark.parametrize("pads", [False, True])
def test_blockwise_equals_the_dense_computation_and_keeps_the_same_tokens(block_rows, pads):
    q, k = qk()  # 4 query heads sharing 2 key heads
    valid = padded() if pads else None
    dense = pagerank_dense(q, k, valid=valid)
    blockwise = pagerank_blockwise(q, k, valid=valid, block_rows=block_rows)
    assert_scores_equal(blockwise, dense)
    same_kept_tokens(blockwise, dense, valid)
    if pads:  # the pads are really out of the chain (else the check above could not see them handled wrong)
        assert not torch.allclose(pagerank_blockwise(q, k, block_rows=block_rows), dense, rtol=1e-3)


def test_grouped_keys_score_as_the_repeated_keys_of_the_hook():
    q, k = qk()
    assert_scores_equal(pagerank_blockwise(q, k, block_rows=9), pagerank_blockwise(q, k.repeat_interleave(2, 1), block_rows=9))
    with pytest.raises(ValueError, match="4 query heads cannot share 3 key heads"):
        pagerank_blockwise(q, torch.randn(2, 3, N, 8))


class LargestTensor(TorchDispatchMode):
    """The most elements any tensor made inside the block had."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_blockwise_never_holds_an_n_by_n_matrix():
    """Peak extra memory O(rows x N): no tensor beyond one [B, H, rows, N] block of logits, while the dense
    code holds [B, heads, N, N]; `block_mib` picks the rows, and on a CPU `pagerank_from_qk` goes blockwise
    where not even one head's N x N fits in it."""
    q, k = qk(n=400)
    b, h, n = 2, 4, 400
    rows = rows_per_block(b, h, n, block_mib=1)
    assert rows == 2**20 // (b * h * n * 4) == 81
    with LargestTensor() as largest:
        blockwise = pagerank_from_qk(q, k, block_mib=1)  # one head: 2 x 400 x 400 fp32 = 1.2 MiB > 1 MiB
    assert largest.numel <= b * h * rows * n < b * n * n
    with LargestTensor() as largest:
        dense = pagerank_from_qk(q, k, block_mib=8)  # every head fits: dense, one logit pass
    assert largest.numel == b * h * n * n
    assert_scores_equal(blockwise, dense)


def test_the_aim_pruner_scores_with_the_configured_backend():
    q, k = qk()
    expected = pagerank(q @ k.repeat_interleave(2, 1).transpose(-1, -2) / 8**0.5)
    for backend in ("auto", "blockwise", "dense"):
        assert_scores_equal(PRUNERS.build("aim", backend=backend).importance(q, k, None), expected)
    with pytest.raises(ValueError, match="backend"):
        pagerank_from_qk(q, k, backend="flash")


INTERPRETED = """
import sys
import numpy
import torch
import triton.runtime.interpreter as interpreter

if tuple(int(x) for x in numpy.__version__.split(".")[:2]) >= (2, 4):
    # triton-lang/triton#9171: the interpreter turns a loop bound computed from program_id (an array of one
    # element) into an int with int(array), which numpy 2.4 refuses; its fix (#9172) reads the element
    patch = interpreter._patch_lang_tensor

    def patched(tensor, *args, **kwargs):
        patch(tensor, *args, **kwargs)
        tensor.__index__ = lambda self: int(self.handle.data.reshape(-1)[0])

    interpreter._patch_lang_tensor = patched
from aim.pruning.pagerank_triton import pagerank_triton

cases = torch.load(sys.argv[1])
torch.save([pagerank_triton(*c["args"], **c["kwargs"]) for c in cases], sys.argv[2])
"""


def interpreted(cases, tmp_path):
    """`pagerank_triton` on each case's CPU tensors under Triton's interpreter, in a fresh process: the
    kernels (and triton's own @jit helpers) must be decorated with TRITON_INTERPRET=1 already set."""
    pytest.importorskip("triton", reason="the Triton kernel is checked only where the triton package is installed")
    torch.save(cases, tmp_path / "cases.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(aim.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", INTERPRETED, str(tmp_path / "cases.pt"), str(tmp_path / "out.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


@pytest.mark.slow  # ~25 s: the interpreter runs every tile in numpy
def test_the_triton_kernel_equals_the_blockwise_algorithm(tmp_path):
    """Tiles of 16 and 32 that do not divide N = 37, grouped-query heads, a left- and a right-padded row
    (fp32), and fp16 inputs. (bfloat16 is left out: Triton 3.5's interpreter multiplies bfloat16 tiles
    wrongly.)"""
    q, k = qk(n=37)
    valid = torch.ones(2, 37, dtype=torch.bool)
    valid[0, :4], valid[1, -3:] = False, False
    cases = [dict(args=(q.to(dtype), k.to(dtype)), kwargs=dict(valid=v, block_q=bq, block_k=bk))
             for dtype, bq, bk, v in ((torch.float32, 16, 32, valid), (torch.float16, 32, 16, None))]
    for case, got in zip(cases, interpreted(cases, tmp_path)):
        expected = pagerank_blockwise(*case["args"], valid=case["kwargs"]["valid"], block_rows=10)
        assert_scores_equal(got, expected)
        same_kept_tokens(got, expected, case["kwargs"]["valid"])
