"""Makes Python take its CPU for one that multiplies bf16 natively (AMX, AVX512-BF16).

``tests/test_portability.py`` puts this folder on ``PYTHONPATH``, which the processes it starts
and the notebook kernels they start inherit: a machine fact that leaks into a test or a
committed output then shows there, on any machine.
"""

import torch.cpu

torch.cpu._is_avx512_bf16_supported = lambda: True
torch.cpu._is_amx_tile_supported = lambda: True
