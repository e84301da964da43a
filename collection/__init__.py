"""Collections: sharded, resumable, self-verifying embedding output (local or on Ray Data), single
`.npy` outputs, and FAISS search over them. Above the runtime; the format itself is in
`ijepa_deploy.contract.shards`."""

from ijepa_deploy.contract.shard_reader import read_embeddings

from .index import build_index, query
from .npy_output import embed_to_file
from .embed import embed_collection

__all__ = ["build_index", "embed_collection", "embed_dataset", "embed_to_file", "query", "read_embeddings"]


def __getattr__(name: str):
    if name == "embed_dataset":  # Ray is optional: imported only when asked for
        from .ray_executor import embed_dataset

        return embed_dataset
    raise AttributeError(name)
