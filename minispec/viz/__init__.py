"""Notebook helpers: show the package's own code, step through decoding, draw what happened."""
from .heads import head_blocks, plot_head
from .notebook import fmt_prob, one_at_a_time, show
from .rounds import FATE_COLORS, FATE_HELP, Trace, plot_round, round_fates
from .steppers import DecodeStepper, RoundStepper, TreeStepper, suffix_round_text
from .trees import (RecordedDynamicTree, plot_expand_rerank, plot_tree, plot_tree_mask, plot_trie, plot_ttt_mask, tree_fates,
                    tree_layout)
