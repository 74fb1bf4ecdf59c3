"""Shared-memory region names are unique in the whole process: a pool makes one client per
server (and the run checks with another), each with its own regions; two of them picking the
same name made every client after the first fall back to gRPC ("File exists")."""

from __future__ import annotations

from streamer.triton import shm


def test_two_region_pools_in_one_process_never_pick_the_same_name():
    made = []
    pools = [shm.RegionPool(on_create=made.append, on_destroy=lambda slot: None, min_size=4096) for _ in range(3)]
    try:
        for pool in pools:
            pool.acquire("frame 0", 100)
            pool.acquire("frame 1", 100)
        names = [slot.name for slot in made]
        assert len(names) == 6 and len(set(names)) == 6, names
        assert all(name.startswith(shm.PREFIX + shm.owner_tag() + "-") for name in names)
    finally:
        for pool in pools:
            pool.close()
    assert not any((shm.SHM_DIR / name).exists() for name in names)  # unlinked by their pool
