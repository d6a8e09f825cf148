"""WordNet 3.0 for NLTK, offline: Debian's ``wordnet-base`` and ``wordnet-sense-index``.

NLTK's downloader needs the internet; Debian's packages carry the same Princeton WordNet 3.0
database files (WordNet licence). We unpack them into ``<cache>/nltk_data/corpora/wordnet`` and
add the ``lexnames`` file NLTK's reader expects (Debian does not ship it; its content is the
fixed list of WordNet's 45 lexicographer files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import cache_dir

PACKAGES = ("wordnet-base", "wordnet-sense-index")
_LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
]
_SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def ensure_wordnet(debs: list[str | Path] | None = None) -> Path:
    """Install WordNet for NLTK in the cache if missing; set ``NLTK_DATA``; return the data dir."""
    data = nltk_data_dir()
    target = data / "corpora" / "wordnet"
    if not (target / "data.noun").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if debs is None:
                if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
                    raise ConsistbenchError("WordNet data missing and apt-get/dpkg unavailable: install "
                                            "NLTK's wordnet corpus into $NLTK_DATA yourself")
                proc = subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise ConsistbenchError(f"apt-get download {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-300:]}")
                debs = sorted(tmp.glob("*.deb"))
            for deb in debs:
                subprocess.run(["dpkg", "-x", str(deb), str(tmp / "x")], check=True)
            src = tmp / "x" / "usr" / "share" / "wordnet"
            if not (src / "data.noun").is_file():
                raise ConsistbenchError("the WordNet packages did not contain usr/share/wordnet/data.noun")
            staging = target.with_name("wordnet.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(src, staging)
            (staging / "lexnames").write_text(lexnames_text())
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    os.environ["NLTK_DATA"] = str(data)
    import nltk

    if str(data) not in nltk.data.path:
        nltk.data.path.insert(0, str(data))
    return data
