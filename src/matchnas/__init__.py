"""matchnas: train one semi-supervised supernet from a pre-trained CNN, deploy a subnet per budget."""

from matchnas.convert import BACKBONES, from_pretrained
from matchnas.errors import MatchnasError
from matchnas.nn import StaticNet, Supernet
from matchnas.space import SearchSpace, StageConfig, SubnetConfig, load_space

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "MatchnasError",
    "SearchSpace",
    "StageConfig",
    "StaticNet",
    "SubnetConfig",
    "Supernet",
    "from_pretrained",
    "load_space",
]
