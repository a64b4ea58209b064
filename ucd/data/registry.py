"""Dataset configs: named public datasets, and how to read any of them into :class:`RawData`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ucd.config import Strict, default_data_dir
from ucd.data.raw import RawData
from ucd.data.synthetic import SyntheticConfig
from ucd.data.tabular import TabularConfig
from ucd.errors import ConfigError, DataError

Domain = Literal["movies", "products", "generic"]


class DatasetConfig(Strict):
    name: str
    format: Literal["ml-100k", "ml-dat", "ml-csv", "amazon", "tabular", "synthetic"]
    # Folder of the raw files; relative paths are under the data dir ($UCD_DATA_DIR).
    path: str | None = None
    domain: Domain = "generic"
    amazon_release: Literal["2014", "2018", "2023"] = "2014"
    category: str | None = None  # Amazon category as in the file names, e.g. "Beauty"
    tabular: TabularConfig | None = None
    synthetic: SyntheticConfig | None = None
    # Where the public files come from, shown when they are missing.
    source_url: str | None = None


_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

NAMED: dict[str, dict] = {
    "ml-100k": {"format": "ml-100k", "path": "ml-100k", "domain": "movies", "source_url": _GROUPLENS + "ml-100k.zip"},
    "ml-1m": {"format": "ml-dat", "path": "ml-1m", "domain": "movies", "source_url": _GROUPLENS + "ml-1m.zip"},
    "ml-10m": {"format": "ml-dat", "path": "ml-10M100K", "domain": "movies", "source_url": _GROUPLENS + "ml-10m.zip"},
    "ml-20m": {"format": "ml-csv", "path": "ml-20m", "domain": "movies", "source_url": _GROUPLENS + "ml-20m.zip"},
    "ml-25m": {"format": "ml-csv", "path": "ml-25m", "domain": "movies", "source_url": _GROUPLENS + "ml-25m.zip"},
    "ml-32m": {"format": "ml-csv", "path": "ml-32m", "domain": "movies", "source_url": _GROUPLENS + "ml-32m.zip"},
    # Amazon Beauty 5-core (2014) in a simple TSV layout (interactions.tsv, items.tsv): an order
    # column instead of timestamps, titles only.
    "beauty": {
        "format": "tabular",
        "path": "beauty",
        "domain": "products",
        "tabular": {
            "interactions": "interactions.tsv",
            "user": "user_id",
            "item": "item_asin",
            "timestamp": "seq_pos",
            "has_timestamps": False,
            "items": "items.tsv",
            "item_key": "item_asin",
            "title": "title",
        },
    },
    "synthetic": {"format": "synthetic", "domain": "generic", "synthetic": {}},
}  # fmt: skip

_AMAZON_URL = {
    "2014": "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html",
    "2018": "https://nijianmo.github.io/amazon/index.html",
    "2023": "https://amazon-reviews-2023.github.io/",
}


def resolve_dataset(name: str) -> DatasetConfig:
    """A named dataset, or ``amazon<release>/<Category>`` such as ``amazon2018/Beauty``."""
    if name in NAMED:
        return DatasetConfig(name=name, **NAMED[name])
    if name.startswith("amazon") and "/" in name:
        release, category = name.removeprefix("amazon").split("/", 1)
        if release not in _AMAZON_URL:
            raise ConfigError(
                f"unknown Amazon release in '{name}' (use amazon2014|amazon2018|amazon2023/<Category>)"
            )
        return DatasetConfig(
            name=name,
            format="amazon",
            path=f"amazon-{release}",
            domain="products",
            amazon_release=release,
            category=category,
            source_url=_AMAZON_URL[release],
        )
    known = ", ".join([*NAMED, "amazon2014/<Category>", "amazon2018/<Category>", "amazon2023/<Category>"])
    raise ConfigError(f"unknown dataset '{name}'; known: {known}, or a YAML dataset config")


def dataset_folder(cfg: DatasetConfig, data_dir: Path | None = None) -> Path:
    path = Path(cfg.path or cfg.name)
    if path.is_absolute():
        return path
    base = data_dir or default_data_dir()
    if base is None:
        raise DataError(
            f"dataset '{cfg.name}': no data folder; set UCD_DATA_DIR or pass --data-dir "
            f"(expected the raw files under <data dir>/{path})"
        )
    return base / path


def read_raw(cfg: DatasetConfig, data_dir: Path | None = None) -> RawData:
    if cfg.format == "synthetic":
        from ucd.data.synthetic import generate

        return generate(cfg.synthetic or SyntheticConfig())
    folder = dataset_folder(cfg, data_dir)
    if not folder.is_dir():
        hint = f"; download it from {cfg.source_url} and unpack it there" if cfg.source_url else ""
        raise DataError(f"dataset '{cfg.name}': folder {folder} not found{hint}")
    try:
        if cfg.format == "ml-100k":
            from ucd.data.movielens import read_ml100k

            return read_ml100k(folder)
        if cfg.format == "ml-dat":
            from ucd.data.movielens import read_ml_dat

            return read_ml_dat(folder)
        if cfg.format == "ml-csv":
            from ucd.data.movielens import read_ml_csv

            return read_ml_csv(folder)
        if cfg.format == "amazon":
            from ucd.data.amazon import read_amazon

            if not cfg.category:
                raise ConfigError(f"dataset '{cfg.name}': amazon format needs 'category'")
            return read_amazon(folder, cfg.category, cfg.amazon_release)
        from ucd.data.tabular import read_tabular

        if cfg.tabular is None:
            raise ConfigError(f"dataset '{cfg.name}': tabular format needs a 'tabular' mapping")
        return read_tabular(folder, cfg.tabular)
    except DataError as e:
        if cfg.source_url and "not found" in str(e):
            raise DataError(f"{e}; the files come from {cfg.source_url}") from e
        raise
