"""The served models: their cards (the contract with `export`) and the catalog of them."""

from .card import ModelCard, json_schema
from .catalog import Catalog, CatalogError, ServedModel

__all__ = ["Catalog", "CatalogError", "ModelCard", "ServedModel", "json_schema"]
