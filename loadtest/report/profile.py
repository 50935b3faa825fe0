"""py-spy's collapsed stacks of a loaded instance, summarised for the report."""
from __future__ import annotations

from pathlib import Path

OUR_CODE = ("server/", "api/", "storage/", "realtime/")


def profile_summary(path: Path, top: int = 12) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's collapsed stacks: (samples, top self-time frames, top frames of our
    own code by inclusive time)."""
    if not path.exists():
        return 0, [], []
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            if any(part in frame for part in OUR_CODE) and "site-packages" not in frame:
                inclusive[frame] = inclusive.get(frame, 0) + n
    by_count = lambda d: sorted(d.items(), key=lambda kv: -kv[1])[:top]  # noqa: E731
    return total, by_count(own), by_count(inclusive)
