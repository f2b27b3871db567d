"""The translation server against a real uvicorn on a loopback port: the
LibreTranslate shape, /v1 with n-best and cross-attention, every request error,
dynamic batching under concurrent load, timeouts, disconnects, graceful shutdown,
and the web page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from transformer_mt import checkpoint
from transformer_mt.decode import Translator
from transformer_mt.errors import TransformerMTError
from transformer_mt.serve import ServeConfig, TranslationEngine, create_app
from transformer_mt.vocab import Vocabulary

from .conftest import tiny_model

WORDS = "ein der die hund mann frau kind läuft spielt sitzt im park auf wiese".split()
SENTENCES = [
    " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(2 + i % 5)) + "."
    for i in range(16)
]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    corpus = [
        " ".join(WORDS[(i * j) % len(WORDS)] for j in range(6)) for i in range(300)
    ]
    vocab = Vocabulary.train(corpus, size=40, model_type="bpe")
    path = tmp_path_factory.mktemp("serve") / "model"
    return checkpoint.save(
        path, tiny_model(seed=3), vocab, {"src_lang": "de", "tgt_lang": "en"}
    )


@pytest.fixture(scope="module")
def reference(model_dir) -> Translator:
    """A separate Translator: what the server must answer."""
    return Translator.load(model_dir)


class LiveServer:
    """uvicorn serving the app in a thread, on a free loopback port."""

    def __init__(self, model_dir: Path, **options) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(TranslationEngine.load(model_dir), ServeConfig(**options))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health").json()


@pytest.fixture(scope="module")
def server(model_dir):
    options = dict(batch_window_ms=30, max_body_bytes=4000, max_chars=200)
    with LiveServer(model_dir, **options, max_texts=20) as live:
        yield live


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


# ---- LibreTranslate shape ---------------------------------------------------------


def test_translate_string_and_list_like_libretranslate(server, reference):
    one = post(
        server, "/translate", {"q": SENTENCES[0], "source": "de", "target": "en"}
    )
    assert one.status_code == 200
    assert one.json() == {"translatedText": reference.translate(SENTENCES[:1])[0]}

    many = post(
        server, "/translate", {"q": SENTENCES[:3], "source": "de", "target": "en"}
    )
    assert many.json() == {"translatedText": reference.translate(SENTENCES[:3])}


def test_form_encoded_body_and_alternatives(server, reference):
    reply = httpx.post(
        f"{server.url}/translate",
        data={"q": SENTENCES[1], "source": "auto", "target": "en", "alternatives": 2},
    )
    assert reply.status_code == 200, reply.text
    nbest = reference.translate_nbest(SENTENCES[1:2], nbest=3)[0]
    assert reply.json() == {
        "translatedText": nbest[0][0],
        "alternatives": [nbest[1][0], nbest[2][0]],
    }


def test_languages_health_and_openapi(server):
    languages = httpx.get(f"{server.url}/languages").json()
    assert languages == [
        {"code": "de", "name": "German", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": []},
    ]
    health = server.health()
    assert health["status"] == "ok" and (health["source"], health["target"]) == (
        "de",
        "en",
    )
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/translate", "/v1/translate", "/languages", "/health"} <= set(paths)
    assert "application/x-www-form-urlencoded" in json.dumps(paths["/translate"])


# ---- /v1: n-best and cross-attention ---------------------------------------------


def test_v1_nbest_and_cross_attention(server, reference):
    body = {"texts": SENTENCES[2:4], "beam_size": 3, "nbest": 3, "attention": True}
    reply = post(server, "/v1/translate", body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["beam_size"] == 3
    expected = reference.translate_nbest(SENTENCES[2:4], beam_size=3, nbest=3)
    vocab = reference.vocab
    for result, nbest, text in zip(data["translations"], expected, SENTENCES[2:4]):
        assert [(h["text"], h["score"]) for h in result["nbest"]] == [
            (t, pytest.approx(s, abs=1e-5)) for t, s in nbest
        ]
        att = result["attention"]
        assert att["layer"] == 2
        assert att["source"] == vocab.pieces(vocab.encode(text)) + ["</s>"]
        words = "".join(att["target"][:-1]).replace("\u2581", " ").strip()
        assert words == result["text"]
        assert len(att["weights"]) == len(att["target"])
        for row in att["weights"]:
            assert len(row) == len(att["source"])
            assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_v1_attention_of_a_chosen_layer(server):
    body = {"texts": [SENTENCES[5]], "attention": True, "attention_layer": 1}
    last = {"texts": [SENTENCES[5]], "attention": True}
    first = post(server, "/v1/translate", body).json()["translations"][0]["attention"]
    final = post(server, "/v1/translate", last).json()["translations"][0]["attention"]
    assert first["layer"] == 1 and final["layer"] == 2
    assert first["weights"] != final["weights"]


# ---- errors -----------------------------------------------------------------------

LIBRE = {"source": "de", "target": "en"}


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/translate", {**LIBRE, "q": "x" * 5000}, 413, "max_body_bytes=4000"),
        (
            "/translate",
            {**LIBRE, "q": "x" * 201},
            400,
            r"q\[0\] has 201 .*max_chars=200",
        ),
        ("/translate", {**LIBRE, "q": ["a"] * 21}, 400, "21 texts.*max_texts=20"),
        (
            "/translate",
            {"q": "a", "source": "fr", "target": "en"},
            400,
            "fr->en.*de->en",
        ),
        (
            "/translate",
            {"q": "a", "source": "de", "target": "es"},
            400,
            "translates de->en",
        ),
        ("/translate", {**LIBRE, "q": ""}, 400, "q is empty"),
        ("/translate", {**LIBRE, "q": []}, 400, "q is empty"),
        ("/translate", {"source": "de", "target": "en"}, 400, "q: Field required"),
        ("/translate", {**LIBRE, "q": "a", "format": "html"}, 400, "format='html'"),
        ("/translate", [1, 2], 400, "must be an object"),
        ("/v1/translate", {"texts": ["a"], "beam_size": 9}, 400, "max_beam_size=8"),
        ("/v1/translate", {"texts": ["a"], "beam_size": 2, "nbest": 3}, 400, "beam of"),
        (
            "/v1/translate",
            {"texts": ["a"], "attention_layer": 1},
            400,
            "needs attention",
        ),
        (
            "/v1/translate",
            {"texts": ["a"], "attention": True, "attention_layer": 3},
            400,
            "decoder layers 1 to 2",
        ),
        ("/v1/translate", {"texts": "a"}, 422, "texts: Input should be a valid list"),
        ("/v1/translate", {"texts": ["a"], "beam": 2}, 422, "beam: Extra inputs"),
        ("/v1/translate", {"texts": []}, 400, "q is empty"),
    ],
)
def test_request_errors_are_json_with_a_clear_message(
    server, path, body, status, message
):
    reply = post(server, path, body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]
    assert re.search(message, reply.json()["error"]), reply.json()


@pytest.mark.parametrize("path", ["/translate", "/v1/translate"])
def test_malformed_json_is_a_400(server, path):
    reply = httpx.post(
        f"{server.url}{path}",
        content=b'{"q": "ein hund',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("malformed JSON body")


def test_chunked_body_over_the_limit_is_a_413(server):
    def chunks():
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: the limit is counted while reading

    reply = httpx.post(f"{server.url}/translate", content=chunks())
    assert reply.status_code == 413
    assert "max_body_bytes=4000" in reply.json()["error"]


# ---- batching -----------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_match_sequential(server):
    def translate(text):
        body = {"q": text, "source": "de", "target": "en"}
        return post(server, "/translate", body).json()["translatedText"]

    sequential = [translate(text) for text in SENTENCES]
    before = server.health()
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(translate, SENTENCES))
    after = server.health()

    assert concurrent == sequential
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16
    assert after["largest_batch"] > 1


def test_timed_out_request_leaves_the_queue(model_dir):
    # The first request starts a 2 s collection window; the second (another beam
    # width, so another batch) waits in the queue and times out there.
    options = dict(batch_window_ms=2000, request_timeout_s=0.3)
    with LiveServer(model_dir, **options) as live:
        bodies = [{"texts": ["a b"], "beam_size": k} for k in (1, 2)]
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda b: post(live, "/v1/translate", b), bodies))
        assert [r.status_code for r in replies] == [504, 504]
        assert "request_timeout_s=0.3" in replies[0].json()["error"]
        assert live.health()["dropped"] == 1


def test_disconnected_client_leaves_the_queue(model_dir):
    with LiveServer(model_dir, batch_window_ms=1500) as live:
        first = ThreadPoolExecutor(1).submit(
            post, live, "/v1/translate", {"texts": ["a b"], "beam_size": 1}
        )
        wait_for(lambda: live.health()["in_flight"] == 1)
        body = json.dumps({"texts": ["a b"], "beam_size": 2}).encode()
        port = int(live.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: live.health()["queued"] == 1)
        wait_for(lambda: live.health()["dropped"] == 1)
        assert first.result().status_code == 200
        assert live.health()["batches"] == 1


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_graceful_shutdown_answers_requests_in_flight(model_dir, reference):
    """SIGTERM to `transformer-mt serve` while three requests wait for their batch:
    all three are answered, then the process exits."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "transformer_mt", "serve", "--checkpoint", model_dir]
        + ["--port", str(port), "--batch-window-ms", "1500"],
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: alive(url), timeout=60)
        with ThreadPoolExecutor(3) as pool:
            body = {"source": "de", "target": "en"}
            futures = [
                pool.submit(
                    httpx.post, f"{url}/translate", json={**body, "q": q}, timeout=30
                )
                for q in SENTENCES[:3]
            ]
            wait_for(lambda: httpx.get(f"{url}/health").json()["in_flight"] == 3)
            process.send_signal(signal.SIGTERM)
            replies = [f.result() for f in futures]
        # uvicorn >= 0.29 re-raises the signal once shutdown is complete
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        process.kill()
    assert [r.status_code for r in replies] == [200] * 3
    texts = [r.json()["translatedText"] for r in replies]
    assert texts == reference.translate(SENTENCES[:3])
    assert b"batcher stopped after 1 batches" in process.stderr.read()


def alive(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_bad_serve_options_are_refused():
    with pytest.raises(TransformerMTError, match="max_batch_requests=0 must be >= 1"):
        ServeConfig(max_batch_requests=0)
    with pytest.raises(TransformerMTError, match="beam_size=9 exceeds max_beam_size"):
        ServeConfig(beam_size=9)


# ---- the web page in a real browser -------------------------------------------------


def test_web_page_translates_and_draws_the_heat_map(server, reference, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "headless Chromium is part of the test set-up: run scripts/ci_system_deps.sh"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        wait = WebDriverWait(browser, 20)
        browser.get(server.url + "/")
        wait.until(lambda b: b.find_element(By.ID, "pair").text == "German → English")
        browser.find_element(By.ID, "source").send_keys(SENTENCES[6])
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr"))
        output = browser.find_element(By.ID, "output").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")
        cells = rows[0].find_elements(By.TAG_NAME, "td")
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    assert output == reference.translate([SENTENCES[6]])[0]
    src_len = len(reference.vocab.encode(SENTENCES[6])) + 1
    assert len(cells) == src_len
    assert len(rows) == len(reference.hypotheses([SENTENCES[6]])[0][0].tokens) + 1
    assert shot.stat().st_size > 10_000


def test_bad_requests_under_concurrent_load_leave_good_answers_intact(
    server, reference
):
    expected = dict(zip(SENTENCES, reference.translate(SENTENCES)))
    url = f"{server.url}/translate"

    def good(text):
        body = {"q": text, "source": "de", "target": "en"}
        return text, post(server, "/translate", body)

    def bad(i):
        kind = i % 4
        if kind == 0:  # malformed JSON
            headers = {"content-type": "application/json"}
            return httpx.post(url, content=b'{"q": ["ein', headers=headers, timeout=30)
        if kind == 1:  # body over max_body_bytes
            return httpx.post(url, content=b"x" * 9000, timeout=30)
        if kind == 2:  # text over max_chars
            return post(
                server, "/translate", {"q": "a" * 500, "source": "de", "target": "en"}
            )
        return post(server, "/translate", {"q": "a", "source": "de", "target": "xx"})

    with ThreadPoolExecutor(16) as pool:
        bad_replies = [pool.submit(bad, i) for i in range(32)]
        good_replies = [pool.submit(good, text) for text in SENTENCES]
        for future in bad_replies:
            reply = future.result()
            assert 400 <= reply.status_code < 500 and reply.json()["error"]
        for future in good_replies:
            text, reply = future.result()
            assert reply.status_code == 200
            assert reply.json()["translatedText"] == expected[text]
    assert httpx.get(f"{server.url}/health").status_code == 200
