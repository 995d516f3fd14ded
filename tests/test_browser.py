"""The report in a real browser (the system's headless Chromium, nothing downloaded): every
image loads, nothing overflows a 1280 px window, and every contents link lands on its heading.

A copy of report.html gets a small script that measures the page once everything has loaded
and writes the findings into the DOM, which `chromium --headless --dump-dom` prints. The test
is skipped, saying why, only where no Chromium is installed (`.ci/run` installs Debian's).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from fake_results import write_fake_results

from lowdiff import report

ROOT = Path(__file__).resolve().parents[1]
BROWSER = next(
    (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
    None,
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on this machine (apt-get install -y chromium)"
)
WIDTH = 1280

CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                  width: i.getBoundingClientRect().width}));
  const links = [...document.querySelectorAll('nav.contents a[href^="#"]')].map(a => {
    const target = document.getElementById(a.getAttribute("href").slice(1));
    if (!target) return {href: a.getAttribute("href"), lands: false};
    target.scrollIntoView();
    const top = target.getBoundingClientRect().top;
    const bottom = window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2;
    return {href: a.getAttribute("href"), lands: Math.abs(top) < 2 || (top >= 0 && bottom)};
  });
  const found = {innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
                 images, links};
  const out = document.createElement("pre");
  out.id = "lowdiff-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def measure(page: Path, tmp_path: Path) -> dict:
    """Open `page` at 1280 px in headless Chromium; the findings of the CHECK script."""
    probe = tmp_path / f"probe_{page.parent.name}.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--window-size={WIDTH},900", "--virtual-time-budget=10000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="lowdiff-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the page did not finish loading: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.parametrize("series", ["dual_scale", "dual_expert"])
def test_report_loads_fits_1280px_and_its_contents_links_land(series, tmp_path):
    raw = tomllib.loads((ROOT / "experiments" / f"{series}.toml").read_text())
    raw["experiment"] |= {"num_points": 2000, "seeds": [0, 1, 2]}
    root = tmp_path / series
    write_fake_results(root, raw)
    report.write_report(root)
    found = measure(root / "report.html", tmp_path)
    assert found["innerWidth"] == WIDTH
    assert found["scrollWidth"] <= WIDTH, "the page overflows horizontally"
    assert len(found["images"]) >= 5
    assert [i["alt"] for i in found["images"] if not i["ok"]] == []
    assert all(0 < i["width"] <= WIDTH for i in found["images"])
    assert len(found["links"]) >= 5
    assert [link["href"] for link in found["links"] if not link["lands"]] == []


def test_the_check_sees_overflow_broken_images_and_dead_links(tmp_path):
    page = tmp_path / "bad" / "report.html"
    page.parent.mkdir()
    page.write_text(
        '<!DOCTYPE html><html><body><nav class="contents"><a href="#gone">gone</a></nav>'
        '<img alt="broken" src="data:image/png;base64,AAAA">'
        '<div style="width:2000px">wide</div></body></html>'
    )
    found = measure(page, tmp_path)
    assert found["scrollWidth"] > WIDTH
    assert [i["alt"] for i in found["images"] if not i["ok"]] == ["broken"]
    assert [link["lands"] for link in found["links"]] == [False]
