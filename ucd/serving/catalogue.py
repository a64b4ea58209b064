"""The served model's item catalogue: internal ids <-> source ids, titles and texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ucd import schema
from ucd.errors import DataError
from ucd.serving.schemas import ItemInfo


class Catalogue:
    """Item ids <-> source ids and titles, from the model folder's ``items.parquet``."""

    def __init__(self, path: str | Path, n_items: int) -> None:
        table = schema.read_table(path, "items", columns=["item_id", "source_id", "title", "text"])
        ids = table.column("item_id").to_numpy().astype(np.int64)
        if len(ids) != n_items or (len(ids) and (ids.min() != 1 or ids.max() != n_items)):
            raise DataError(
                f"{path}: catalogue holds ids {ids.min()}..{ids.max()}, model expects 1..{n_items}"
            )
        order = np.argsort(ids)
        src, titles = table.column("source_id").to_pylist(), table.column("title").to_pylist()
        # Index 0 is padding; lists are indexed by item id.
        self.source_ids: list[str] = [""] + [src[i] for i in order]
        self.titles: list[str] = [""] + [titles[i] for i in order]
        self._text = table.column("text")
        self._row_of = np.zeros(n_items + 1, dtype=np.int64)
        self._row_of[ids] = np.arange(len(ids))
        self.by_source = {s: i for i, s in enumerate(self.source_ids) if i}
        self.n_items = n_items

    def item(self, item_id: int) -> ItemInfo:
        return ItemInfo(
            item_id=item_id,
            source_id=self.source_ids[item_id],
            title=self.titles[item_id],
            text=self._text[int(self._row_of[item_id])].as_py(),
        )
