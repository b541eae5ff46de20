"""aim: training-free adaptive inference of multi-modal LLMs by token merging and pruning."""

__version__ = "0.1.0"
