"""The report in a real browser: headless Chromium loads ``reports/index.html`` from disk, says whether every
image decoded, and takes a screenshot (the README's picture of a run). Used by the report test and by
docs/figures.py; it needs Debian's ``chromium`` package (``make test`` installs it where it can)."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-dev-shm-usage", "--allow-file-access-from-files"]
# Appended to a copy of the page: after load, the result of every <img> goes into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(img => ({src: img.src.slice(0, 60), alt: img.alt,
    loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth, height: img.naturalHeight}));
  const out = document.createElement("pre"); out.id = "distill-probe";
  out.textContent = JSON.stringify({images: images, title: document.title});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM, else the first of NAMES on PATH."""
    return os.environ.get("CHROMIUM") or next((path for name in NAMES if (path := shutil.which(name))), None)


def run_chromium(chromium: str, *args: str, timeout_s: float = 60) -> str:
    with tempfile.TemporaryDirectory(prefix="distill-chromium-") as profile:  # no state between runs
        done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{chromium} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def loaded_images(page: Path, chromium: str) -> dict:
    """Load ``page`` (a copy with the probe script, beside it so relative links resolve) and return
    ``{"images": [{src, alt, loaded, width, height}], "title": ...}`` as the browser saw them."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    found = re.search(r'<pre id="distill-probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError(f"the probe did not run in {page}: the page did not finish loading")
    import html as entities
    return json.loads(entities.unescape(found.group(1)))


def screenshot(page: Path, out: Path, chromium: str, width: int = 1280, height: int = 2400) -> Path:
    """A PNG of the top ``height`` pixels of ``page`` at ``width``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(chromium, f"--window-size={width},{height}", f"--screenshot={out.resolve()}",
                 page.resolve().as_uri())
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"{chromium} wrote no screenshot of {page}")
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])


def broken_links(page: Path) -> list[str]:
    """Links that lead nowhere: an anchor without its id, a local file that does not exist, or any link that
    leaves the machine (the page must work offline)."""
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    broken = []
    for link in parser.links:
        target = urlparse(link)
        if target.scheme in ("http", "https") or target.netloc:
            broken.append(f"{link} (leaves the machine)")
        elif not target.path:
            if target.fragment not in parser.ids:
                broken.append(f"{link} (no element with this id)")
        elif not (page.parent / unquote(target.path)).exists():
            broken.append(f"{link} (no such file)")
    return broken


def main(argv: list[str] | None = None) -> int:
    """``python -m distill.report.browser [PAGE] [PNG]``: the README's screenshot of the report (make run)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    page, out = Path(args[0] if args else "reports/index.html"), Path(args[1] if len(args) > 1 else "docs/report.png")
    chromium = find_chromium()
    if chromium is None:
        print(f"no Chromium: {out} not updated (apt-get install chromium, or set CHROMIUM)", file=sys.stderr)
        return 0
    seen = loaded_images(page, chromium)
    failed = [image["alt"] for image in seen["images"] if not image["loaded"]] + broken_links(page)
    if failed:
        print(f"{page}: broken in Chromium: {failed}", file=sys.stderr)
        return 1
    screenshot(page, out, chromium, width=1280, height=1500)
    print(f"screenshot of {page}: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
