"""The conversion's settings: one typed dataclass, every default documented once.

`ConversionSettings` is what `convert` and `convert_run` take, what the command line's `convert`
options fill, and what spiking.pt records (as a plain dict, which is what deepstdp 0.4 and 0.5
wrote too, so their files load). `SpikingCheck` is how a comparison converts and simulates each
of its runs. It imports nothing heavy, so the command line reads it at start.
docs/conversion.md explains each choice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from deepstdp.util import DeepSTDPError, SettingError

RESETS = ("subtract", "zero")
"""How an IF neuron's membrane resets after a spike."""
READOUTS = ("membrane", "count")
"""How the feature layer is read out (SpikingNet.features); the first is the default. The
membrane (the input the layer integrated) needs fewer steps than spike counts for the same
agreement, with ReLU and QCFS networks alike (docs/conversion.md); it is 0.6's default."""
NIR_FORMATS = ("exact", "portable", "sinabs")
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
    calibrate_steps: int = 0
    """Bias calibration (Li et al. 2021, converter.calibrate) for this many steps, on the
    calibration images; 0: none."""
    calibrate_readout: str = READOUTS[0]
    """The feature layer's readout the calibration matches."""

    def validate(self) -> ConversionSettings:
        """Check every setting's range; raises SettingError naming the first bad one."""
        if not (isinstance(self.percentile, int | float) and 0 < self.percentile <= 100):
            raise SettingError("percentile", f"must be in (0, 100], got {self.percentile}")
        if self.reset not in RESETS:
            raise SettingError("reset", f"must be one of {', '.join(RESETS)}, got {self.reset!r}")
        if not (isinstance(self.v_init, int | float) and math.isfinite(self.v_init)
                and 0 <= self.v_init < 1):
            raise SettingError("v_init", f"must be in [0, 1), got {self.v_init}")
        for name, low in (("calib_images", 1), ("calibrate_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingError(name, f"must be an integer >= {low}, got {value!r}")
        if self.calibrate_readout not in READOUTS:
            raise SettingError("calibrate_readout", f"must be one of {', '.join(READOUTS)}, "
                                                    f"got {self.calibrate_readout!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConversionSettings:
        """The `settings` of a spiking.pt: 0.4 and 0.5 files hold the first five fields, and a
        network calibrated before 0.6 the calibration's too."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DeepSTDPError(f"a converted network's settings have no {', '.join(unknown)}")
        return cls(**d)


SPIKING_TIMESTEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
"""The steps at which each run's converted network is simulated for the summary."""
AGREEMENT = 0.95
"""The agreement with its CNN's clusters at which a run's spiking network counts as converted:
the summary's T is the smallest that reaches it."""


@dataclass(frozen=True)
class SpikingCheck:
    """How each run of a comparison is converted and simulated for the summary."""

    timesteps: tuple[int, ...] = SPIKING_TIMESTEPS
    limit: int | None = 300
    """Images per split, spread evenly (None: all)."""
    readout: str = "membrane"
    """The feature layer's readout (READOUTS)."""
    threads: int | None = None
