"""Reading text, preparing, batching by tokens, and fetching Multi30k over HTTP."""

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest

from transformer_mt.data import multi30k
from transformer_mt.data.dataset import TokenPairs, collate, token_batches
from transformer_mt.data.prepare import DataConfig, SplitFiles, prepare
from transformer_mt.data.text import read_lines, read_parallel
from transformer_mt.errors import TransformerMTError
from transformer_mt.vocab import BOS_ID, EOS_ID, PAD_ID

from .conftest import SHARED_MULTI30K, reverse_corpus, write_lines


def test_read_lines_handles_gzip_crlf_and_a_missing_final_newline(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"one\r\ntwo\r\n\r\nthree")
    assert read_lines(plain) == ["one", "two", "", "three"]
    packed = tmp_path / "a.txt.gz"
    packed.write_bytes(gzip.compress("ä\nb\n".encode()))
    assert read_lines(packed) == ["ä", "b"]


def test_invalid_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"gut\nauch gut\nschlecht \xff\xfe\n")
    with pytest.raises(TransformerMTError, match=r"bad.de:3: invalid UTF-8 at byte 9"):
        read_lines(bad)


def test_mismatched_line_counts_and_missing_files(tmp_path):
    a = write_lines(tmp_path / "a", ["x", "y", "z"])
    b = write_lines(tmp_path / "b", ["x", "y"])
    with pytest.raises(TransformerMTError, match="a has 3 lines but .*b has 2"):
        read_parallel(a, b)
    with pytest.raises(TransformerMTError, match="nope.txt: no such file"):
        read_lines(tmp_path / "nope.txt")


def test_token_batches_cover_every_sentence_once_within_the_budget():
    rng = np.random.default_rng(0)
    src_lens, tgt_lens = rng.integers(1, 40, 500), rng.integers(1, 40, 500)
    batches = token_batches(src_lens, tgt_lens, max_tokens=200, seed=3, epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for batch in batches:
        longest = max(src_lens[batch].max(), tgt_lens[batch].max()) + 1
        assert longest * len(batch) <= 200 or len(batch) == 1
    again = token_batches(src_lens, tgt_lens, max_tokens=200, seed=3, epoch=1)
    assert all((a == b).all() for a, b in zip(batches, again))
    other = token_batches(src_lens, tgt_lens, max_tokens=200, seed=3, epoch=2)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(batches, other))


def test_prepare_filters_and_collate_adds_bos_eos(tmp_path):
    src, tgt = reverse_corpus(300, seed=0)
    src += ["", "a b", "a " * 40]  # empty, fine, too long
    tgt += ["a", "b a", "a"]
    files = SplitFiles(
        "train", write_lines(tmp_path / "s", src), write_lines(tmp_path / "t", tgt)
    )
    config = DataConfig(vocab_size=24, vocab_type="bpe", max_len=30, max_ratio=3)
    summary = prepare([files], tmp_path / "out", config)
    dropped = summary["splits"]["train"]["dropped"]
    assert dropped == {"empty": 1, "length": 1, "ratio": 0}
    pairs = TokenPairs(tmp_path / "out", "train")
    assert len(pairs) == 301
    batch = collate(pairs, np.array([0, 1]))
    s, t = pairs[1]
    assert batch.tgt_in[1, 0] == BOS_ID and batch.tgt_out[1, len(t)] == EOS_ID
    assert batch.src[1, len(s)] == EOS_ID
    assert (
        batch.ntokens
        == int((batch.tgt_out != PAD_ID).sum())
        == len(pairs[0][1]) + len(t) + 2
    )


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on loopback serving a folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)
    )
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_multi30k_downloads_checks_and_caches(file_server, tmp_path):
    root, url = file_server
    for name in (
        multi30k.file_names("de", "en")["train"]
        + multi30k.file_names("de", "en")["valid"]
        + multi30k.file_names("de", "en")["test"]
    ):
        shutil.copy(SHARED_MULTI30K / name, root / name)
    cache = tmp_path / "cache"
    found = multi30k.locate("de", "en", cache=cache, base_url=url)
    assert (
        read_lines(found["test"][1])[:1]
        == read_lines(SHARED_MULTI30K / "test_2016_flickr.en.gz")[:1]
    )
    for path in root.iterdir():
        path.unlink()  # a second call must come from the cache alone
    assert multi30k.locate("de", "en", cache=cache, base_url=url) == found


def test_multi30k_refuses_a_corrupt_download(file_server, tmp_path):
    root, url = file_server
    (root / "train.de.gz").write_bytes(b"not the real file")
    with pytest.raises(TransformerMTError, match="checksum mismatch for .*train.de.gz"):
        multi30k.locate("de", "en", cache=tmp_path / "cache", base_url=url)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-kept


def test_multi30k_local_directory_and_bad_languages(tmp_path):
    found = multi30k.locate("en", "fr", data_dir=SHARED_MULTI30K)
    assert found["valid"][0].name == "val.en.gz"
    with pytest.raises(TransformerMTError, match="no language 'xx'"):
        multi30k.locate("xx", "en", data_dir=SHARED_MULTI30K)
    with pytest.raises(TransformerMTError, match="missing from the multi30k directory"):
        multi30k.locate("de", "en", data_dir=tmp_path)
