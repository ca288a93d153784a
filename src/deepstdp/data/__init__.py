"""Stage 1, data: the image sets and how the network sees them.

- `cache`: `ImageSet` (a set's images and labels in memory), the splits and the decode cache
  the decoding loaders share.
- `standard`: CIFAR-10/100, STL-10, MNIST and Fashion-MNIST from their official files.
- `events`: event-camera sets (N-MNIST) through tonic, binned into frames.
- `datasets`: Tiny ImageNet, digits, any image folder, `load_dataset` (every set by name), the
  one download, `ImageTensor` and `Data` (a set's train and val images, by plain arguments:
  `TrainConfig.data_options()` names them).
- `augment`: batched augmentation on tensors.
"""
