#!/usr/bin/env python3
"""The chat page of `infer serve` (GET /) in headless Chromium, end to end.

Starts `infer serve` on the real model with an API key, opens the page in Chromium through the
DevTools protocol, types the key, a system prompt and a question, sends it, waits for the streamed
answer to finish and writes a screenshot. Exits non-zero if the answer does not come.

Usage: scripts/chat-page-test.py [path/to/infer] [screenshot.png]
(defaults: target/debug/infer, target/chat-page.png). Needs `chromium` (Debian: apt-get install
chromium) and the `websocket-client` package (scripts/chat-page-test.sh makes a venv with it).
"""

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-chat-page-test"


def start_server(infer):
    model = os.environ.get("EDGEINFER_MODEL_DIR", os.path.join(ROOT, "weights/SmolLM2-135M-Instruct"))
    proc = subprocess.Popen(
        [infer, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "-c", "1024",
         "--log-format", "json", "--api-key", KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FC_")},
    )
    for line in proc.stderr:
        if line.startswith("infer serve: listening on "):
            return proc, line.split("listening on ", 1)[1].strip()
    raise SystemExit(f"infer serve exited ({proc.wait()}) before listening")


def start_chromium():
    exe = next((e for e in ("chromium", "chromium-browser", "google-chrome") if shutil_which(e)), None)
    if exe is None:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    profile = tempfile.mkdtemp(prefix="chat-page-test-")
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1000,800",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stderr:
        m = re.search(r"DevTools listening on ws://([^/]+)/", line)
        if m:
            return proc, m.group(1)
    raise SystemExit(f"chromium exited ({proc.wait()}) before listening")


def shutil_which(name):
    import shutil
    return shutil.which(name)


class Page:
    """One tab, driven over the DevTools protocol."""

    def __init__(self, devtools):
        targets = json.load(urllib.request.urlopen(f"http://{devtools}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")


def main():
    infer = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/infer")
    shot = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/chat-page.png")
    server, base = start_server(infer)
    browser, devtools = start_chromium()
    try:
        page = Page(devtools)
        page.call("Page.enable")
        page.call("Page.navigate", url=base + "/")
        for _ in range(100):
            if page.js("document.readyState") == "complete" and page.js("!!document.getElementById('send')"):
                break
            time.sleep(0.1)
        page.js(f"""(() => {{
            const key = document.getElementById('apikey');
            key.value = {json.dumps(KEY)}; key.dispatchEvent(new Event('change'));
            document.getElementById('system').value = 'You are a helpful assistant. Answer briefly.';
            document.getElementById('temperature').value = '0';
            document.getElementById('prompt').value = 'What is the capital of France?';
            document.getElementById('send').click();
        }})()""")
        answer, state = "", None
        deadline = time.time() + 120
        while time.time() < deadline:
            state = page.js("(document.querySelector('.msg.assistant, .msg.error') || {dataset: {}}).dataset.done")
            if state:
                break
            time.sleep(0.2)
        answer = page.js("(document.querySelector('.msg.assistant, .msg.error') || {}).textContent || ''")
        png = page.call("Page.captureScreenshot", format="png")["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        stored = page.js("localStorage.getItem('edgeinfer_api_key')")
    finally:
        browser.kill()
        server.kill()
        browser.wait()
        server.wait()
    print(f"answer ({state}): {answer!r}")
    print(f"screenshot: {shot}")
    ok = state == "1" and "Paris" in answer and stored == KEY
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
