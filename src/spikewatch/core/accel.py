"""Optional numpy: exact vectorised kernels when it is installed, pure Python otherwise.

numpy is not a dependency (``pip install spikewatch[fast]`` adds it). Code that can use it
reads :data:`np` at call time, so tests can set it to None to run the pure-Python paths.
Every numpy kernel works on int64 and checks first that no value can overflow; when one
could, the caller takes the pure-Python path, whose integers are unbounded.
"""

from __future__ import annotations

from typing import Any

#: The numpy module, or None when it is not installed (or switched off by a test).
np: Any = None
try:
    import numpy
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    np = numpy

#: int64 holds every integer below this.
INT64_LIMIT = 2**63

#: Batches shorter than this take the pure-Python paths even with numpy: its fixed cost
#: per call (tens of microseconds) outweighs its speed on the short runs of one live
#: network read; replay's batches of thousands use it. Read at call time (tests set 0).
NUMPY_FROM = 1024
