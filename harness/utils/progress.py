"""The progress bar every long loop shows: images done, images/s and ETA, on a terminal only."""

from __future__ import annotations

from tqdm.auto import tqdm


def image_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    """A bar counting images; ``disable=None`` makes tqdm hide it when stderr is not a
    terminal (logs, CI), ``enabled=False`` hides it everywhere."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="img",
        unit_scale=True,
        leave=False,
        disable=None if enabled else True,
    )
