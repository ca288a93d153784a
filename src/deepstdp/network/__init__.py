"""Stage 2, the network: `activations` (ReLU and QCFS), `models` (`ConvNet`), `features` (feature
extraction and the embedding that is clustered), `firing` (the converted network's estimated
firing as a training penalty)."""
