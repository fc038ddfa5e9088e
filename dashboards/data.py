"""What the dashboards read: the lake (DuckDB views) and the bucket's statuses."""
from __future__ import annotations

import pandas as pd

from lake.bucket import Bucket
from lake.config import StorageSettings
from lake.views import available_views, connect


def storage() -> StorageSettings:
    return StorageSettings.from_env()


def query(sql: str, params: dict | None = None) -> pd.DataFrame:
    con = connect(storage().lake)
    try:
        return con.execute(sql, params or {}).fetch_df()
    finally:
        con.close()


def has(view: str) -> bool:
    con = connect(storage().lake)
    try:
        return view in available_views(con)
    finally:
        con.close()


def bucket() -> Bucket:
    return Bucket(storage().bucket)
