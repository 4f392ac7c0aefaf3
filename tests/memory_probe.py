"""Whether freed host memory stays mapped: importable without Lightning, for the subprocess
tests of mtl/host_memory.py (they start faster)."""

from pathlib import Path

import torch


def freed_block_stays_mapped(mib: int = 48) -> bool:
    """Whether the pages of a freed `mib` MiB tensor are still mapped into this process (kept
    for reuse) rather than handed back to the operating system (glibc's default above 32 MiB)."""
    block = torch.empty(mib << 20, dtype=torch.uint8).fill_(1)
    address = block.data_ptr()
    del block
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return True
    return False
