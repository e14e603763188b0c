"""Files the harness writes get the mode a plain ``open()`` would: 0666 less the umask, so a
shared store or a published leaderboard is readable (and, under umask 002, writable) by the
team, not 0600 as ``mkstemp`` makes them."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from harness.store.store import Store
from harness.utils.atomic import current_umask, save_atomic, write_text_atomic
from tests.test_store import config, metrics


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(folder) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_store_files_respect_the_umask(tmp_path, umask):
    st = Store(tmp_path / "store")
    st.begin("run-a", config(0))
    with st.claim("run-a"):
        save_atomic({"w": torch.zeros(2)}, st.checkpoint("run-a", "best"))
        st.log("run-a", "a line")
        st.finish("run-a", metrics(0.8))
        claim_modes = {k: v for k, v in modes(tmp_path / "store").items() if "claim" in k}
    write_text_atomic("# board\n", tmp_path / "store" / "leaderboards" / "g.md")
    found = modes(tmp_path / "store")
    expected = 0o666 & ~umask
    assert {"index.sqlite", "runs/run-a/config.json", "runs/run-a/metrics.json"} <= set(found)
    assert "runs/run-a/checkpoints/best.pt" in found and "leaderboards/g.md" in found
    assert claim_modes, "the claim file was looked at while held"
    assert set(claim_modes.values()) == {expected}
    assert {name: mode for name, mode in found.items() if mode != expected} == {}
    assert expected == (0o644 if umask == 0o022 else 0o664)
