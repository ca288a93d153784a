"""The trained CNN as spiking neurons: rate-based ANN-to-SNN conversion and what is done with
the converted network.

- `settings`: `ConversionSettings`, the conversion's settings with their defaults; light (no
  torch), so the command line reads it at start.
- `network`: `SpikingNet`, the integrate-and-fire network: its ops, simulation and costs.
- `converter`: `convert` (a CNN to a `SpikingNet`), `convert_run` and `load_or_convert` (a run's
  spiking.pt, converted now if missing or stale).
- `evaluation`: `evaluate_run`, the CNN pipeline against its spiking version, image by image.
- `nir_export`: the network (and an STDP clusterer's layer) as a NIR graph.
- `nir_import`: such files read back into torch (nirtorch, Sinabs), to check them.

Nothing is imported here, so that importing `deepstdp.conversion.settings` stays light.
"""
