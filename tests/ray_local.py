"""The Ray tests' local Ray, one per test module: two CPUs, no dashboard, no progress bars.
``fg_onnx.ray`` joins a Ray already running in the process, so a CLI run inside such a
module starts none of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator


def local_ray(pickle_by_value: str | None = None) -> Iterator[None]:
    """The body of a module-scoped fixture; ``pickle_by_value`` names a test module whose
    classes the workers get by value (they cannot import test modules)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if pickle_by_value is not None:
        ray.cloudpickle.register_pickle_by_value(sys.modules[pickle_by_value])
    yield
    ray.shutdown()
