"""Stage 1, data: the image sets and how the network sees them.

- `datasets`: the data sets, the decode cache, `ImageTensor` and `Data` (a set's train and val
  images, by plain arguments: `TrainConfig.data_options()` names them).
- `augment`: batched augmentation on tensors.
"""
