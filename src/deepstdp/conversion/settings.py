"""The conversion's settings: one typed dataclass, every default documented once.

`ConversionSettings` is what `convert` and `convert_run` take, what the command line's `convert`
options fill, and what spiking.pt records (as a plain dict, which is what deepstdp 0.4 and 0.5
wrote too, so their files load). It imports nothing heavy, so the command line reads it at
start. docs/conversion.md explains each choice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from deepstdp.util import DeepSTDPError, SettingError

RESETS = ("subtract", "zero")
"""How an IF neuron's membrane resets after a spike."""
READOUTS = ("count", "membrane")
"""How the feature layer is read out (SpikingNet.features); the first is the default."""
NIR_FORMATS = ("exact", "portable")
"""The NIR export's formats (docs/nir.md); the first is the default."""


@dataclass(frozen=True)
class ConversionSettings:
    """How the CNN becomes integrate-and-fire neurons (conversion.converter.convert)."""

    percentile: float = 99.9
    """A ReLU layer's threshold: this percentile of its positive activations on the
    calibration images (threshold balancing; the maximum lets a few outliers slow every other
    neuron). A QCFS layer keeps its trained threshold."""
    reset: str = "subtract"
    """'subtract': a spike takes the threshold off the membrane, keeping the charge above it;
    'zero': the classic reset, which loses that charge."""
    v_init: float = 0.5
    """Starting membrane potential as a fraction of the threshold; half (QCFS's shift) turns
    spike counting's floor into rounding."""
    pool_neurons: bool = True
    """IF neurons of threshold one after each average pooling of spikes, so that the next
    layer's fan-out is paid once per pooled cell rather than once per input neuron."""
    calib_images: int = 512
    """Training images the thresholds are measured on, spread evenly over the set; a converted
    network records how many it had."""

    def validate(self) -> ConversionSettings:
        """Check every setting's range; raises SettingError naming the first bad one."""
        if not (isinstance(self.percentile, int | float) and 0 < self.percentile <= 100):
            raise SettingError("percentile", f"must be in (0, 100], got {self.percentile}")
        if self.reset not in RESETS:
            raise SettingError("reset", f"must be one of {', '.join(RESETS)}, got {self.reset!r}")
        if not (isinstance(self.v_init, int | float) and math.isfinite(self.v_init)
                and 0 <= self.v_init < 1):
            raise SettingError("v_init", f"must be in [0, 1), got {self.v_init}")
        if isinstance(self.calib_images, bool) or not isinstance(self.calib_images, int) \
                or self.calib_images < 1:
            raise SettingError("calib_images", f"must be at least 1, got {self.calib_images}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConversionSettings:
        """The `settings` of a spiking.pt (0.4 and 0.5 files wrote the same five keys)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DeepSTDPError(f"a converted network's settings have no {', '.join(unknown)}")
        return cls(**d)
