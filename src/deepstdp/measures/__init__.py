"""Stage 3, measures: `metrics` (ACC/NMI/ARI, the majority-vote readout), `probes` (k-NN and the
linear probe), `report` (pictures and markdown tables)."""
