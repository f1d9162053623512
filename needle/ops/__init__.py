"""The op library. Every op is a class (forward + gradient) with a lowercase function.

Where to add an op: the file for its family (``ops_mathematic`` for the course's
elementwise, shape and linear-algebra ops; ``ops_elementwise``, ``ops_shape`` and
``ops_reduce`` for the PyTorch-named ones; ``ops_indexing`` for indexing, selection and
joining; ``ops_conv`` for convolutions; ``ops_pool`` for pooling and upsampling;
``ops_logarithmic`` for log-sum-exp style reductions; ``ops_tuple`` for ops on tuples of
tensors), plus one row in ``tests/ops/test_ops.py``'s table.
"""

from .ops_conv import *  # noqa: F401,F403
from .ops_elementwise import *  # noqa: F401,F403
from .ops_fused import *  # noqa: F401,F403
from .ops_indexing import *  # noqa: F401,F403
from .ops_logarithmic import *  # noqa: F401,F403
from .ops_mathematic import *  # noqa: F401,F403
from .ops_pool import *  # noqa: F401,F403
from .ops_reduce import *  # noqa: F401,F403
from .ops_sequence import *  # noqa: F401,F403
from .ops_shape import *  # noqa: F401,F403
from .ops_tuple import *  # noqa: F401,F403
