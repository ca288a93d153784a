"""Stage 2, the network: `activations` (ReLU and QCFS), `models` (`ConvNet`), `features` (feature
extraction and the embedding that is clustered), `synapses` (the cost model of a spike, shared
by the firing penalty and the converted network's simulator), `firing` (the converted network's
estimated firing as a training penalty)."""
