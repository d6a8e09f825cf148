"""The passage corpus: the Python 3.11 documentation, cut into passages with stable ids.

Source: Debian's ``python3.11-doc`` package (PSF licence), fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into the cache. We parse the Sphinx-rendered HTML it ships
rather than the reST sources: roles and cross-references are already resolved to text, and
every object entry and section carries the anchor id that docs.python.org uses, so a passage
id such as ``library/shutil.html#shutil.copyfile`` is both stable and citable.

A passage is either one API object entry (a function, method, class, attribute, data or
exception description; nested entries become passages of their own) or the prose of one
section (its own paragraphs, lists and code, without sub-sections). Long section prose is cut
at block boundaries into chunks of at most ``MAX_WORDS`` words (``#anchor~2``, ``~3``, ...).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import cache_dir

DEB_PACKAGE = "python3.11-doc"
# The version the shipped data was built from. ``fetch`` asks apt for exactly this version
# first and falls back to the newest with a warning (the build then reports changed passages).
DEB_VERSION = "3.11.2-6+deb12u8"
DOCS_URL = "https://docs.python.org/3.11/"
HTML_SUBDIR = Path("usr/share/doc/python3.11/html")

# Parts of the documentation that hold answerable how-to and reference text.
KINDS = {"faq": "faq", "howto": "howto", "library": "library", "tutorial": "tutorial", "reference": "reference"}
MIN_WORDS = 20
MAX_WORDS = 220

OBJECT_CLASSES = {"function", "method", "class", "attribute", "data", "exception", "decorator",
                  "classmethod", "staticmethod", "property", "coroutinefunction", "coroutinemethod",
                  "abstractmethod", "decoratormethod", "type", "envvar", "cmdoption", "describe"}


@dataclass(frozen=True)
class Passage:
    passage_id: str
    kind: str
    doc: str
    title: str
    breadcrumb: str
    text: str
    url: str

    @property
    def n_words(self) -> int:
        return len(self.text.split())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict:
        d = asdict(self)
        d["n_words"] = self.n_words
        d["sha256"] = self.sha256
        return d


def corpus_root() -> Path:
    return cache_dir() / "corpus" / DEB_PACKAGE


def html_dir(root: Path | None = None) -> Path:
    return (root or corpus_root()) / HTML_SUBDIR


def fetch(deb: str | Path | None = None, *, force: bool = False) -> Path:
    """Make sure the documentation is unpacked in the cache; return its HTML directory.

    ``deb`` may name a local ``.deb`` file (for machines without apt). Otherwise
    ``apt-get download`` fetches the pinned version, or the newest one if that is gone.
    """
    root = corpus_root()
    target = html_dir(root)
    if target.is_dir() and not force:
        return target
    if shutil.which("dpkg") is None:
        raise ConsistbenchError("dpkg is needed to unpack the documentation package (Debian/Ubuntu only); "
                                "pass --html-dir to use an unpacked copy instead")
    with tempfile.TemporaryDirectory() as tmp:
        if deb is None:
            deb = _apt_download(Path(tmp))
        staging = Path(tmp) / "x"
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
        if not (staging / HTML_SUBDIR).is_dir():
            raise ConsistbenchError(f"{deb}: does not contain {HTML_SUBDIR}")
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()
        (staging / "VERSION").write_text(version + "\n")
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(root))
    return target


def installed_version(root: Path | None = None) -> str | None:
    path = (root or corpus_root()) / "VERSION"
    return path.read_text().strip() if path.is_file() else None


def _apt_download(dest: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise ConsistbenchError("apt-get not found: download python3.11-doc's .deb by hand and pass --deb")
    for spec in (f"{DEB_PACKAGE}={DEB_VERSION}", DEB_PACKAGE):
        proc = subprocess.run(["apt-get", "download", spec], cwd=dest, capture_output=True, text=True)
        debs = sorted(dest.glob(f"{DEB_PACKAGE}_*.deb"))
        if proc.returncode == 0 and debs:
            if spec == DEB_PACKAGE:
                print(f"warning: {DEB_PACKAGE} {DEB_VERSION} is not available; using {debs[0].name}")
            return debs[0]
    raise ConsistbenchError(f"apt-get download {DEB_PACKAGE} failed: {proc.stderr.strip()[-300:]}")


# ---------------------------------------------------------------------------------------------
# HTML -> passages

_WS = re.compile(r"[ \t\r\f\v]+")


def _inline_text(node) -> str:
    """Text of an inline element with whitespace collapsed and permalink marks removed."""
    for a in node.select("a.headerlink"):
        a.decompose()
    return _WS.sub(" ", node.get_text().replace("\n", " ")).strip()


def _block_lines(node) -> list[str]:
    """Render one block-level element to lines of plain text."""
    from bs4 import NavigableString, Tag

    if isinstance(node, NavigableString):
        text = _WS.sub(" ", str(node)).strip()
        return [text] if text else []
    if not isinstance(node, Tag):
        return []
    name = node.name
    classes = set(node.get("class", []))
    if name in {"script", "style", "nav"} or classes & {"headerlink", "contents", "toctree-wrapper", "topic"}:
        return []
    if name == "pre":
        code = node.get_text().rstrip("\n")
        return [line.rstrip() for line in code.splitlines()] if code.strip() else []
    if name in {"p", "dt", "caption"} or (name == "span" and "versionmodified" in classes):
        text = _inline_text(node)
        return [text] if text else []
    if name in {"ul", "ol"}:
        out = []
        for i, li in enumerate(node.find_all("li", recursive=False), start=1):
            inner = _children_lines(li)
            if inner:
                bullet = f"{i}. " if name == "ol" else "- "
                out.append(bullet + inner[0])
                out.extend("  " + line for line in inner[1:])
        return out
    if name == "table":
        out = []
        for tr in node.find_all("tr"):
            cells = [_inline_text(c) for c in tr.find_all(["td", "th"])]
            if any(cells):
                out.append(" | ".join(cells))
        return out
    if name == "div" and "admonition" in classes:
        lines = _children_lines(node)
        return lines
    return _children_lines(node)


def _children_lines(node) -> list[str]:
    from bs4 import Tag

    out: list[str] = []
    for child in node.children:
        if isinstance(child, Tag) and child.name == "dl" and _is_object_dl(child):
            continue  # object entries become passages of their own
        if isinstance(child, Tag) and child.name == "section":
            continue
        if isinstance(child, Tag) and child.name in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            continue
        out.extend(_block_lines(child))
    return out


def _is_object_dl(node) -> bool:
    classes = set(node.get("class", []))
    return bool(classes & {"py", "std", "c", "cpp"}) and bool(classes & OBJECT_CLASSES)


def _chunks(lines: list[str], max_words: int) -> list[list[str]]:
    """Group lines into chunks of at most ``max_words`` words, breaking only between lines."""
    chunks: list[list[str]] = []
    current: list[str] = []
    count = 0
    for line in lines:
        n = len(line.split())
        if current and count + n > max_words:
            chunks.append(current)
            current, count = [], 0
        current.append(line)
        count += n
    if current:
        chunks.append(current)
    return chunks


def parse_page(html: str, doc: str, kind: str) -> Iterator[Passage]:
    """Yield the passages of one rendered documentation page."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    body = soup.select_one('div[role="main"]') or soup.select_one("div.body")
    if body is None:
        return
    seen: set[str] = set()

    def unique(pid: str) -> str:
        base, n = pid, 2
        while pid in seen:
            pid, n = f"{base}-{n}", n + 1
        seen.add(pid)
        return pid

    def heading_of(section) -> str:
        h = section.find(["h1", "h2", "h3", "h4", "h5", "h6"], recursive=False)
        return _inline_text(h) if h else ""

    def crumbs(node) -> str:
        titles = [heading_of(s) for s in reversed(node.find_parents("section"))]
        return " > ".join(t for t in titles if t)

    for section in body.find_all("section"):
        anchor = section.get("id")
        if not anchor:
            continue
        title = heading_of(section)
        lines = _children_lines(section)
        chunks = _chunks(lines, MAX_WORDS)
        for i, chunk in enumerate(chunks, start=1):
            text = "\n".join(chunk).strip()
            if len(text.split()) < MIN_WORDS:
                continue
            suffix = "" if i == 1 else f"~{i}"
            pid = unique(f"{doc}#{anchor}{suffix}")
            yield Passage(pid, kind, doc, title, crumbs(section) or title, f"{title}\n{text}" if title else text,
                          f"{DOCS_URL}{doc}#{anchor}")

    for dl in body.find_all("dl"):
        if not _is_object_dl(dl):
            continue
        dt = dl.find("dt", recursive=False)
        dd = dl.find("dd", recursive=False)
        if dt is None or dd is None or not dt.get("id"):
            continue
        anchor = dt["id"]
        signature = _inline_text(dt)
        lines = _children_lines(dd)
        chunk = _chunks(lines, MAX_WORDS)[0] if lines else []
        text = "\n".join([signature, *chunk]).strip()
        if len(text.split()) < MIN_WORDS:
            continue
        pid = unique(f"{doc}#{anchor}")
        section = dl.find_parent("section")
        yield Passage(pid, kind, doc, anchor, crumbs(dl) if section else anchor, text, f"{DOCS_URL}{doc}#{anchor}")


def iter_passages(root: Path | None = None, kinds: tuple[str, ...] = tuple(KINDS)) -> Iterator[Passage]:
    """Yield every passage of the unpacked documentation, in a stable (sorted) order."""
    base = root or html_dir()
    if not base.is_dir():
        raise ConsistbenchError(f"{base}: documentation not found; run `consistbench data fetch` first")
    for kind in kinds:
        for page in sorted((base / KINDS[kind]).rglob("*.html")):
            doc = page.relative_to(base).as_posix()
            if page.name in {"index.html"} and kind != "tutorial":
                continue
            yield from parse_page(page.read_text(encoding="utf-8"), doc, kind)
