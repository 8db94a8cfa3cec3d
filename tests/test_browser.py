"""The demo page in a real headless Chromium (Debian's `chromium`), driven over the DevTools
protocol: type a sentence, press the button, find the highlighted entities; keep a screenshot.

The service runs in-process on uvicorn (127.0.0.1, a free port) with test_inference's tiny
overfit model. Skips only outside CI when no Chromium is installed; under CI=true a missing
Chromium fails (.ci/run installs it). Screenshot: tests/artifacts/demo.png (gitignored); set
PUNIFIED_DEMO_PNG=path to also write a copy there (how docs/demo.png is made).
"""

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from punified_jax import inference
from punified_jax import request_validation as validation
from punified_jax.serving import app as app_lib
from punified_jax.serving import engine as engine_lib

import test_inference as shared

pytestmark = pytest.mark.usefixtures("fast_compiles")

sp_vocab = shared.sp_vocab
vocab_path = shared.vocab_path
config = shared.config
trained_params = shared.trained_params
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
TEXT = shared.TRAIN_EXAMPLES[0][0]   # 北京和北京大学都在北京。


def find_chromium():
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    path = shutil.which(name)
    if path:
      return path
  if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail("Chromium is not installed, and under CI the browser test must run "
                "(.ci/run installs Debian's chromium)")
  pytest.skip("no Chromium installed (apt-get install chromium); runs in CI")


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, vocab_path, config, trained_params):
  import uvicorn  # pylint: disable=g-import-not-at-top
  model_dir = shared.write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                                     trained_params, step=1)
  extractor = inference.Extractor.load(model_dir, batch_size=shared.BATCH_SIZE)
  engine = engine_lib.Engine(extractor, beam_sizes=(4,), allow_unconstrained=False,
                             limits=validation.Limits())
  app = app_lib.create_app(engine, app_lib.Settings(model_dir=model_dir))
  port = free_port()
  uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=uv.run, daemon=True)
  thread.start()
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 300
  while not app.state.service.ready.is_set():
    assert time.monotonic() < deadline, "warm-up did not finish"
    assert app.state.service.warm_up_error is None, app.state.service.warm_up_error
    time.sleep(0.2)
  while time.monotonic() < deadline:
    try:
      urllib.request.urlopen(base + "/health", timeout=5).read()
      break
    except OSError:
      time.sleep(0.2)
  yield base
  uv.should_exit = True
  thread.join(60)


class DevTools:
  """A minimal Chrome DevTools Protocol client over one page's websocket."""

  def __init__(self, websocket_url: str):
    import websocket  # pylint: disable=g-import-not-at-top
    self.socket = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
    self.ids = itertools.count(1)

  def call(self, method: str, **params):
    message_id = next(self.ids)
    self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
    while True:
      message = json.loads(self.socket.recv())
      if message.get("id") == message_id:
        if "error" in message:
          raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

  def evaluate(self, expression: str):
    result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                       awaitPromise=True)
    if "exceptionDetails" in result:
      raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
    return result["result"].get("value")

  def wait_for(self, expression: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      value = self.evaluate(expression)
      if value:
        return value
      time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {expression}")

  def close(self):
    self.socket.close()


@pytest.fixture
def browser(tmp_path):
  binary = find_chromium()
  profile = tmp_path / "profile"
  process = subprocess.Popen(
      [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
       "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
       "--remote-allow-origins=*", f"--user-data-dir={profile}", "--window-size=1000,900",
       "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
      assert process.poll() is None, process.stderr.read().decode(errors="replace")[-2000:]
      assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
      time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
    page = next(t for t in targets if t["type"] == "page")
    devtools = DevTools(page["webSocketDebuggerUrl"])
    yield devtools
    devtools.close()
  finally:
    process.terminate()
    try:
      process.wait(30)
    except subprocess.TimeoutExpired:
      process.kill()


def click(devtools: DevTools, selector: str) -> None:
  """A real mouse click at the element's centre."""
  box = devtools.evaluate(f"(() => {{ const r = document.querySelector('{selector}')"
                          ".getBoundingClientRect(); return [r.x + r.width / 2, "
                          "r.y + r.height / 2]; })()")
  for kind in ("mousePressed", "mouseReleased"):
    devtools.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                  clickCount=1)


def test_type_a_sentence_and_see_the_entities_highlighted(server, browser):
  browser.call("Page.enable")
  browser.call("Page.navigate", url=server + "/")
  browser.wait_for("document.readyState === 'complete' && "
                   "document.getElementById('model-status').textContent === 'Model ready.'")
  # No request leaves the machine: every resource of the page comes from the app.
  resources = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
  assert resources and all(url.startswith(server) for url in resources), resources

  browser.evaluate("document.getElementById('text').value = ''; "
                   "document.getElementById('types').value = ''")
  click(browser, "#text")
  browser.call("Input.insertText", text=TEXT)
  click(browser, "#types")
  browser.call("Input.insertText", text="地点,组织")
  click(browser, "#extract")
  browser.wait_for("document.querySelectorAll('#highlighted mark.entity').length > 0")

  marks = browser.evaluate(
      "Array.from(document.querySelectorAll('#highlighted mark.entity')).map(m => "
      "[m.dataset.type, m.firstChild.textContent, m.title, getComputedStyle(m).backgroundColor])")
  assert [(kind, text) for kind, text, _, _ in marks] == [("地点", "北京"), ("组织", "北京大学"),
                                                         ("地点", "北京")]
  for kind, _, title, _ in marks:
    assert title.startswith(f"{kind} · score 0.9")  # the score on hover
  colours = {kind: colour for kind, _, _, colour in marks}
  assert colours["地点"] != colours["组织"]  # one colour per type
  assert browser.evaluate("document.getElementById('highlighted').textContent") == (
      "北京地点和北京大学组织都在北京地点。")
  answer = json.loads(browser.evaluate("document.getElementById('json').textContent"))
  assert [e["text"] for e in answer["results"][0]["entities"]] == ["北京", "北京大学", "北京"]
  assert browser.evaluate("document.getElementById('status').textContent") == "3 entities"

  shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
  assert shot.startswith(b"\x89PNG")
  os.makedirs(ARTIFACTS, exist_ok=True)
  with open(os.path.join(ARTIFACTS, "demo.png"), "wb") as f:
    f.write(shot)
  if os.environ.get("PUNIFIED_DEMO_PNG"):
    with open(os.environ["PUNIFIED_DEMO_PNG"], "wb") as f:
      f.write(shot)

  # A dataset's types from the drop-down, and an error shown on the page.
  browser.evaluate("{ const s = document.getElementById('dataset'); s.value = 'msra'; "
                   "s.dispatchEvent(new Event('change')); }")
  assert browser.evaluate("document.getElementById('types').value") == "地点,名称,组织"

  browser.evaluate("{ const s = document.getElementById('dataset'); s.value = ''; "
                   "s.dispatchEvent(new Event('change')); "
                   "document.getElementById('types').value = '城堡'; }")
  click(browser, "#extract")
  status = browser.wait_for("document.getElementById('status').className === 'error' && "
                            "document.getElementById('status').textContent")
  assert status.startswith("422: types[0]: unknown entity type(s) 城堡")
