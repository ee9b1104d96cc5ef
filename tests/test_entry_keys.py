"""Idempotent adds: an entry added with a ``key`` is stored once, however often it is sent.

The key is checked where every write lands (``reid.gallery.Gallery.add``, inside the
add's transaction), so HTTP and gRPC behave alike; adds without a key are unchanged.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from live_server import LiveServer
from server_fakes import image_bytes

from reid.gallery import EntryMetadata, Gallery
from reid_client import ReIDClient, ReIDGrpcClient, ServerError

DIM = 8


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_an_add_with_stored_keys_answers_the_stored_ids_and_adds_nothing(tmp_path):
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        first = gallery.add(vectors(3), [EntryMetadata(key=f"k{i}", camera=i) for i in range(3)])
        again = gallery.add(
            vectors(3, seed=1), [EntryMetadata(key=f"k{i}", camera=9) for i in (2, 0, 3)]
        )
        assert list(again[:2]) == [first[2], first[0]]  # the stored ids, in request order
        assert again[2] > first[2]  # k3 is new
        assert len(gallery) == 4
        (stored,) = gallery.get([int(first[0])])
        assert stored.metadata.camera == 0 and stored.metadata.key == "k0"  # not overwritten


def test_a_key_repeated_within_one_batch_is_stored_once(tmp_path):
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        ids = gallery.add(
            vectors(3), [EntryMetadata(key="same"), EntryMetadata(), EntryMetadata(key="same")]
        )
        assert ids[0] == ids[2] != ids[1]
        assert len(gallery) == 2
        hits = gallery.search(vectors(1), k=None)[0]
        assert sorted(m.id for m in hits) == sorted({int(i) for i in ids})


def test_adds_without_a_key_are_never_deduplicated(tmp_path):
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        a = gallery.add(vectors(2), [EntryMetadata(camera=1)] * 2)
        b = gallery.add(vectors(2), [EntryMetadata(camera=1)] * 2)
        assert len({*a, *b}) == 4 and len(gallery) == 4


def test_keys_stay_unique_after_reopening(tmp_path):
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        first = gallery.add(vectors(1), [EntryMetadata(key="a")])
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        assert list(gallery.add(vectors(1), [EntryMetadata(key="a")])) == list(first)
        assert len(gallery) == 1


def test_a_gallery_written_before_keys_existed_opens_and_takes_keys(tmp_path):
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        gallery.add(vectors(2), [EntryMetadata(camera=0)] * 2)
    db = sqlite3.connect(tmp_path / "g" / "gallery.sqlite3")
    db.execute("DROP INDEX entries_key")
    db.execute("ALTER TABLE entries DROP COLUMN key")  # the older schema
    db.commit()
    db.close()
    with Gallery.open(tmp_path / "g", DIM, index="flat") as gallery:
        assert len(gallery) == 2
        ids = gallery.add(vectors(2), [EntryMetadata(key="x")] * 2)
        assert ids[0] == ids[1] and len(gallery) == 3


@pytest.mark.parametrize("bad", ["", "x" * 257, 5])
def test_a_bad_key_is_refused(bad):
    with pytest.raises(ValueError, match="key must be a string"):
        EntryMetadata(key=bad)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    server = LiveServer(directory / "gallery", log=directory / "server.log").wait_ready()
    yield server
    server.stop()


def test_http_and_grpc_adds_with_the_same_keys_store_each_entry_once(live):
    images = [image_bytes((200, 10, 10)), image_bytes((10, 200, 10))]
    meta = [{"camera": 1, "key": "cam1/f1/t1"}, {"camera": 1, "key": "cam1/f1/t2"}]
    with ReIDClient(live.url) as http, ReIDGrpcClient(live.grpc_target) as grpc:
        before = http.stats().size
        ids = http.add(images, meta)
        assert http.add(images, meta) == ids  # replayed over HTTP
        assert grpc.add(images, meta) == ids  # and over gRPC
        assert http.stats().size == before + 2
        assert http.get_entry(ids[0]).key == "cam1/f1/t1"
        page = grpc.list_gallery(limit=1000)
        assert {e.key for e in page.entries if e.id in ids} == {"cam1/f1/t1", "cam1/f1/t2"}
        unkeyed = http.add(images[:1], [{"camera": 1}])
        assert http.add(images[:1], [{"camera": 1}]) != unkeyed  # unchanged without a key


def test_an_over_long_key_is_a_400_over_http(live):
    with ReIDClient(live.url) as http, pytest.raises(ServerError) as error:
        http.send(http_add_call([image_bytes()], [{"key": "x" * 300}]))
    assert error.value.status == 400 and "key" in str(error.value)


def http_add_call(images, metadata):
    """``POST /v1/gallery`` without the client's own validation (the server must refuse)."""
    import json

    from reid_client.http_client import Call, _ids, _image_files

    body = json.dumps(metadata)
    options = {"files": _image_files(images), "data": {"metadata": body}}
    return Call("POST", "/v1/gallery", _ids(len(images)), options, safe_to_repeat=False)
