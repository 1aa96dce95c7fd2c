"""Data: the Parquet catalog, dataset sources that write it, episode sampling and Ray Data streaming."""
