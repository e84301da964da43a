"""`ijepa_deploy.ray`: the import path the README documented for the Ray Data collections path,
kept working; the code is `ijepa_deploy.collection.ray_executor`."""

from ijepa_deploy.collection.ray_executor import EmbedActor, connect, embed_collection_on_ray, embed_dataset

__all__ = ["EmbedActor", "connect", "embed_collection_on_ray", "embed_dataset"]
