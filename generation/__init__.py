"""generation: face images from GANs (the offline DCGAN default, StyleGAN2 from stylegan2-ada pickles, safely)."""

from generation.ada_pickle import AdaUnpickler, PersistentRecord, load_ada_pickle, stylegan2_from_pickle
from generation.dcgan import DCGANConfig, DCGANGenerator
from generation.errors import NetworkError, OutputFolderError
from generation.networks import Network, describe, load_network
from generation.sampling import (
    MANIFEST,
    GenerateResult,
    generate,
    latents,
    parse_seeds,
    read_manifest,
    render,
    sample_id,
)
from generation.stylegan2 import NOISE_MODES, StyleGAN2Config, StyleGAN2Generator, to_uint8
from generation.stylegan2_reference import reference_generate
from generation.zoo import DEFAULT_NETWORK, ZOO, ZooEntry, default_cache_dir, fetch, sha256_file

__all__ = [
    "AdaUnpickler", "PersistentRecord", "load_ada_pickle", "stylegan2_from_pickle", "DCGANConfig", "DCGANGenerator",
    "NetworkError", "OutputFolderError", "Network", "describe", "load_network", "MANIFEST", "GenerateResult",
    "generate", "latents", "parse_seeds", "read_manifest", "render", "sample_id", "NOISE_MODES", "StyleGAN2Config",
    "StyleGAN2Generator", "to_uint8", "reference_generate", "DEFAULT_NETWORK", "ZOO", "ZooEntry",
    "default_cache_dir", "fetch", "sha256_file",
]
