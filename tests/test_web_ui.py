"""The chat web page, driven in headless Debian Chromium (selenium + chromium-driver) against a REAL
uvicorn server: type a message, click Send, watch the reply stream in; a second turn; Stop.

Without /usr/bin/chromium and chromedriver the test skips with the reason, except when
HF_NANOGPT_REQUIRE_BROWSER=1 (CI), where it fails: install them with
`apt-get install -y chromium chromium-driver` (or `make install-browser`)."""

import os
import shutil
import tempfile
import time

import httpx
import pytest

# The server needs the `serve` extra; a plain `pip install -e ".[dev]"` skips these tests, saying why.
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from hf_nanogpt.engine import Engine
from hf_nanogpt.server import create_app
from hf_nanogpt.server_schema import readable_text
from hf_nanogpt.tokenization import render_for_completion

from test_server import calculator_model, live_server, slow_model, tiny_chat_model  # noqa: E402  (tests/ is on sys.path)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900"]


def _browser_missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install -y {package}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install selenium"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("HF_NANOGPT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HF_NANOGPT_REQUIRE_BROWSER=1 but the browser test cannot run: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hf_nanogpt_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    # An explicit driver path: selenium does not look for (or download) a driver itself.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_chat_page_streams_a_reply(browser, tiny_tokenizer):
    from selenium.webdriver.common.by import By

    model = slow_model(tiny_tokenizer, delay=0.03)  # ~30 ms per token: streaming is observable
    engine = Engine.from_tokenizer(model, tiny_tokenizer)

    def greedy(messages, max_tokens):
        ids = engine.generate_batch(render_for_completion(tiny_tokenizer, messages), temperature=0.0,
                                    max_tokens=max_tokens)[0][0]
        return tiny_tokenizer.decode(ids, skip_special_tokens=False)  # raw: control tokens as written

    with live_server(create_app(model, tiny_tokenizer, model_name="tiny-web", max_tokens_limit=400)) as url:
        browser.get(url + "/")
        wait_until(lambda: browser.find_element(By.ID, "model-name").text == "tiny-web", what="the /health call")

        def set_field(field_id: str, value: str) -> None:
            element = browser.find_element(By.ID, field_id)
            element.clear()
            element.send_keys(value)

        set_field("temperature", "0")
        set_field("max-tokens", "40")
        bubbles = lambda: browser.find_elements(By.CSS_SELECTOR, ".message.assistant")  # noqa: E731

        def send(text: str):
            browser.find_element(By.ID, "input").send_keys(text)
            browser.find_element(By.ID, "send").click()
            return wait_until(lambda: bubbles()[-1] if bubbles() else None, what="the reply bubble")

        # turn 1: the reply grows in several steps while the state is "streaming"
        bubble = send("Hello there!")
        seen = []
        while bubble.get_attribute("data-state") == "streaming":
            text = bubble.get_property("textContent")
            if text and (not seen or text != seen[-1]):
                seen.append(text)
            time.sleep(0.01)
        assert bubble.get_attribute("data-state") == "done"
        reply = greedy([{"role": "user", "content": "Hello there!"}], 40)
        assert bubble.get_property("textContent") == readable_text(reply)  # what the API's `content` says
        assert len(seen) >= 3, f"the reply arrived in {len(seen)} step(s), not streamed"
        assert all(readable_text(reply).startswith(s) for s in seen)
        user_bubbles = browser.find_elements(By.CSS_SELECTOR, ".message.user")
        assert [b.text for b in user_bubbles] == ["Hello there!"]

        # turn 2: the page sends the whole conversation
        bubble = send("Tell me more.")
        wait_until(lambda: bubble.get_attribute("data-state") == "done", what="the second reply")
        history = [{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": reply},
                   {"role": "user", "content": "Tell me more."}]  # the raw reply went back (raw_content)
        assert bubble.get_property("textContent") == readable_text(greedy(history, 40))

        # Stop aborts the request; the server cancels the generation and frees the worker
        def short_request_calls() -> int:
            """Forward calls of one 3-token request; with one worker, a generation still running after
            Stop would add its own calls."""
            reference = model.forward_calls
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 200
            return model.forward_calls - reference

        alone = short_request_calls()
        set_field("max-tokens", "400")
        before = model.forward_calls
        bubble = send("A long one, please.")
        wait_until(lambda: len(bubble.get_property("textContent")) > 5, what="the third reply to start")
        browser.find_element(By.ID, "stop").click()
        wait_until(lambda: bubble.get_attribute("data-state") == "stopped", what="the stopped state")
        wait_until(lambda: httpx.get(f"{url}/health").json()["busy"] == 0, timeout=5, what="the worker slot")
        assert model.forward_calls - before < 300  # stopped, far from the 400 tokens asked for
        assert short_request_calls() == alone  # nothing generates any more
        assert not browser.find_elements(By.CSS_SELECTOR, ".message.error")


def test_tool_calls_failed_turns_and_a_full_context(browser, tiny_tokenizer):
    """A calculator call reads as the API's content says; a failed turn leaves no trace in the page or
    the history (its text goes back into the input); a conversation past the context says New chat."""
    from selenium.webdriver.common.by import By

    prompts = []
    model = calculator_model(tiny_tokenizer, "12*34", "#### 408", prompts)

    def set_field(field_id: str, value: str) -> None:
        element = browser.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)

    def send(text: str) -> None:
        browser.find_element(By.ID, "input").send_keys(text)
        browser.find_element(By.ID, "send").click()

    messages = lambda kind: browser.find_elements(By.CSS_SELECTOR, f".message.{kind}")  # noqa: E731
    app = create_app(model, tiny_tokenizer, max_tokens_limit=40)
    with live_server(app) as url:
        browser.get(url + "/")
        wait_until(lambda: browser.find_element(By.ID, "model-name").text, what="the /health call")
        set_field("max-tokens", "40")
        send("What is 12*34?")
        wait_until(lambda: messages("assistant") and messages("assistant")[-1].get_attribute("data-state") == "done",
                   what="the tool reply")
        bubble = messages("assistant")[-1]
        assert bubble.get_property("textContent") == "calc: 12*34 = 408\n#### 408"
        assert bubble.find_element(By.CSS_SELECTOR, ".tool-call").text == "calc: 12*34"
        assert bubble.find_element(By.CSS_SELECTOR, ".tool-output").text.strip() == "= 408"
        # a turn the server refuses (max_tokens over its limit) is taken back
        set_field("max-tokens", "999")
        send("and 5*5?")
        wait_until(lambda: messages("error"), what="the error")
        assert "max_tokens=999 exceeds the server limit of 40" in messages("error")[-1].text
        assert [m.text for m in messages("user")] == ["What is 12*34?"] and len(messages("assistant")) == 1
        assert browser.find_element(By.ID, "input").get_property("value") == "and 5*5?"  # to retry
        set_field("max-tokens", "40")
        browser.find_element(By.ID, "send").click()
        wait_until(lambda: len(messages("assistant")) == 2
                   and messages("assistant")[-1].get_attribute("data-state") == "done", what="the retried reply")
        # the server saw the first turn with its tool parts and the retry, not the failed attempt
        expected = render_for_completion(tiny_tokenizer, [
            {"role": "user", "content": "What is 12*34?"},
            {"role": "assistant", "content": [{"type": "python", "text": "12*34"}, {"type": "output", "text": "408"},
                                              {"type": "text", "text": "#### 408"}]},
            {"role": "user", "content": "and 5*5?"}])
        assert prompts[-1] == expected

    with live_server(create_app(tiny_chat_model(tiny_tokenizer, context=64), tiny_tokenizer)) as url:
        browser.get(url + "/")
        wait_until(lambda: browser.find_element(By.ID, "model-name").text, what="the /health call")
        send("word " * 60)
        error = wait_until(lambda: messages("error") and messages("error")[-1], what="the context error")
        assert error.get_attribute("data-code") == "context_length_exceeded"
        assert "Start a New chat" in error.text and "model's context is 64 tokens" in error.text
        assert not messages("user") and not messages("assistant")
        assert "suggested" in browser.find_element(By.ID, "new-chat").get_attribute("class")
        browser.find_element(By.ID, "new-chat").click()
        assert not messages("error") and "suggested" not in browser.find_element(By.ID, "new-chat").get_attribute("class")
