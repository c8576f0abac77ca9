"""flaxchat.train.data: where pretraining text comes from.

Sources (`iter_documents`, `resolve_files`): the generated default corpus,
ClimbMix shards, TinyStories, or local parquet/txt/jsonl files. Shards use
nanochat's parquet format and split rule; downloads retry and verify.
`DocumentStore` reads any document of a split by index.

The grain pipeline (`flaxchat.train.data.pipeline.PretrainBatches`) and the
packers (`flaxchat.train.data.packing`) are imported from their modules: grain
brings in jax, which the tokenizer-training path does not need.
"""

from flaxchat.train.data.documents import DocumentStore
from flaxchat.train.data.download import Retry, download_file, download_shards, download_tinystories
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import (
    default_corpus_dir,
    ensure_default_corpus,
    iter_row_groups,
    list_shards,
    shard_name,
    split_shards,
    write_shard,
)
from flaxchat.train.data.sources import iter_documents, read_documents, resolve_files
from flaxchat.train.data.stories import generate_stories, generate_story, iter_stories

__all__ = [
    "DataSourceError",
    "DocumentStore",
    "Retry",
    "default_corpus_dir",
    "download_file",
    "download_shards",
    "download_tinystories",
    "ensure_default_corpus",
    "generate_stories",
    "generate_story",
    "iter_documents",
    "iter_row_groups",
    "iter_stories",
    "list_shards",
    "read_documents",
    "resolve_files",
    "shard_name",
    "split_shards",
    "write_shard",
]
