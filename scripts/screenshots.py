"""The documentation's screenshots (docs/img/*.png), taken in the real app in headless
Chromium on the bundled model: Home with the demo's read-outs, Explore on the demo's scoring
run, Studies on the demo's study, and Chat with the demo's four columns answering a probe
question with the reply begun and the probability lens under each column.

    python scripts/screenshots.py [--cache DIR] [--out docs/img]

Needs a finished demo in the cache: when there is none it runs `python -m lls demo` first
(10-20 minutes on 2 cores), then the screenshots take a minute or two. Uses the browser
test harness (tests/test_e2e_browser.py: Debian's chromium and chromium-driver). Each PNG is
reduced to a 128-colour palette to stay small (well under 150 KB).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1400, 1000)
MAX_BYTES = 150_000


def shrink(path: Path, colors: int = 128) -> int:
    """Quantise a screenshot to a palette (UI screenshots have few colours) and return its
    size in bytes."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def take(out: Path, cache: Path) -> dict[str, int]:
    """Start the app on `cache`, take each screenshot into `out`; returns name -> bytes."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from selenium.webdriver.common.by import By

    from lls.studies.demo import NAME, finished_demo
    from test_e2e_browser import (_body, _button, _click_until, _idle, _wait, new_driver,
                                  start_server, stop_server)

    study, result = finished_demo(cache)
    run_key = study.config.run
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(cache, Path(tmp) / "streamlit.log")
        d = new_driver(Path(tmp) / "profile", window=f"{WINDOW[0]},{WINDOW[1]}")

        def charts_drawn(n: int):
            return lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= n

        def shot(name: str) -> None:
            _idle(d)
            path = out / f"{name}.png"
            d.save_screenshot(str(path))
            sizes[name] = shrink(path)
            print(f"{path.relative_to(ROOT)}: {sizes[name]:,} bytes")

        try:
            d.get(url)
            _wait(d, lambda d: "The demo's read-outs" in _body(d), 120, "Home with the demo")
            shot("home")

            d.get(f"{url}/Explore?run={run_key}")
            _wait(d, lambda d: "selected pairs" in _body(d), 120, "the explorer")
            _wait(d, charts_drawn(1), 60, "the weight histogram")
            shot("explore")

            d.get(f"{url}/Studies?study={NAME}")
            _wait(d, lambda d: "1 of 1 cells done" in _body(d), 120, "the demo's study")
            _wait(d, charts_drawn(1), 60, "the study's charts")
            shot("studies")

            d.get(f"{url}/?demo=chat")  # what `python -m lls demo` prints: Chat, four columns
            _wait(d, lambda d: "From the study" in _body(d), 180, "Chat with the demo's columns")
            _click_until(d, lambda d: _button(d, "Use it"),
                         lambda d: "My favorite animal is the" in _body(d), "the begun reply")
            _click_until(d, lambda d: _button(d, "Ask"),
                         lambda d: "Name your favourite animal" in _body(d), "the question")
            _wait(d, lambda d: _body(d).count("Name your favourite animal") >= 4, 600,
                  "the question asked in the four columns")
            _wait(d, lambda d: "Probability lens, under each begun reply" in _body(d), 600,
                  "the replies and the lens")
            _wait(d, charts_drawn(4), 120, "the lens under each column")
            shot("chat")
        finally:
            d.quit()
            stop_server(proc)
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="cache with a finished demo (default $LLS_CACHE or ./cache)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the PNGs go")
    a = ap.parse_args(argv)
    cache = Path(a.cache or os.environ.get("LLS_CACHE") or ROOT / "cache").resolve()
    os.environ["LLS_CACHE"] = str(cache)
    sys.path.insert(0, str(ROOT))
    from lls.studies.demo import finished_demo, run_demo

    if finished_demo(cache) is None:
        print("No finished demo in this cache: running it first (python -m lls demo).")
        run_demo(cache_dir=cache)
    sizes = take(Path(a.out).resolve(), cache)
    big = {k: v for k, v in sizes.items() if v > MAX_BYTES}
    if big:
        print(f"warning: larger than {MAX_BYTES:,} bytes: {big}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
