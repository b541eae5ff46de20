"""Token roles in the LLM sequence, shared by the model adapters (which lay the sequence out) and the pruning
hooks (which drop visual tokens): a leaf module, so the pruning family does not import the model family.

Text (prefix or question) is never pruned; PADDING marks the pad positions of a padded batch (never pruned,
never counted as a key by the importance scores).
"""
PREFIX_TEXT, VISUAL, QUESTION_TEXT, PADDING = 0, 1, 2, 3
