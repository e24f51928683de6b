"""serve_app.allocator: the GLIBC_TUNABLES a kernel-running process gets."""

from __future__ import annotations

from serve_app import allocator


def test_tunables_are_added_and_the_users_own_win() -> None:
    assert allocator.tunables(None) == ":".join(allocator.TUNABLES)
    merged = allocator.tunables("glibc.malloc.hugetlb=0:glibc.cpu.x86_shstk=off")
    parts = merged.split(":")
    assert parts[:2] == ["glibc.malloc.hugetlb=0", "glibc.cpu.x86_shstk=off"]
    assert "glibc.malloc.hugetlb=1" not in parts
    assert "glibc.malloc.arena_max=1" in parts and "glibc.malloc.mmap_max=0" in parts


def test_worker_env_and_active() -> None:
    env = allocator.worker_env({})
    assert env == {"GLIBC_TUNABLES": ":".join(allocator.TUNABLES)}
    assert allocator.active(env)
    assert not allocator.active({})
    assert not allocator.active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"})
