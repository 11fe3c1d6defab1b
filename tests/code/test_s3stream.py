"""s3stream.Prefetch: every byte of the body, in order, however the body and the reader cut it."""
from __future__ import annotations

import io
import random

import pytest

import s3stream


class Body:
    """A response body that returns a random number of bytes per read, and can fail part way."""

    def __init__(self, data: bytes, seed: int, fail_after: int | None = None, most: int = 1 << 30):
        self._f, self._rng, self._fail_after = io.BytesIO(data), random.Random(seed), fail_after
        self._most = most

    def read(self, size: int) -> bytes:
        if self._fail_after is not None and self._f.tell() >= self._fail_after:
            raise ConnectionResetError("peer went away")
        return self._f.read(self._rng.randint(1, min(size, self._most)))


DATA = random.Random(1).randbytes(300_000)


@pytest.mark.parametrize("seed", range(6))
def test_readinto_and_read_mixed_give_the_body_whole(seed):
    rng = random.Random(seed)
    prefetch = s3stream.Prefetch(Body(DATA, seed), ahead=3)
    got = bytearray()
    try:
        while True:
            if rng.random() < 0.5:
                buffer = bytearray(rng.choice([1, 3, 4096, 70_000, 400_000]))
                n = prefetch.readinto(buffer)
                got += buffer[:n]
            else:
                n = len(chunk := prefetch.read(rng.choice([-1, 1, 5, 5000, 100_000])))
                got += chunk
            if not n:
                break
        assert bytes(got) == DATA
        assert prefetch.read() == b"" and prefetch.readinto(bytearray(8)) == 0
    finally:
        prefetch.close()


def test_readinto_returns_what_has_arrived_without_waiting_to_fill_the_buffer():
    prefetch = s3stream.Prefetch(Body(DATA, 7, most=1000), ahead=2)
    try:
        buffer = bytearray(len(DATA) + 10)
        n = prefetch.readinto(buffer)
        assert 0 < n <= 1000 and bytes(buffer[:n]) == DATA[:n]
    finally:
        prefetch.close()


def test_a_body_that_fails_part_way_raises_to_the_reader_after_the_bytes_before_it():
    prefetch = s3stream.Prefetch(Body(DATA, 3, fail_after=100_000), ahead=2)
    got = bytearray()
    try:
        with pytest.raises(ConnectionResetError):
            while True:
                buffer = bytearray(4096)
                n = prefetch.readinto(buffer)
                got += buffer[:n]
        assert len(got) >= 100_000 and bytes(got) == DATA[:len(got)]
    finally:
        prefetch.close()
