"""torchrec_app: sharded DLRM / DCNv2 training on TorchRec, launched with torchx."""

__version__ = "0.1.0"
