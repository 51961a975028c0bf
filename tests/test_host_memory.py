"""keep_freed_memory: freed host blocks are reused instead of page-faulted in again."""

import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent(
    """
    import resource
    import torch
    from medrega.training.host_memory import keep_freed_memory

    if not keep_freed_memory():
        print("unsupported")
        raise SystemExit
    sizes = [(32000, 256), (8, 170, 1024), (4096, 1024), (32000, 131)]  # a training step's large temporaries

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            tensors = [torch.zeros(shape) for shape in sizes]
            del tensors
            for shape in reversed(sizes):
                x = torch.ones(shape)
                del x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()  # first touch of the heap
    print(faults())
    """
)


def test_freed_blocks_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True).stdout.split()[-1]
    if out == "unsupported":
        pytest.skip("not glibc Linux")
    # each round touches ~80 MiB: without reuse that is ~20,000 faults of 4 KiB pages per round
    assert int(out) < 500
