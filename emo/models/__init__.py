"""EMO's networks, one per file; EMOModel (emo_model.py) owns them all."""
from .bank import ReferenceBank
from .emo_model import EMOModel

__all__ = ["EMOModel", "ReferenceBank"]
