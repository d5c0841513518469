"""Code point class bits and constants that the filter rules and the features share with their compiled loops.

A module of its own so that `prep.text._kernels` (which imports numba) need not import the rules'
module, which imports it only when a rule set is configured.
"""

import numpy as np

# Code point classes, one bit each. PUNCT: the rules' punctuation (Unicode P*, ASCII symbols, controls);
# UNICODE_PUNCT: Unicode P* alone, the regex class \pP of C4's sentence count; COUNTED: the characters
# gopher_quality and fineweb count (".", "#", "\u2026") and those str.splitlines() breaks at.
SPACE, PUNCT, ALPHA, DIGIT, TERMINAL, CJK, UNICODE_PUNCT, COUNTED = (1 << i for i in range(8))
# Lead bytes of the UTF-8 of whitespace outside ASCII (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
# U+202F, U+205F, U+3000); tests check them against every code point.
SPACE_LEADS = (0xC2, 0xE1, 0xE2, 0xE3)
HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # the base of the token and piece hashes
GROUP_MIX = np.uint64(0xC2B2AE3D27D4EB4F)  # mixes an n-gram group id into the keys of the next level
