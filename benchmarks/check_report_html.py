"""Render report.html pages in headless Chromium and check what a reader would see: the page
is not blank and every picture loads (issue 34).

    python benchmarks/check_report_html.py PAGE.html [PAGE.html ...] [--screenshot-dir DIR]

Needs Debian's `chromium` (apt-get install chromium). Prints per page: the images and how
many loaded, the share of non-white pixels of the screenshot; exits 1 on any failure. The
network is switched off (--host-resolver-rules, --proxy-server to nowhere), so a page that
fetched anything would show a broken picture. tests/test_report.py runs it when chromium is
installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = 'IMAGES ' + ok + '/' + imgs.length;
});</script>"""


def check(page: Path, shots: Path) -> tuple[bool, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    text = page.read_text()
    if re.search(r"(src|href)\s*=\s*['\"](https?:|//)", text):
        return False, "fetches from the network"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(text.replace("</body>", PROBE + "</body>"))
        dom = subprocess.run([chromium, *OFFLINE, "--virtual-time-budget=5000", "--dump-dom",
                              probe.as_uri()], capture_output=True, text=True, timeout=120)
        found = re.search(r"<title>IMAGES (\d+)/(\d+)</title>", dom.stdout)
        shot = shots / f"{page.parent.name}-{page.stem}.png"
        subprocess.run([chromium, *OFFLINE, "--window-size=1280,2000",
                        f"--screenshot={shot}", page.resolve().as_uri()],
                       capture_output=True, timeout=120)
    if found is None:
        return False, "the page did not load in chromium"
    loaded, total = map(int, found.groups())
    ink = float((np.asarray(Image.open(shot).convert("L")) < 250).mean())
    ok = loaded == total and total > 0 and ink > 0.01
    return ok, f"{loaded}/{total} images loaded, {ink:.1%} of the screenshot not white ({shot})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pages", nargs="+", type=Path)
    p.add_argument("--screenshot-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = p.parse_args()
    args.screenshot_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for page in args.pages:
        ok, what = check(page, args.screenshot_dir)
        print(f"{'ok  ' if ok else 'FAIL'} {page}: {what}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
