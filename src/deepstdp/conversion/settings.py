"""The conversion's settings: one typed dataclass, every default documented once.

`ConversionSettings` is what `convert` and `convert_run` take, what the command line's `convert`
options fill, and what spiking.pt records (as a plain dict, which is what deepstdp 0.4 and 0.5
wrote too, so their files load). `SpikingCheck` is how a comparison converts and simulates each
of its runs. It imports nothing heavy, so the command line reads it at start.
docs/conversion.md explains each choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from deepstdp.config import RELU_PERCENTILE
from deepstdp.runtime.rules import Rule, check_fields
from deepstdp.runtime.util import DeepSTDPError, SettingError

RESETS = ("subtract", "zero")
"""How an IF neuron's membrane resets after a spike."""
READOUTS = ("membrane", "count")
"""How the feature layer is read out (SpikingNet.features); the first is the default. The
membrane (the input the layer integrated) needs fewer steps than spike counts for the same
agreement, with ReLU and QCFS networks alike (docs/conversion.md); it is 0.6's default."""
CODINGS = ("binary", "layered", "synchronous")
"""How the converted network's spikes code activations and travel through its layers
(SpikingNet.simulate); the first is the default. 'binary': layer by layer (each layer
integrates its input's whole window of T steps, then fires), a spike at step j of the window
weighing 2^(T-1-j), so T steps express 2^T - 1 levels; 'layered': layer by layer, every spike
weighing the same (T levels); 'synchronous': every layer steps at once and a spike reaches the
next layer in the same step (T levels, the rate code of deepstdp 0.7 and before)."""
MAX_BINARY_STEPS = 16
"""The binary code's longest window: 2^16 - 1 levels are already finer than any rate code
simulated here, and float32 resolves no more."""
MAX_RATE_STEPS = 4096
"""The rate codes' longest simulation: 4,096 levels, beyond every T measured to matter
(docs/conversion.md: agreement saturates by T = 256); a longer one only runs for hours."""
MAX_CALIB_IMAGES = 4096
"""The most calibration images: the thresholds are percentiles of activations that the
default 512 already pin down, and the positive activations of every image (up to a million
values per layer and batch of 64) are kept until the percentiles are taken, a few GB at this
bound."""
EVALUATE_TIMESTEPS = {"binary": (1, 2, 3, 4, 5, 6, 8), "layered": (2, 4, 8, 16, 32, 64),
                      "synchronous": (16, 32, 64, 128, 256)}
"""The steps `evaluate --spiking` simulates unless told, per coding: the curve up to where
agreement saturates (a rate code's 256). Not SUMMARY_TIMESTEPS, which searches finely for the
smallest T that converts and stops at 64 so that a comparison's check stays short."""
BINARY_POOLINGS = ("rounded", "exact")
"""How a pooling neuron codes the pooled mean in the binary code
(ConversionSettings.binary_pooling); the first is the default."""
NIR_FORMATS = ("exact", "portable", "sinabs")
"""The NIR export's formats (docs/nir.md); the first is the default."""


RULES: dict[str, Rule] = {
    "percentile": Rule(0, 100, low_open=True), "reset": Rule(choices=RESETS),
    "v_init": Rule(0, 1, high_open=True), "binary_pooling": Rule(choices=BINARY_POOLINGS),
    "calib_images": Rule(1, MAX_CALIB_IMAGES), "calibrate_steps": Rule(0, MAX_RATE_STEPS),
    "calibrate_readout": Rule(choices=READOUTS), "calibrate_coding": Rule(choices=CODINGS),
}
"""What each of ConversionSettings' fields allows beyond its type."""


@dataclass(frozen=True)
class ConversionSettings:
    """How the CNN becomes integrate-and-fire neurons (conversion.converter.convert)."""

    percentile: float = RELU_PERCENTILE
    """A ReLU layer's threshold: this percentile of its positive activations on the
    calibration images (threshold balancing; the maximum lets a few outliers slow every other
    neuron). A QCFS layer keeps its trained threshold. In the binary code (docs/conversion.md)
    99.99 costs a tenth fewer SOPs per step but needs a step more on the Tiny ImageNet subset;
    a network without pooling neurons (`pool_first`) converts in 3 steps at either."""
    reset: str = "subtract"
    """'subtract': a spike takes the threshold off the membrane, keeping the charge above it;
    'zero': the classic reset, which loses that charge."""
    v_init: float = 0.5
    """Starting membrane potential as a fraction of the threshold; half (QCFS's shift) turns
    spike counting's floor into rounding."""
    pool_neurons: bool = True
    """IF neurons of threshold one after each average pooling of spikes, so that the next
    layer's fan-out is paid once per pooled cell rather than once per input neuron."""
    binary_pooling: str = BINARY_POOLINGS[0]
    """How a pooling neuron codes the pooled mean in the binary code (BINARY_POOLINGS):
    'rounded' to its layer's 2^T - 1 levels in the same T steps, ties split by a checkerboard
    of initial membranes; 'exact', in ceil(log2 k) more steps for k pooled cells (2 for 2x2),
    at a finer unit. At the smallest T with agreement >= 0.95 rounded costs fewer SOPs
    (digits: T = 4 at 0.77x against T = 3 at 0.93x; docs/conversion.md) for the same
    latency, since exact pooling neurons take their 2 more steps."""
    calib_images: int = 512
    """Training images the thresholds are measured on, spread evenly over the set; a converted
    network records how many it had."""
    calibrate_steps: int = 0
    """Bias calibration (Li et al. 2021, converter.calibrate) for this many steps, on the
    calibration images; 0: none."""
    calibrate_readout: str = READOUTS[0]
    """The feature layer's readout the calibration matches."""
    calibrate_coding: str = "binary"
    """The coding (CODINGS) the calibration simulates, the one the network will be run with."""

    def validate(self) -> ConversionSettings:
        """Check every setting's type and range; raises SettingError naming the first bad
        one."""
        check_fields(self, RULES)
        if self.calibrate_coding == "binary" and self.calibrate_steps > MAX_BINARY_STEPS:
            raise SettingError("calibrate_steps", f"the binary code takes at most "
                                                  f"{MAX_BINARY_STEPS}, got "
                                                  f"{self.calibrate_steps}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConversionSettings:
        """The `settings` of a spiking.pt: 0.4 and 0.5 files hold the first five fields, 0.6
        and 0.7 files the calibration's too, made with synchronous coding, the only one
        then."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DeepSTDPError(f"a converted network's settings have no {', '.join(unknown)}")
        return cls(**{"calibrate_coding": "synchronous", **d})


SUMMARY_TIMESTEPS = {"binary": (1, 2, 3, 4, 5, 6, 8),
                     "layered": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
                     "synchronous": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)}
"""The steps at which each run's converted network is simulated for a comparison's summary,
per coding: fine steps up to 64, to find the smallest T reaching AGREEMENT."""
AGREEMENT = 0.95
"""The agreement with its CNN's clusters at which a run's spiking network counts as converted:
the summary's T is the smallest that reaches it."""


@dataclass(frozen=True)
class SpikingCheck:
    """How each run of a comparison is converted and simulated for the summary."""

    timesteps: tuple[int, ...] | None = None
    """None: SUMMARY_TIMESTEPS of the coding."""
    limit: int | None = 300
    """Images per split, spread evenly (None: all)."""
    readout: str = "membrane"
    """The feature layer's readout (READOUTS)."""
    coding: str = CODINGS[0]
    """How the spikes code and travel (CODINGS)."""
    threads: int | None = None

    @property
    def steps(self) -> tuple[int, ...]:
        return self.timesteps or SUMMARY_TIMESTEPS[self.coding]

    def validate(self) -> SpikingCheck:
        check_timesteps(self.steps, self.coding)
        return self


def check_timesteps(steps: tuple[int, ...] | list[int], coding: str) -> None:
    """Raises DeepSTDPError unless `coding` is known and can run every T of `steps`."""
    if coding not in CODINGS:
        raise DeepSTDPError(f"unknown coding {coding!r}: use {' or '.join(CODINGS)}")
    if coding == "binary" and max(steps) > MAX_BINARY_STEPS:
        raise DeepSTDPError(f"the binary code takes at most {MAX_BINARY_STEPS} steps per layer "
                            f"({2**MAX_BINARY_STEPS - 1} levels), got {max(steps)}")
    if max(steps) > MAX_RATE_STEPS:
        raise DeepSTDPError(f"the {coding} code is simulated for at most {MAX_RATE_STEPS} steps, "
                            f"got {max(steps)}")


def parse_timesteps(text: str) -> list[int]:
    """Timesteps written as a comma-separated list (\"16,64\"), sorted without repeats."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens or not all(t.isdigit() and int(t) > 0 for t in tokens):
        raise DeepSTDPError(f"bad timesteps {text!r}: use positive integers, e.g. 16,64")
    return sorted({int(t) for t in tokens})
